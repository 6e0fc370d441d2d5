"""The ways to run the shared train step over the devices (`ParallelPath`), and the fresh state
each one starts from (`create`):

    path, state = create("auto", task, model, tx, example_inputs, rng, learning_rate_fn=schedule)
    state = path.place_state(path.to_global(state))
    state, metrics = path.train_fn(state, path.place_batch(host_batch), path.place_rng(rng))

"pmap" replicates the state over this process's devices (collectives span every process);
"jit" runs over every device with the state replicated and the batch split on its rows; "mesh"
runs over a device mesh (data, fsdp, tensor axes) with the state sharded by its parameters'
logical axis names (zoo.train.mesh); "auto" is pmap where this process has several devices,
else jit. The training loop and the benchmarks run their steps through these paths.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
from flax import jax_utils
from jax.sharding import NamedSharding, PartitionSpec

from zoo.data.pipelines.sharding import shard_batch
from zoo.errors import ConfigError
from zoo.train import distributed, partitioning
from zoo.train import mesh as mesh_lib
from zoo.train import step as step_lib
from zoo.train.state import create_train_state

PARALLEL = ("auto", "pmap", "jit", "mesh")

@dataclasses.dataclass(frozen=True)
class ParallelPath:
    """One way to run the shared step over the devices. The loop keeps its state in the form
    `train_fn` takes; `place_state` makes that form from global replicated arrays,
    `global_state` turns it back into global arrays (for checkpoints), `place_batch` turns this
    process's rows of a global batch into `train_fn`'s batch, `local` brings a replicated
    result (metrics, the state's counters, params for sampling) onto one local device."""

    description: str
    train_fn: Callable
    eval_fn: Callable
    place_state: Callable
    global_state: Callable
    place_batch: Callable
    place_rng: Callable
    local: Callable
    # Host or replicated values (a fresh or warm-started state) -> the global arrays this path
    # restores checkpoints into.
    to_global: Callable = distributed.replicate_global
    # Whole arrays on this process (params for sampling): `local` where the state is
    # replicated, gathered from the shards on a mesh.
    full: Callable = distributed.local_copy


def pmap_path(task, schedule, grad_accum_steps: int = 1) -> ParallelPath:
    """pmap over this process's devices; its pmean / psum span the devices of every process."""
    num_local = jax.local_device_count()
    return ParallelPath(
        description=f"pmap over {jax.device_count()} devices" + _processes(),
        train_fn=step_lib.pmap_train_step(task, grad_accum_steps=grad_accum_steps,
                                          learning_rate_fn=schedule),
        eval_fn=step_lib.pmap_eval_step(task),
        place_state=lambda state: _as_pmap_output(
            jax_utils.replicate(distributed.local_copy(state))),
        global_state=distributed.global_from_pmap,
        place_batch=lambda batch: shard_batch(batch, num_local),
        place_rng=lambda rng: rng,
        local=distributed.local_copy)


def _as_pmap_output(tree: Any) -> Any:
    """A replicated tree laid out as the train step's pmap returns it (the mesh of its axis
    name): else the step's second call, on its own output, traces and compiles it again."""
    return jax.pmap(lambda x: x, axis_name=step_lib.AXIS, donate_argnums=0)(tree)


def jit_path(task, schedule, grad_accum_steps: int = 1,
             devices: Sequence[jax.Device] | None = None) -> ParallelPath:
    """jit over `devices` (default: every device of every process): replicated state, batch
    sharded on its rows."""
    mesh = mesh_lib.create_mesh({"data": -1}, devices)
    replicated = NamedSharding(mesh, PartitionSpec())
    return ParallelPath(
        description=f"jit over {mesh.size} device(s)" + _processes(),
        train_fn=step_lib.jit_train_step(task, grad_accum_steps=grad_accum_steps,
                                         learning_rate_fn=schedule),
        eval_fn=step_lib.jit_eval_step(task),
        place_state=lambda state: state,
        global_state=lambda state: state,
        place_batch=lambda batch: mesh_lib.global_batch(batch, mesh),
        place_rng=lambda rng: jax.random.wrap_key_data(
            distributed.replicate_global(jax.random.key_data(rng), replicated)),
        local=distributed.local_copy,
        to_global=lambda state: distributed.replicate_global(state, replicated))


def mesh_path(task, schedule, mesh, rules, shardings, grad_accum_steps: int = 1) -> ParallelPath:
    """jit over a device mesh (data, fsdp, tensor axes): the state on `shardings`, from the
    params' logical axis names (zoo.train.mesh)."""
    replicated = NamedSharding(mesh, PartitionSpec())
    return ParallelPath(
        description=f"mesh {dict(mesh.shape)} over {jax.device_count()} devices" + _processes(),
        train_fn=mesh_lib.mesh_train_step(task, mesh, shardings,
                                          grad_accum_steps=grad_accum_steps,
                                          learning_rate_fn=schedule, rules=rules),
        eval_fn=mesh_lib.mesh_eval_step(task, mesh, shardings, rules),
        place_state=lambda state: mesh_lib.shard_state(state, shardings),
        global_state=lambda state: state,
        place_batch=lambda batch: mesh_lib.global_batch(batch, mesh, rules),
        place_rng=lambda rng: jax.random.wrap_key_data(
            distributed.replicate_global(jax.random.key_data(rng), replicated)),
        local=distributed.local_copy,
        to_global=lambda state: mesh_lib.shard_state(state, shardings),
        full=mesh_lib.host_copy)


def _processes() -> str:
    return f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""


def create(parallel: str, task, model, tx, example_inputs: Sequence[jax.Array], rng: jax.Array, *,
           learning_rate_fn: Callable | None = None, grad_accum_steps: int = 1,
           mesh_shape: dict[str, int] | None = None,
           logical_axis_rules: Sequence[Sequence[Any]] = (),
           devices: Sequence[jax.Device] | None = None) -> tuple[ParallelPath, Any]:
    """(path, fresh train state) for `parallel` ("auto", "pmap", "jit" or "mesh"). The state is
    a host / one-device state except on a mesh, where it is created sharded (no device ever
    holds all of it) over `mesh_shape` (default {"data": -1}) with `logical_axis_rules`.
    `devices` limits "jit" to those devices (one: a single-device step)."""
    if parallel not in PARALLEL:
        raise ConfigError(f"parallel is one of {', '.join(PARALLEL)}; got {parallel!r}.")
    if parallel == "mesh":
        rules = partitioning.axis_rules(logical_axis_rules)
        mesh = mesh_lib.create_mesh({"data": -1} if mesh_shape is None else mesh_shape)
        state, shardings = mesh_lib.create_sharded_train_state(model, tx, example_inputs, rng,
                                                               mesh, rules)
        return mesh_path(task, learning_rate_fn, mesh, rules, shardings, grad_accum_steps), state
    use_pmap = parallel == "pmap" or (parallel == "auto" and jax.local_device_count() > 1)
    path = (pmap_path(task, learning_rate_fn, grad_accum_steps) if use_pmap
            else jit_path(task, learning_rate_fn, grad_accum_steps, devices))
    return path, create_train_state(model, tx, example_inputs, rng)
