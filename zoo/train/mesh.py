"""The shared train step over a device mesh: data parallel, FSDP and tensor parallel.

`jax.pmap` replicates the whole state on every device and only splits the batch. Here the
SAME pure `zoo.train.step.train_step` is `jax.jit`-compiled over a `jax.sharding.Mesh` with
three named axes, and the arrays' shardings say who holds what:

* data   - batch rows split, parameters replicated (what pmap does);
* fsdp   - batch rows split AND parameters plus Adam moments split along their "embed" /
           "hidden" dimension (ZeRO-3 / FSDP): each device keeps 1/fsdp of the state;
* tensor - Megatron-style: the attention heads, the MLP's hidden units and the vocabulary
           split across devices, batch rows replicated.

Shardings come from the logical axis names on every parameter and the rules of
`zoo.train.partitioning`, never from per-model code here. The step itself has no collectives:
it computes on global arrays as on one device (the loss over the global batch, `axis_name`
None), and XLA's SPMD partitioner inserts them from the in/out shardings: for data parallelism
the all-reduce of the gradients that pmap's `pmean` does; for tensor parallelism the
all-reduces after the row-parallel matmuls; for FSDP all-gathers of the weights before their
matmuls, and gradients reduced back onto the shards, so the updated parameters and optimizer
state stay sharded. The result is the single-device update up to float summation order.

Where the collectives go is the partitioner's choice, steered by one kind of constraint: the
models pin their activations (and an RNN's carries) to rows split over the batch axes
(`zoo.nn.logical_axes.constrain_batch`, a no-op off the mesh). Without it XLA kept FSDP weights
split and split the activations along their width instead, all-gathering the batch (and, in an
LSTM's time loop, exchanging data at every step). With it (jax 0.10.2, XLA-CPU, 2026-12-01;
tests/test_mesh.py checks the compiled step): in a scanned transformer stack each layer's
weights are all-gathered inside the layer loop, one layer at a time, forward and again
backward, so a device never holds more than one layer's full weights; an RNN gathers its
weights once before its time loop, whose steps then run on the device's own rows. Gradients
come back as all-reduces of one layer's weights (GPU and TPU backends turn all-reduce +
slice into a reduce-scatter).

Meshes come from `jax.make_mesh` with Auto axis types (JAX >= 0.9 defaults to Explicit axes,
whose typed shardings the zoo's models do not annotate); the step runs under `jax.set_mesh`
and `nn.logical_axis_rules`, so `nn.with_logical_constraint` in user models takes effect.

    mesh = create_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    state, shardings = create_sharded_train_state(model, tx, example_inputs, rng, mesh)
    step = mesh_train_step(task, mesh, shardings, learning_rate_fn=schedule)
    state, metrics = step(state, global_batch(host_batch, mesh), rng)
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from zoo.errors import ConfigError
from zoo.tasks.base import Batch, Task
from zoo.train import step as step_lib
from zoo.train.partitioning import (DEFAULT_RULES, MESH_AXES, Rules, batch_spec,
                                    logical_param_specs, param_shardings, state_shardings)
from zoo.train.step import TrainState


def check_mesh_axes(axes: Mapping[str, Any]) -> None:
    """ConfigError unless `axes` maps mesh axis names to integer sizes >= 1, one of them
    possibly -1 (the rest of the devices)."""
    unknown = sorted(set(axes) - set(MESH_AXES))
    if unknown:
        raise ConfigError(f"mesh axes {unknown} are unknown; use {', '.join(MESH_AXES)}.")
    sizes = list(axes.values())
    valid = all(isinstance(s, int) and not isinstance(s, bool) and (s >= 1 or s == -1)
                for s in sizes)
    if not valid or sizes.count(-1) > 1:
        raise ConfigError(f"mesh {dict(axes)} needs integer sizes >= 1 and at most one -1 (the "
                          "rest of the devices), e.g. {'data': -1, 'fsdp': 2, 'tensor': 1}.")


def mesh_shape(axes: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """{"data": -1, "fsdp": 2} -> sizes of all MESH_AXES (missing: 1; one -1 fills the rest);
    ConfigError unless they multiply to `num_devices`."""
    check_mesh_axes(axes)
    sizes = {name: int(axes.get(name, 1)) for name in MESH_AXES}
    known = math.prod(size for size in sizes.values() if size != -1)
    for name, size in sizes.items():
        if size == -1:
            sizes[name] = num_devices // known if num_devices % known == 0 else -1
    if math.prod(sizes.values()) != num_devices:
        raise ConfigError(f"mesh {dict(axes)} does not fit {num_devices} devices: the sizes must "
                          f"multiply to {num_devices}; set one of them to -1 to fill the rest.")
    return sizes


def create_mesh(axes: Mapping[str, int] | None = None,
                devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over `devices` (default: all, of every process) with axes data, fsdp, tensor."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_shape({"data": -1} if axes is None else axes, len(devices))
    return jax.make_mesh(tuple(sizes.values()), tuple(sizes), devices=devices,
                         axis_types=(AxisType.Auto,) * len(sizes))


def batch_sharding(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> NamedSharding:
    """Rows of every batch leaf split over the rules' "batch" axes (data x fsdp)."""
    return NamedSharding(mesh, batch_spec(rules))


