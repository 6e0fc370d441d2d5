"""Causal language modelling: predict token t+1 from tokens <= t.

Batch: {"inputs": (B, T) int32, "targets": (B, T) int32, "weights": (B, T) float32 (0 = padding)}.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from zoo.tasks.base import ApplyFn, Batch, check_token_ids, mean_metrics
from zoo.tasks.losses import DEFAULT_CHUNK_SIZE, head_cross_entropy


@dataclasses.dataclass(frozen=True)
class CausalLM:
    """The model is called with `output_head=True` and the loss projects `chunk_size` tokens
    onto the vocabulary at a time (`zoo.tasks.losses`), so no (B, T, V) logits are held."""

    name: str = "causal_lm"
    chunk_size: int = DEFAULT_CHUNK_SIZE

    def loss(self, apply_fn: ApplyFn, params: Any, batch: Batch, rng: jax.Array,
             train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        head = apply_fn({"params": params}, batch["inputs"], train=train, output_head=True,
                        rngs={"dropout": rng} if train else None)  # features (B, T, D)
        return head_cross_entropy(head, batch["targets"], batch["weights"], self.chunk_size)

    def example_inputs(self, model_config: Any, seq_len: int) -> tuple[jax.Array, ...]:
        """Arguments for `model.init` (shapes only matter)."""
        return (jnp.zeros((1, seq_len), jnp.int32),)

    def check_batch(self, batch: Batch, model_config: Any) -> None:
        check_lm_batch(batch, model_config.vocab_size, getattr(model_config, "max_len", None))

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
    for key in ("inputs", "targets"):
        check_token_ids(batch, key, vocab_size, max_len)
