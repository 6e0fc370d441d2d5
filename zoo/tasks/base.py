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
import numpy as np
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
    correct = jnp.sum(argmax_equals(logits, targets) * weights)
    return loss_sum, {"loss": loss_sum, "accuracy": correct, "weight": jnp.sum(weights)}


def argmax_equals(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """`jnp.argmax(logits, -1) == targets` (ties go to the first index, as argmax) for logits
    (..., C) and int targets (...), from two max-reductions.

    XLA's CPU argmax is a (value, index) reduction that does not vectorise: on (4096, 8192)
    logits it took 74 ms, against 5 ms for a max (benchmarks/RESULTS.md).
    """
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    index = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    lowest = jnp.array(-jnp.inf, logits.dtype)
    before_max = jnp.max(jnp.where(index < targets[..., None], logits, lowest), axis=-1)
    return (target_logit >= jnp.max(logits, axis=-1)) & (target_logit > before_max)


def check_token_ids(batch: Batch, key: str, vocab_size: int, max_len: int | None) -> None:
    """Raises ValueError if host `batch[key]` is not (B, T) ids in [0, vocab_size), T <= max_len
    (JAX gathers would clamp a bad id silently, so batches are checked before devices see them)."""
    values = np.asarray(batch[key])
    if values.ndim != 2:
        raise ValueError(f"batch[{key!r}] must be (batch, length); got shape {values.shape}.")
    if max_len is not None and values.shape[-1] > max_len:
        raise ValueError(
            f"sequence length {values.shape[-1]} of batch[{key!r}] exceeds the model's "
            f"max_len={max_len}; set --config.seq_len <= {max_len} or a larger --config.max_len."
        )
    if values.size:
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(
                f"batch[{key!r}] holds token id {lo if lo < 0 else hi}, outside [0, vocab_size="
                f"{vocab_size}); the tokenizer and the model's vocab_size disagree."
            )
