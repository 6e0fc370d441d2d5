"""Sequence classification (one label per sequence) and tagging (one label per token).

Classification batch: {"inputs": (B, T) int32, "lengths": (B,) int32, "labels": (B,) int32}.
Tagging batch: {"inputs", "targets": (B, T) int32, "weights": (B, T) float32, "lengths": (B,)}.
The model is called as `apply_fn(variables, inputs, lengths, train=...)`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zoo.tasks.base import (ApplyFn, Batch, TaskBase, argmax_equals, mean_metrics,
                            token_cross_entropy)


def _check_keys(batch: Batch, keys: set[str], task: str) -> None:
    missing = keys - set(batch)
    if missing:
        raise ValueError(f"a {task} batch needs keys {sorted(keys)}; missing {sorted(missing)}.")


def _check_range(batch: Batch, key: str, limit: int, what: str) -> None:
    values = np.asarray(batch[key])
    if values.size and (values.min() < 0 or values.max() >= limit):
        bad = values.min() if values.min() < 0 else values.max()
        raise ValueError(f"batch[{key!r}] holds {bad}, outside [0, {what}={limit}); the data and "
                         f"the model config disagree (set --config.{what} to match the data).")


def _check_inputs(batch: Batch, model_config: Any) -> None:
    inputs = batch["inputs"]
    if inputs.ndim != 2:
        raise ValueError(f"batch['inputs'] must be (batch, length); got shape {inputs.shape}.")
    _check_range(batch, "inputs", model_config.vocab_size, "vocab_size")
    lengths = np.asarray(batch["lengths"])
    if lengths.shape != inputs.shape[:1] or lengths.min() < 1 or lengths.max() > inputs.shape[1]:
        raise ValueError(f"batch['lengths'] must be (batch,) in [1, {inputs.shape[1]}]; got "
                         f"shape {lengths.shape}, range [{lengths.min()}, {lengths.max()}].")


def _call(apply_fn: ApplyFn, params: Any, batch: Batch, rng: jax.Array, train: bool):
    return apply_fn({"params": params}, batch["inputs"], batch["lengths"], train=train,
                    rngs={"dropout": rng} if train else None)


@dataclasses.dataclass(frozen=True)
class Classification(TaskBase):
    name: str = "classification"

    def loss(self, apply_fn: ApplyFn, params: Any, batch: Batch, rng: jax.Array,
             train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        logits = _call(apply_fn, params, batch, rng, train)  # (B, C)
        # (B,) example weights: 0 for the rows that pad an eval split's last batch.
        weights = batch.get("weights", jnp.ones(batch["labels"].shape, jnp.float32))
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
        loss_sum = jnp.sum(losses * weights)
        correct = jnp.sum(argmax_equals(logits, batch["labels"]) * weights)
        return loss_sum, {"loss": loss_sum, "accuracy": correct.astype(jnp.float32),
                          "weight": jnp.sum(weights).astype(jnp.float32)}

    def example_inputs(self, model_config: Any, seq_len: int) -> tuple[jax.Array, ...]:
        return jnp.zeros((1, seq_len), jnp.int32), jnp.ones((1,), jnp.int32)

    def check_batch(self, batch: Batch, model_config: Any) -> None:
        _check_keys(batch, {"inputs", "lengths", "labels"}, self.name)
        _check_inputs(batch, model_config)
        _check_range(batch, "labels", model_config.num_classes, "num_classes")

    def finalize(self, sums: dict[str, Any]) -> dict[str, float]:
        return {k: float(v) for k, v in mean_metrics(sums).items()}


@dataclasses.dataclass(frozen=True)
class Tagging(TaskBase):
    name: str = "tagging"

    def loss(self, apply_fn: ApplyFn, params: Any, batch: Batch, rng: jax.Array,
             train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        logits = _call(apply_fn, params, batch, rng, train)  # (B, T, C)
        return token_cross_entropy(logits, batch["targets"], batch["weights"])

    def example_inputs(self, model_config: Any, seq_len: int) -> tuple[jax.Array, ...]:
        return jnp.zeros((1, seq_len), jnp.int32), jnp.ones((1,), jnp.int32)

    def check_batch(self, batch: Batch, model_config: Any) -> None:
        _check_keys(batch, {"inputs", "targets", "weights", "lengths"}, self.name)
        _check_inputs(batch, model_config)
        _check_range(batch, "targets", model_config.num_classes, "num_classes")

    def finalize(self, sums: dict[str, Any]) -> dict[str, float]:
        return {k: float(v) for k, v in mean_metrics(sums).items()}