def train_state_shardings(model: nn.Module, tx: optax.GradientTransformation,
                          example_inputs: Sequence[jax.Array], mesh: Mesh,
                          rules: Rules = DEFAULT_RULES) -> TrainState:
    """The NamedShardings of the `TrainState` that `create_train_state` would build (a pytree
    of the same shape; nothing allocated)."""
    abstract = jax.eval_shape(functools.partial(_init_state, model, tx, example_inputs),
                              jax.random.key(0))
    specs = logical_param_specs(model, example_inputs)
    return state_shardings(abstract, param_shardings(specs, abstract.params, mesh, rules), mesh)


def _init_state(model, tx, example_inputs, rng) -> TrainState:
    params = model.init(rng, *example_inputs)["params"]
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx)


def create_sharded_train_state(model: nn.Module, tx: optax.GradientTransformation,
                               example_inputs: Sequence[jax.Array], rng: jax.Array, mesh: Mesh,
                               rules: Rules = DEFAULT_RULES) -> tuple[TrainState, TrainState]:
    """(state, shardings): the `create_train_state` state, initialised by a jit whose outputs
    are already sharded (each device computes only its shards; no full copy on one device)."""
    shardings = train_state_shardings(model, tx, example_inputs, mesh, rules)
    init = jax.jit(functools.partial(_init_state, model, tx, example_inputs),
                   out_shardings=shardings)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        return init(rng), shardings


def shard_state(state: TrainState, shardings: TrainState) -> TrainState:
    """Puts a state (fresh, or restored from a checkpoint onto the host / one device) on the
    mesh shardings."""
    return jax.device_put(state, shardings)


def abstract_sharded_state(abstract_state: TrainState, shardings: TrainState) -> TrainState:
    """`jax.eval_shape` of a state -> ShapeDtypeStructs carrying `shardings`: what an orbax
    `StandardRestore` takes to restore a checkpoint straight onto the mesh."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        abstract_state, shardings)


def host_copy(tree: Any) -> Any:
    """Full numpy copies of (sharded) global arrays on every process, e.g. params for
    sampling or export (a checkpoint needs none: orbax writes the shards)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def global_batch(host_batch: Batch, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Batch:
    """This process's rows (B_local, ...) -> global arrays (B_local * processes, ...) with the
    rows split over the batch axes (`jax.make_array_from_process_local_data`)."""
    sharding = batch_sharding(mesh, rules)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), host_batch)


def _under_mesh(fn: Callable, mesh: Mesh, rules: Rules) -> Callable:
    @functools.wraps(fn)
    def call(*args):
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            return fn(*args)

    def lower(*args):
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            return fn.lower(*args)

    call.jitted, call.lower = fn, lower  # .lower(...): ahead-of-time, as jax.jit's
    return call


def mesh_train_step(task: Task, mesh: Mesh, shardings: TrainState, *, grad_accum_steps: int = 1,
                    learning_rate_fn=None, rules: Rules = DEFAULT_RULES) -> Callable:
    """`train_step` compiled over the mesh: (state on `shardings`, global batch (B, ...), rng)
    -> (state, metrics); the state is donated, the metrics are replicated scalars."""
    replicated = NamedSharding(mesh, PartitionSpec())
    fn = functools.partial(step_lib.train_step, task=task, grad_accum_steps=grad_accum_steps,
                           learning_rate_fn=learning_rate_fn)
    jitted = jax.jit(fn, in_shardings=(shardings, batch_sharding(mesh, rules), replicated),
                     out_shardings=(shardings, replicated), donate_argnums=(0,))
    return _under_mesh(jitted, mesh, rules)


def mesh_eval_step(task: Task, mesh: Mesh, shardings: TrainState,
                   rules: Rules = DEFAULT_RULES) -> Callable:
    """`eval_step` compiled over the mesh: (state, global batch) -> replicated metric sums."""
    replicated = NamedSharding(mesh, PartitionSpec())
    jitted = jax.jit(functools.partial(step_lib.eval_step, task=task),
                     in_shardings=(shardings, batch_sharding(mesh, rules)),
                     out_shardings=replicated)
    return _under_mesh(jitted, mesh, rules)


def per_device_bytes(abstract_tree: Any, shardings: Any) -> int:
    """Bytes one device holds of a tree of arrays (or ShapeDtypeStructs) under `shardings`
    (its largest shards; no allocation)."""
    sizes = jax.tree.map(
        lambda x, s: math.prod(s.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize,
        abstract_tree, shardings)
    return sum(jax.tree.leaves(sizes))
