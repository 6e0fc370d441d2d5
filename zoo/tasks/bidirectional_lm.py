"""Bidirectional language modelling (ELMo): a forward and a backward LM trained together.

Batch: the causal-LM batch {"inputs", "targets", "weights"} (targets = inputs shifted left).
The model returns (forward logits, backward logits) (B, T, V); forward logits at t predict
targets[t] (= token t + 1), backward logits at t predict inputs[t - 1] (none at t = 0). The
loss is the sum of both; metrics report each direction's mean loss.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zoo.tasks.base import ApplyFn, Batch, TaskBase, mean_metrics
from zoo.tasks.causal_lm import check_lm_batch


@dataclasses.dataclass(frozen=True)
class BidirectionalLM(TaskBase):
    name: str = "bidirectional_lm"

    def loss(self, apply_fn: ApplyFn, params: Any, batch: Batch, rng: jax.Array,
             train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        fwd_logits, bwd_logits = apply_fn({"params": params}, batch["inputs"], train=train,
                                          rngs={"dropout": rng} if train else None)
        weights = batch["weights"].astype(jnp.float32)  # (B, T)
        fwd = optax.softmax_cross_entropy_with_integer_labels(fwd_logits, batch["targets"])
        fwd_sum = jnp.sum(fwd * weights)
        # Backward position t predicts inputs[t - 1]: both valid, and t >= 1.
        bwd = optax.softmax_cross_entropy_with_integer_labels(bwd_logits[:, 1:],
                                                              batch["inputs"][:, :-1])
        bwd_weights = weights[:, 1:] * weights[:, :-1]
        bwd_sum = jnp.sum(bwd * bwd_weights)
        # Rescale the backward sum to the forward's token count so "loss" is a mean per
        # direction, summed: fwd_mean + bwd_mean (the two counts differ by one per row).
        bwd_scaled = bwd_sum * jnp.sum(weights) / jnp.maximum(jnp.sum(bwd_weights), 1.0)
        loss_sum = fwd_sum + bwd_scaled
        return loss_sum, {"loss": loss_sum, "forward_loss": fwd_sum,
                          "backward_loss": bwd_scaled, "weight": jnp.sum(weights)}

    def example_inputs(self, model_config: Any, seq_len: int) -> tuple[jax.Array, ...]:
        return (jnp.zeros((1, seq_len), jnp.int32),)

    def check_batch(self, batch: Batch, model_config: Any) -> None:
        check_lm_batch(batch, model_config.vocab_size, None)

    def finalize(self, sums: dict[str, Any]) -> dict[str, float]:
        out = {k: float(v) for k, v in mean_metrics(sums).items()}
        for direction in ("forward", "backward"):
            out[f"{direction}_perplexity"] = float(np.exp(min(out[f"{direction}_loss"], 50.0)))
        return out
