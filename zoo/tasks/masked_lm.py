"""Masked language modelling (BERT pretraining).

Batch: the causal-LM batch {"inputs": (B, T) int32, "weights": (B, T) float32 (0 = padding),
"targets"} of which only "inputs" and "weights" are read: the task corrupts the inputs itself.
As in the original BERT (`create_pretraining_data.py`), each row predicts
n = max(1, round(len * mask_rate)) of its real tokens (mask_rate 0.15), chosen uniformly
without replacement; a chosen token becomes the mask token with probability 0.8, a uniformly
random token with 0.1, and stays as it is with 0.1 (Devlin et al. 2019). The model runs its
MLM head at the chosen positions only (the original's `gather_indexes`):
`apply_fn(variables, corrupted_inputs, lengths, positions=positions, train=...)` -> logits
(B, P, V), with P = max(1, round(T * mask_rate)) slots per row (slots past n weigh 0). With
B*T = 4096 tokens and a vocabulary of 8192, that skips 85% of the output layer's work. Masking
uses the step's rng, so every epoch sees new masks; evaluation uses a fixed key.

Packed rows (`packing`): the batch also holds "segment_ids" and "position_ids" (B, T); the real
tokens are then those with a segment id > 0 in rows with any weight (a packed row's weights are
the causal targets', 0 on each document's last token; an eval padding row weighs 0 throughout),
and the model keeps attention within each document.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from zoo.tasks.base import ApplyFn, Batch, TaskBase, packing_inputs, setting
from zoo.tasks.losses import head_cross_entropy
from zoo.tasks.causal_lm import check_lm_batch, lm_metrics


def choose_positions(rng: jax.Array, valid: jax.Array,
                     mask_rate: float = 0.15) -> tuple[jax.Array, jax.Array]:
    """valid (B, T) bool -> (positions (B, P) int32, weights (B, P) float32).

    Row b predicts n_b = max(1, round(len_b * mask_rate)) of its valid positions (none for an
    empty row), uniformly without replacement; P = max(1, round(T * mask_rate)) >= n_b, and
    slots j >= n_b hold distinct unused positions with weight 0.
    """
    budget = max(1, round(valid.shape[1] * mask_rate))
    lengths = jnp.sum(valid, axis=1)
    count = jnp.where(lengths > 0, jnp.maximum(1, jnp.round(lengths * mask_rate)), 0)
    scores = jnp.where(valid, jax.random.uniform(rng, valid.shape), 2.0)  # padding sorts last
    _, positions = jax.lax.top_k(-scores, budget)  # the `budget` lowest scores
    weights = (jnp.arange(budget)[None, :] < count[:, None]).astype(jnp.float32)
    return positions.astype(jnp.int32), weights


def mask_tokens(rng: jax.Array, tokens: jax.Array, valid: jax.Array, *, vocab_size: int,
                mask_token_id: int,
                mask_rate: float = 0.15) -> tuple[jax.Array, jax.Array, jax.Array]:
    """BERT's 80/10/10 corruption. tokens (B, T), valid (B, T) bool -> (corrupted tokens
    (B, T), positions (B, P), weights (B, P)): the positions to predict (`choose_positions`)."""
    choose_rng, kind_rng, random_rng = jax.random.split(rng, 3)
    positions, weights = choose_positions(choose_rng, valid, mask_rate)
    original = jnp.take_along_axis(tokens, positions, axis=1)  # (B, P)
    kind = jax.random.uniform(kind_rng, positions.shape)
    random_tokens = jax.random.randint(random_rng, positions.shape, 0, vocab_size, tokens.dtype)
    new = jnp.where(kind < 0.8, mask_token_id, jnp.where(kind < 0.9, random_tokens, original))
    new = jnp.where(weights > 0, new, original)
    rows = jnp.arange(tokens.shape[0])[:, None]
    return tokens.at[rows, positions].set(new.astype(tokens.dtype)), positions, weights


@dataclasses.dataclass(frozen=True)
class MaskedLM(TaskBase):
    name: str = "masked_lm"
    mask_rate: float = setting(0.15)  # share of each row's tokens chosen for prediction
    vocab_size: int = 0  # from the model config, with its [MASK] id
    mask_token_id: int = 0

    def configure(self, model_config: Any) -> MaskedLM:
        return dataclasses.replace(self, vocab_size=model_config.vocab_size,
                                   mask_token_id=model_config.mask_token_id)

    def loss(self, apply_fn: ApplyFn, params: Any, batch: Batch, rng: jax.Array,
             train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        if not self.vocab_size:
            raise ValueError("MaskedLM needs the model config: use get_task('masked_lm', config).")
        mask_rng, dropout_rng = jax.random.split(rng)
        tokens = batch["inputs"]
        valid = batch["weights"] > 0
        if "segment_ids" in batch:
            valid = (batch["segment_ids"] > 0) & jnp.any(valid, axis=1, keepdims=True)
        corrupted, positions, weights = mask_tokens(
            mask_rng, tokens, valid, vocab_size=self.vocab_size,
            mask_token_id=self.mask_token_id, mask_rate=self.mask_rate)
        lengths = jnp.sum(valid, axis=1).astype(jnp.int32)
        head = apply_fn({"params": params}, corrupted, lengths, positions=positions,
                        output_head=True, train=train,
                        rngs={"dropout": dropout_rng} if train else None,
                        **packing_inputs(batch))  # features (B, P, D)
        targets = jnp.take_along_axis(tokens, positions, axis=1)  # (B, P)
        return head_cross_entropy(head, targets, weights)

    def example_inputs(self, model_config: Any, seq_len: int) -> tuple[jax.Array, ...]:
        return jnp.zeros((1, seq_len), jnp.int32), jnp.ones((1,), jnp.int32)

    def check_batch(self, batch: Batch, model_config: Any) -> None:
        check_lm_batch(batch, model_config.vocab_size, model_config.max_len)

    def finalize(self, sums: dict[str, Any]) -> dict[str, float]:
        return lm_metrics(sums)
