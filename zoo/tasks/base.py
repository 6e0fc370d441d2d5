"""What a task is: the only place where model families differ during training.

A task turns (apply_fn, params, batch, rng) into a *summed* loss and summed metrics:

    loss_sum, sums = task.loss(apply_fn, params, batch, rng, train=True)

`sums` holds per-batch sums and a "weight" entry (how many tokens / examples were summed), so the
shared step can average exactly across micro-batches and devices: mean = sum(x) / sum(weight).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

Batch = dict[str, Any]
ApplyFn = Callable[..., Any]


def setting(default: Any) -> Any:
    """A task field that is a run setting (overridable as --config.<name>=...), with its default.

    Fields without it are filled from the model config by `configure` (vocabulary size, special
    token ids)."""
    return dataclasses.field(default=default, metadata={"setting": True})


def task_settings(task: Any) -> dict[str, Any]:
    """{name: default} of the task's run settings (`setting` fields)."""
    return {f.name: f.default for f in dataclasses.fields(task) if f.metadata.get("setting")}


@dataclasses.dataclass(frozen=True)
class SampleSettings:
    """What the end of a training run samples (the run config's `sample_*` fields)."""

    num_samples: int
    prompt: str = "The "
    max_new_tokens: int = 200
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 0.95
    seed: int = 0
    max_len: int | None = None  # the model's longest sequence (None: any)
    seq_len: int = 256  # the run's sequence length (seq2seq: the longest translation)
    reverse_source: bool = False  # seq2seq sources were fed reversed


class TaskBase:
    """What every task shares: `configure(model_config)` binds the task to a model config, and
    `samples(...)` shows what a trained model does (text for the LM tasks, translations for
    seq2seq); tasks that read nothing from the config, or have nothing to show, keep these."""

    def configure(self, model_config: Any) -> Any:
        return self

    def samples(self, decoder: Any, params: Any, tokenizer: Any, eval_batch: Batch,
                settings: SampleSettings) -> list[str]:
        """Texts showing the trained model at work (none by default)."""
        return []


class Task(Protocol):
    name: str

    def configure(self, model_config: Any) -> Task: ...

    def samples(self, decoder: Any, params: Any, tokenizer: Any, eval_batch: Batch,
                settings: SampleSettings) -> list[str]: ...

    def loss(self, apply_fn: ApplyFn, params: Any, batch: Batch, rng: jax.Array,
             train: bool) -> tuple[jax.Array, dict[str, jax.Array]]: ...

    def example_inputs(self, model_config: Any, seq_len: int) -> tuple[jax.Array, ...]: ...

    def check_batch(self, batch: Batch, model_config: Any) -> None: ...

    def finalize(self, sums: dict[str, Any]) -> dict[str, float]: ...


# Batch keys of packed rows (several documents per row), passed on to the model as they are.
PACKING_KEYS = ("segment_ids", "position_ids")


def packing_inputs(batch: Batch, prefix: str = "") -> dict[str, Any]:
    """{"segment_ids": (B, T), "position_ids": (B, T)} of a packed batch (those it holds;
    empty for an unpacked one), as model keyword arguments named `prefix` + key."""
    return {prefix + key: batch[key] for key in PACKING_KEYS if key in batch}


def check_packing_keys(batch: Batch, shape: tuple[int, ...], keys=PACKING_KEYS) -> None:
    """ValueError unless every packing key the batch holds has the token shape `shape`."""
    for key in keys:
        if key in batch and np.shape(batch[key]) != tuple(shape):
            raise ValueError(f"batch[{key!r}] has shape {np.shape(batch[key])}; the tokens it "
                             f"describes have {tuple(shape)}.")


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
