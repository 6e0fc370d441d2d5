"""What a task is: the only place where model families differ during training.

A task turns (apply_fn, params, batch, rng) into a *summed* loss and summed metrics:

    loss_sum, sums = task.loss(apply_fn, params, batch, rng, train=True)

`sums` holds per-batch sums and a "weight" entry (how many tokens / examples were summed), so the
shared step can average exactly across micro-batches and devices: mean = sum(x) / sum(weight).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import optax

Batch = dict[str, Any]
ApplyFn = Callable[..., Any]


class Task(Protocol):
    name: str

    def loss(self, apply_fn: ApplyFn, params: Any, batch: Batch, rng: jax.Array,
             train: bool) -> tuple[jax.Array, dict[str, jax.Array]]: ...

    def example_inputs(self, model_config: Any, seq_len: int) -> tuple[jax.Array, ...]: ...

    def check_batch(self, batch: Batch, model_config: Any) -> None: ...

    def finalize(self, sums: dict[str, Any]) -> dict[str, float]: ...


def mean_metrics(sums: dict[str, Any]) -> dict[str, Any]:
    """{"x": sum, ..., "weight": w} -> {"x": sum / w, ...} (weight dropped)."""
    weight = jnp.maximum(sums["weight"], 1e-9)
    return {k: v / weight for k, v in sums.items() if k != "weight"}


def token_cross_entropy(logits: jax.Array, targets: jax.Array,
                        weights: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Per-token cross entropy, summed: logits (B, T, C), targets (B, T), weights (B, T)."""
    weights = weights.astype(jnp.float32)
    token_loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    loss_sum = jnp.sum(token_loss * weights)
    correct = jnp.sum((jnp.argmax(logits, -1) == targets) * weights)
    return loss_sum, {"loss": loss_sum, "accuracy": correct, "weight": jnp.sum(weights)}
