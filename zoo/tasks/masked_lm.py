"""Masked language modelling (BERT pretraining).

Batch: the causal-LM batch {"inputs": (B, T) int32, "weights": (B, T) float32 (0 = padding),
"targets"} of which only "inputs" and "weights" are read: the task corrupts the inputs itself.
Each real token is chosen with probability `mask_rate` (0.15); a chosen token becomes the mask
token with probability 0.8, a uniformly random token with 0.1, and stays as it is with 0.1
(Devlin et al. 2019). The model predicts the original token at the chosen positions only:
`apply_fn(variables, corrupted_inputs, lengths, train=...)` -> logits (B, T, V). Masking uses
the step's rng, so every epoch sees new masks; evaluation uses a fixed key.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from zoo.tasks.base import ApplyFn, Batch, token_cross_entropy
from zoo.tasks.causal_lm import check_lm_batch, lm_metrics


def mask_tokens(rng: jax.Array, tokens: jax.Array, valid: jax.Array, *, vocab_size: int,
                mask_token_id: int, mask_rate: float = 0.15) -> tuple[jax.Array, jax.Array]:
    """BERT's 80/10/10 corruption. tokens (B, T), valid (B, T) bool ->
    (corrupted tokens (B, T), chosen (B, T) bool: the positions to predict)."""
    choose_rng, kind_rng, random_rng = jax.random.split(rng, 3)
    chosen = jax.random.bernoulli(choose_rng, mask_rate, tokens.shape) & valid
    kind = jax.random.uniform(kind_rng, tokens.shape)
    random_tokens = jax.random.randint(random_rng, tokens.shape, 0, vocab_size, tokens.dtype)
    corrupted = jnp.where(chosen & (kind < 0.8), mask_token_id, tokens)
    corrupted = jnp.where(chosen & (kind >= 0.8) & (kind < 0.9), random_tokens, corrupted)
    return corrupted, chosen


@dataclasses.dataclass(frozen=True)
class MaskedLM:
    name: str = "masked_lm"
    vocab_size: int = 0
    mask_token_id: int = 0
    mask_rate: float = 0.15

    def configure(self, model_config: Any) -> MaskedLM:
        return dataclasses.replace(self, vocab_size=model_config.vocab_size,
                                   mask_token_id=model_config.mask_token_id,
                                   mask_rate=model_config.mask_rate)

    def loss(self, apply_fn: ApplyFn, params: Any, batch: Batch, rng: jax.Array,
             train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        if not self.vocab_size:
            raise ValueError("MaskedLM needs the model config: use get_task('masked_lm', config).")
        mask_rng, dropout_rng = jax.random.split(rng)
        tokens = batch["inputs"]
        valid = batch["weights"] > 0
        corrupted, chosen = mask_tokens(mask_rng, tokens, valid, vocab_size=self.vocab_size,
                                        mask_token_id=self.mask_token_id,
                                        mask_rate=self.mask_rate)
        lengths = jnp.sum(valid, axis=1).astype(jnp.int32)
        logits = apply_fn({"params": params}, corrupted, lengths, train=train,
                          rngs={"dropout": dropout_rng} if train else None)  # (B, T, V)
        return token_cross_entropy(logits, tokens, chosen)

    def example_inputs(self, model_config: Any, seq_len: int) -> tuple[jax.Array, ...]:
        return jnp.zeros((1, seq_len), jnp.int32), jnp.ones((1,), jnp.int32)

    def check_batch(self, batch: Batch, model_config: Any) -> None:
        check_lm_batch(batch, model_config.vocab_size, getattr(model_config, "max_len", None))

    def finalize(self, sums: dict[str, Any]) -> dict[str, float]:
        return lm_metrics(sums)
