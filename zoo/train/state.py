"""Building a train state: the one way the loop, the benchmarks and user scripts make one.

    model = zoo.create_model("gpt_tiny")
    task = zoo.tasks.get_task("causal_lm", model.config)
    tx = create_optimizer(config, schedule)                  # zoo.train.optimizer
    state = create_train_state(model, tx, task.example_inputs(model.config, 256), rng)

Over a device mesh (data parallel, FSDP, tensor parallel) the same state is built directly
sharded by `zoo.train.mesh.create_sharded_train_state`.
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import optax

from zoo.train.step import TrainState


def create_train_state(model: nn.Module, tx: optax.GradientTransformation,
                       example_inputs: Sequence[jax.Array], rng: jax.Array) -> TrainState:
    """A `TrainState` (step 0, params from `model.init(rng, *example_inputs)`, the optimizer
    state of `tx`); the init runs jitted, so parameters are created on the device directly."""
    params = jax.jit(lambda r: model.init(r, *example_inputs))(rng)["params"]
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx)
