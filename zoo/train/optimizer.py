"""The optimizer from config: AdamW + global-norm clipping + a warm-up schedule (all optax)."""
from __future__ import annotations

from typing import Any

import jax
import optax

from zoo.train.schedules import create_schedule


def learning_rate_schedule(config: Any, d_model: int | None = None) -> optax.Schedule:
    return create_schedule(
        config.schedule,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_steps,
        total_steps=config.num_train_steps,
        d_model=d_model,
    )


def decay_mask(params: Any) -> Any:
    """Weight decay on matrices only (kernels, embeddings), not on biases or LayerNorm scales."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def create_optimizer(config: Any, schedule: optax.Schedule) -> optax.GradientTransformation:
    """Fields used: grad_clip_norm (0 = off), weight_decay, adam_b1, adam_b2, adam_eps."""
    parts = []
    if config.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
    parts.append(
        optax.adamw(
            schedule,
            b1=config.adam_b1,
            b2=config.adam_b2,
            eps=config.adam_eps,
            weight_decay=config.weight_decay,
            mask=decay_mask,
        )
    )
    return optax.chain(*parts)
