"""Sequence-to-sequence training with teacher forcing and label smoothing.

Batch: {"inputs": (B, S) int32 source ids, "targets": (B, T) int32 target ids ending in EOS,
"weights": (B, T) float32 (0 = padding)}; 0 pads both. The decoder reads the targets shifted
right behind BOS (`shift_right`). The model is called as
`apply_fn(variables, inputs, decoder_inputs, train=...)` -> logits (B, T, V).

The loss is cross entropy against label-smoothed targets, (1 - eps) * one_hot + eps / V
(Szegedy et al. 2016; eps = 0.1 in Vaswani et al. 2017), read from the model config's
`label_smoothing`. Metrics also report the unsmoothed `nll` and its perplexity.

Packed rows (`packing`, the encoder-decoder transformer): the batch also holds
"inputs_segment_ids" / "inputs_position_ids" (B, S) and "targets_segment_ids" /
"targets_position_ids" (B, T); each target segment's decoder inputs start with BOS.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zoo.special_tokens import BOS_ID
from zoo.decode.translate import translation_samples
from zoo.tasks.base import (ApplyFn, Batch, SampleSettings, TaskBase, argmax_equals,
                            check_packing_keys, check_token_ids, mean_metrics, setting)

PACKED_KEYS = {"inputs_segment_ids": "segment_ids", "inputs_position_ids": "position_ids",
               "targets_segment_ids": "decoder_segment_ids",
               "targets_position_ids": "decoder_position_ids"}  # batch key -> model argument


def shift_right(targets: jax.Array, bos_id: int = BOS_ID) -> jax.Array:
    """targets (B, T) -> decoder inputs (B, T): BOS, then targets[:, :-1]."""
    bos = jnp.full_like(targets[:, :1], bos_id)
    return jnp.concatenate([bos, targets[:, :-1]], axis=1)


def decoder_inputs(batch: Batch, bos_id: int = BOS_ID) -> jax.Array:
    """The teacher-forced decoder inputs (B, T): `shift_right`, and in packed rows BOS again
    at the start of every target segment."""
    shifted = shift_right(batch["targets"], bos_id)
    if "targets_position_ids" not in batch:
        return shifted
    return jnp.where(batch["targets_position_ids"] == 0, bos_id, shifted)


def smoothed_cross_entropy(logits: jax.Array, targets: jax.Array, weights: jax.Array,
                           label_smoothing: float) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Summed label-smoothed cross entropy and metric sums. logits (B, T, V), targets (B, T)."""
    weights = weights.astype(jnp.float32)
    logits = logits.astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # (B, T)
    if label_smoothing:
        smooth = optax.smooth_labels(jax.nn.one_hot(targets, logits.shape[-1]), label_smoothing)
        token_loss = optax.softmax_cross_entropy(logits, smooth)
    else:
        token_loss = nll
    loss_sum = jnp.sum(token_loss * weights)
    correct = jnp.sum(argmax_equals(logits, targets) * weights)
    return loss_sum, {"loss": loss_sum, "nll": jnp.sum(nll * weights), "accuracy": correct,
                      "weight": jnp.sum(weights)}


@dataclasses.dataclass(frozen=True)
class Seq2Seq(TaskBase):
    name: str = "seq2seq"
    label_smoothing: float = setting(0.0)  # the transformer presets register 0.1

    def loss(self, apply_fn: ApplyFn, params: Any, batch: Batch, rng: jax.Array,
             train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        packed = {arg: batch[key] for key, arg in PACKED_KEYS.items() if key in batch}
        logits = apply_fn({"params": params}, batch["inputs"], decoder_inputs(batch),
                          train=train, rngs={"dropout": rng} if train else None,
                          **packed)  # (B, T, V)
        return smoothed_cross_entropy(logits, batch["targets"], batch["weights"],
                                      self.label_smoothing)

    def samples(self, decoder: Any, params: Any, tokenizer: Any, eval_batch: Batch,
                settings: SampleSettings) -> list[str]:
        """"source -> output (reference: target)" lines for the first rows of an eval batch."""
        return translation_samples(decoder, params, tokenizer, eval_batch,
                                   num_samples=settings.num_samples, max_len=settings.seq_len,
                                   reverse_source=settings.reverse_source)

    def example_inputs(self, model_config: Any, seq_len: int) -> tuple[jax.Array, ...]:
        return jnp.zeros((1, seq_len), jnp.int32), jnp.zeros((1, seq_len), jnp.int32)

    def check_batch(self, batch: Batch, model_config: Any) -> None:
        missing = {"inputs", "targets", "weights"} - set(batch)
        if missing:
            raise ValueError(f"a seq2seq batch needs keys inputs/targets/weights; missing "
                             f"{sorted(missing)}.")
        if batch["weights"].shape != batch["targets"].shape:
            raise ValueError(f"batch['weights'] has shape {batch['weights'].shape}, targets "
                             f"have {batch['targets'].shape}.")
        check_packing_keys(batch, batch["inputs"].shape,
                           ("inputs_segment_ids", "inputs_position_ids"))
        check_packing_keys(batch, batch["targets"].shape,
                           ("targets_segment_ids", "targets_position_ids"))
        for key in ("inputs", "targets"):
            check_token_ids(batch, key, model_config.vocab_size, model_config.max_len)

    def finalize(self, sums: dict[str, Any]) -> dict[str, float]:
        out = {k: float(v) for k, v in mean_metrics(sums).items()}
        out["perplexity"] = float(np.exp(min(out["nll"], 50.0)))
        return out
