"""THE training step, shared by every model family, and its parallel wrappers.

`train_step(state, batch, rng)` is one pure function: the *task* supplies the loss, so nothing
here knows which model is trained. `pmap_train_step` runs it over all local devices (gradients
and metrics averaged with `lax.pmean`), `jit_train_step` on one device; both donate the state.

Exact averaging: the task returns summed losses/metrics with a "weight" (token or example
count). Gradients of the summed loss are accumulated over micro-batches and devices, then divided
by the total weight, so 4 devices x B/4 give the same update as 1 device x B.

Non-finite guard: a step whose loss or gradient norm is NaN / inf keeps the old parameters and
optimizer state (the step counter still advances, so the data and dropout streams move on) and
is counted in `state.nonfinite_steps`, with the first such step in `state.first_nonfinite_step`;
the loop reads them when it syncs anyway (log, eval, checkpoint) and applies its policy.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from zoo.tasks.base import Batch, Task, mean_metrics

AXIS = "batch"  # the pmap axis name


class TrainState(train_state.TrainState):
    """flax's TrainState (step, params, opt_state, apply_fn, tx) + the non-finite step count
    and the first non-finite step (-1: none)."""

    nonfinite_steps: jax.Array
    first_nonfinite_step: jax.Array

    @classmethod
    def create(cls, *, apply_fn, params, tx, **kwargs):
        # A strongly typed int32 step: flax's Python 0 is weakly typed, and the step's type
        # changing after the first update would compile the train step a second time.
        kwargs.setdefault("nonfinite_steps", jnp.zeros((), jnp.int32))
        kwargs.setdefault("first_nonfinite_step", jnp.full((), -1, jnp.int32))
        state = super().create(apply_fn=apply_fn, params=params, tx=tx, **kwargs)
        return state.replace(step=jnp.zeros((), jnp.int32))


def _split_micro_batches(batch: Batch, num_micro: int) -> Batch:
    def split(x):
        if x.shape[0] % num_micro:
            raise ValueError(
                f"per-device batch {x.shape[0]} does not divide into grad_accum_steps={num_micro} "
                "micro-batches; choose per_device_batch_size divisible by grad_accum_steps."
            )
        return x.reshape(num_micro, x.shape[0] // num_micro, *x.shape[1:])

    return jax.tree.map(split, batch)


def _grads_and_sums(task: Task, state: TrainState, batch: Batch, rng: jax.Array,
                    grad_accum_steps: int):
    """Summed-loss gradients and metric sums over `grad_accum_steps` micro-batches (one scan)."""

    def micro_step(params, micro_batch, micro_rng):
        grad_fn = jax.grad(
            lambda p: task.loss(state.apply_fn, p, micro_batch, micro_rng, train=True),
            has_aux=True,
        )
        return grad_fn(params)

    if grad_accum_steps == 1:
        return micro_step(state.params, batch, rng)

    micro_batches = _split_micro_batches(batch, grad_accum_steps)
    rngs = jax.random.split(rng, grad_accum_steps)
    zero_grads = jax.tree.map(jnp.zeros_like, state.params)
    _, zero_sums = jax.eval_shape(micro_step, state.params,
                                  jax.tree.map(lambda x: x[0], micro_batches), rngs[0])
    zero_sums = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zero_sums)

    def body(carry, xs):
        grads, sums = carry
        g, s = micro_step(state.params, *xs)
        return (jax.tree.map(jnp.add, grads, g), jax.tree.map(jnp.add, sums, s)), None

    (grads, sums), _ = jax.lax.scan(body, (zero_grads, zero_sums), (micro_batches, rngs))
    return grads, sums


def train_step(state: TrainState, batch: Batch, rng: jax.Array, *, task: Task,
               grad_accum_steps: int = 1, axis_name: str | None = None,
               learning_rate_fn: Callable[[jax.Array], jax.Array] | None = None
               ) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update. Pure: same inputs, same outputs.

    `rng` is the run's base key; it is folded with the step (and the device index under pmap),
    so dropout differs per step and per device but a resumed run draws the same masks.
    """
    rng = jax.random.fold_in(rng, state.step)
    if axis_name is not None:
        rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))

    grad_sums, sums = _grads_and_sums(task, state, batch, rng, grad_accum_steps)
    if axis_name is not None:
        grad_sums, sums = jax.lax.pmean((grad_sums, sums), axis_name)
    weight = jnp.maximum(sums["weight"], 1e-9)
    grads = jax.tree.map(lambda g: g / weight, grad_sums)

    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(sums["loss"]) & jnp.isfinite(grad_norm)

    def update(s: TrainState):
        updated = s.apply_gradients(grads=grads)
        # Back to the state's own dtypes: with 16-bit params (param_dtype) the float32
        # gradients promote the update and optimizer moments to float32, and both branches of
        # the cond must return the same types. A no-op for float32 params.
        return jax.tree.map(lambda new, old: new.astype(old.dtype),
                            (updated.params, updated.opt_state), (s.params, s.opt_state))

    # A cond, not a select over every parameter: on CPU (gpt_tiny, 2026-11-30) the select cost
    # 5-8% of a B=4 T=128 step, the cond 1-3%; at B=16 T=256 the cond is within noise.
    params, opt_state = jax.lax.cond(finite, update, lambda s: (s.params, s.opt_state), state)
    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state,
        nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32),
        first_nonfinite_step=jnp.where((state.first_nonfinite_step < 0) & ~finite,
                                       state.step + 1, state.first_nonfinite_step))
    metrics = mean_metrics(sums)
    metrics["grad_norm"] = grad_norm
    metrics["nonfinite_steps"] = new_state.nonfinite_steps
    metrics["param_norm"] = optax.tree.norm(new_state.params)
    if learning_rate_fn is not None:
        metrics["learning_rate"] = learning_rate_fn(state.step)
    return new_state, metrics


def eval_step(state: TrainState, batch: Batch, *, task: Task,
              axis_name: str | None = None) -> dict[str, jax.Array]:
    """Metric sums (with "weight") of one batch, dropout off; summed over devices under pmap."""
    _, sums = task.loss(state.apply_fn, state.params, batch, jax.random.key(0), train=False)
    if axis_name is not None:
        sums = jax.lax.psum(sums, axis_name)
    return sums


def jit_train_step(task: Task, *, grad_accum_steps: int = 1, learning_rate_fn=None):
    """`train_step` compiled for one device: (state, batch (B, ...), rng) -> (state, metrics)."""
    fn = functools.partial(train_step, task=task, grad_accum_steps=grad_accum_steps,
                           learning_rate_fn=learning_rate_fn)
    return jax.jit(fn, donate_argnums=(0,))


def pmap_train_step(task: Task, *, grad_accum_steps: int = 1, learning_rate_fn=None):
    """`train_step` over all local devices: (replicated state, batch (D, B/D, ...), rng) -> ...

    The rng is broadcast (not replicated); metrics come back replicated (D,).
    """
    fn = functools.partial(train_step, task=task, grad_accum_steps=grad_accum_steps,
                           axis_name=AXIS, learning_rate_fn=learning_rate_fn)
    return jax.pmap(fn, axis_name=AXIS, in_axes=(0, 0, None), donate_argnums=(0,))


def jit_eval_step(task: Task):
    return jax.jit(functools.partial(eval_step, task=task))


def pmap_eval_step(task: Task):
    return jax.pmap(functools.partial(eval_step, task=task, axis_name=AXIS), axis_name=AXIS)
