"""Causal language modelling: predict token t+1 from tokens <= t.

Batch: {"inputs": (B, T) int32, "targets": (B, T) int32, "weights": (B, T) float32 (0 = padding)},
and for packed rows (`packing`) "segment_ids" and "position_ids" (B, T) int32, which the model
takes as they are (attention stays within each document).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from zoo.decode.text import sample_texts
from zoo.tasks.base import (ApplyFn, Batch, SampleSettings, TaskBase, check_packing_keys,
                            check_token_ids, mean_metrics, packing_inputs, setting)
from zoo.tasks.losses import DEFAULT_CHUNK_SIZE, head_cross_entropy


@dataclasses.dataclass(frozen=True)
class CausalLM(TaskBase):
    """The model is called with `output_head=True` and the loss projects `loss_chunk_size` tokens
    onto the vocabulary at a time (`zoo.tasks.losses`), so no (B, T, V) logits are held."""

    name: str = "causal_lm"
    loss_chunk_size: int = setting(DEFAULT_CHUNK_SIZE)  # tokens projected onto the vocabulary at once

    def loss(self, apply_fn: ApplyFn, params: Any, batch: Batch, rng: jax.Array,
             train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        head = apply_fn({"params": params}, batch["inputs"], train=train, output_head=True,
                        rngs={"dropout": rng} if train else None,
                        **packing_inputs(batch))  # features (B, T, D)
        return head_cross_entropy(head, batch["targets"], batch["weights"], self.loss_chunk_size)

    def example_inputs(self, model_config: Any, seq_len: int) -> tuple[jax.Array, ...]:
        """Arguments for `model.init` (shapes only matter)."""
        return (jnp.zeros((1, seq_len), jnp.int32),)

    def samples(self, decoder: Any, params: Any, tokenizer: Any, eval_batch: Batch,
                settings: SampleSettings) -> list[str]:
        """Continuations of the settings' prompt."""
        return sample_texts(decoder, params, tokenizer, settings.prompt,
                            num_samples=settings.num_samples,
                            max_new_tokens=settings.max_new_tokens, max_len=settings.max_len,
                            temperature=settings.temperature, top_k=settings.top_k,
                            top_p=settings.top_p, seed=settings.seed)

    def check_batch(self, batch: Batch, model_config: Any) -> None:
        check_lm_batch(batch, model_config.vocab_size, model_config.max_len)

    def finalize(self, sums: dict[str, Any]) -> dict[str, float]:
        return lm_metrics(sums)


def lm_metrics(sums: dict[str, Any]) -> dict[str, float]:
    """Mean metrics of a token-level LM loss, plus the perplexity of the mean loss."""
    out = {k: float(v) for k, v in mean_metrics(sums).items()}
    out["perplexity"] = float(np.exp(min(out["loss"], 50.0)))
    return out


def check_lm_batch(batch: Batch, vocab_size: int, max_len: int | None) -> None:
    """Raises ValueError if a host batch has wrong keys, shapes or token ids (before devices see it)."""
    missing = {"inputs", "targets", "weights"} - set(batch)
    if missing:
        raise ValueError(f"a causal-LM batch needs keys inputs/targets/weights; missing {sorted(missing)}.")
    shape = batch["inputs"].shape
    for key in ("targets", "weights"):
        if batch[key].shape != shape:
            raise ValueError(f"batch[{key!r}] has shape {batch[key].shape}, inputs have {shape}.")
    check_packing_keys(batch, shape)
    for key in ("inputs", "targets"):
        check_token_ids(batch, key, vocab_size, max_len)
