"""Many processes: starting `jax.distributed`, and the global arrays that span the processes.

    initialize_distributed(config)   # first thing a launcher does, before any JAX computation

`config.distributed`:
  "auto"  starts jax.distributed when this process is one of several: coordinator_address /
          num_processes / process_id are set (run fields, or the environment variables
          JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID; Kubernetes indexed Jobs
          give JOB_COMPLETION_INDEX), or JAX's own cluster detection (SLURM, Open MPI,
          Kubernetes, Cloud TPU VMs) finds more than one process. Never on a plain machine.
  "on"    always starts it (JAX detects what is not set); "off" never does.

Once started, `jax.devices()` lists every process's devices and `jax.process_index()` tells the
processes apart. On CPU the collectives between processes go through gloo.

The helpers below turn per-process values into global `jax.Array`s (the form orbax saves
without gathering anything to one host, and the form `jit` over all devices takes) and back.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from zoo.errors import ConfigError
from zoo.train.mesh import create_mesh

log = logging.getLogger("zoo.train")

MODES = ("auto", "on", "off")
_ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
        "process_id": "JAX_PROCESS_ID"}
_INDEXED_JOB_ENV = "JOB_COMPLETION_INDEX"  # the pod's index in a Kubernetes indexed Job


def _setting(config: Any, key: str) -> Any:
    """A run field, else its environment variable (ints parsed), else None."""
    value = config.get(key)
    if value is not None:
        return value
    raw = os.environ.get(_ENV[key])
    if raw is None and key == "process_id":
        raw = os.environ.get(_INDEXED_JOB_ENV)
    if raw is None or key == "coordinator_address":
        return raw
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {_ENV[key]}={raw!r} must be an integer.") from None


def settings(config: Any) -> tuple[str | None, int | None, int | None]:
    """(coordinator_address, num_processes, process_id) from the run fields and environment,
    checked for consistency (ConfigError naming the field and the fix)."""
    address, count, index = (_setting(config, k) for k in _ENV)
    if count is not None and count < 1:
        raise ConfigError(f"num_processes must be >= 1; got {count}.")
    if index is not None and (index < 0 or (count is not None and index >= count)):
        raise ConfigError(f"process_id must be in [0, num_processes={count}); got {index}.")
    if address is not None and ":" not in address:
        raise ConfigError(f"coordinator_address must be host:port (e.g. 10.0.0.1:1234, the "
                          f"address of process 0); got {address!r}.")
    return address, count, index


def _detected_cluster_processes() -> int:
    """The process count JAX's own cluster detection finds (SLURM, Open MPI, Kubernetes, Cloud
    TPU), 0 when it finds no cluster. Reads JAX's detection table, which is not public API, so
    any failure counts as no cluster."""
    try:
        from jax._src.clusters import ClusterEnv

        for env in ClusterEnv._cluster_types:
            if not env.opt_in_only_method and env.is_env_present():
                return int(env.get_process_count())
    except Exception as e:  # noqa: BLE001 - a detection failure means "not a cluster"
        log.debug("cluster detection failed: %s", e)
    return 0


def wanted(config: Any) -> bool:
    """Whether `initialize_distributed` would start jax.distributed for this config."""
    mode = config.get("distributed", "auto")
    if mode not in MODES:
        raise ConfigError(f"config.distributed must be one of {', '.join(map(repr, MODES))}; "
                          f"got {mode!r}.")
    address, count, index = settings(config)
    if mode == "off":
        given = [k for k in ("coordinator_address", "num_processes", "process_id")
                 if config.get(k) is not None]
        if given:
            raise ConfigError(f"config.distributed='off' but {', '.join(given)} set; drop them "
                              "or set distributed='auto'.")
        return False
    if mode == "on":
        return True
    if count is not None:
        return count > 1
    if _detected_cluster_processes() > 1:
        return True
    if address is not None or index is not None:
        raise ConfigError("coordinator_address or process_id is set but num_processes is not "
                          "(and no cluster was detected); set num_processes (or "
                          "JAX_NUM_PROCESSES) too.")
    return False


def initialize_distributed(config: Any) -> bool:
    """Starts jax.distributed when `config` asks for it (module docstring); True when this
    process is then one of several. Call before any JAX computation; a second call is a no-op."""
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    if not wanted(config):
        return False
    address, count, index = settings(config)
    # Collectives between processes on CPU (GPU and TPU have their own; this setting only
    # concerns the CPU backend).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=address, num_processes=count,
                                   process_id=index)
    except (ValueError, TypeError) as e:  # JAX's words when it cannot detect what is missing
        raise ConfigError(
            f"jax.distributed could not start ({' '.join(str(e).split())[:200]}); set "
            "coordinator_address, num_processes and process_id (or JAX_COORDINATOR_ADDRESS, "
            "JAX_NUM_PROCESSES, JAX_PROCESS_ID), or run under SLURM / Open MPI / Kubernetes / "
            "a TPU VM.") from e
    except RuntimeError as e:
        raise ConfigError(f"jax.distributed could not start: {' '.join(str(e).split())[:300]}; "
                          "call it before any JAX computation, and check that process 0 "
                          f"listens on {address or 'the coordinator address'}.") from e
    log.info("process %d of %d, %d local / %d global devices", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())
    return jax.process_count() > 1


def replicated_sharding() -> NamedSharding:
    """Every device of every process holds the whole value (on the data-parallel mesh that
    `parallel="jit"` runs over)."""
    return NamedSharding(create_mesh({"data": -1}), PartitionSpec())


def replicate_global(tree: Any, sharding: NamedSharding | None = None) -> Any:
    """A pytree of host or single-device values (the same on every process) as global arrays
    replicated on every device of `sharding` (all devices by default)."""
    sharding = sharding or replicated_sharding()

    def put(x):
        value = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree.map(put, tree)


def global_from_pmap(tree: Any, sharding: NamedSharding | None = None) -> Any:
    """A pmap-replicated pytree (leading axis = local devices) as global arrays replicated on
    all devices, without copying: each local device's copy becomes that device's shard."""
    sharding = sharding or replicated_sharding()

    def wrap(x):
        shape = x.shape[1:]
        by_device = {s.device: s.data.reshape(shape) for s in x.addressable_shards}
        return jax.make_array_from_single_device_arrays(
            shape, sharding, [by_device[d] for d in sharding.addressable_devices])

    return jax.tree.map(wrap, tree)


def local_copy(tree: Any) -> Any:
    """Each leaf's first addressable shard, reshaped to the leaf's per-replica shape: the
    value of a replicated global array, or of a pmap-replicated one, on one local device (so
    one process alone may compute with it)."""

    def first(x):
        data = x.addressable_shards[0].data
        return data.reshape(x.shape[1:]) if _pmap_stacked(x) else data  # a pmap shard: (1, ...)

    return jax.tree.map(first, tree)


def _pmap_stacked(x: jax.Array) -> bool:
    """Whether `x` is laid out as pmap's values are: axis 0 over the local devices. Told by
    its sharding, not its shape: on one device a stacked (1, ...) array has its shard's shape."""
    if isinstance(x.sharding, getattr(jax.sharding, "PmapSharding", ())):
        return True
    spec = getattr(x.sharding, "spec", ())
    return len(spec) > 0 and spec[0] is not None


def to_host(x: jax.Array) -> np.ndarray:
    """The value of an array, wherever its shards live (gathered from all processes when no
    process holds all of it)."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is True on any (a collective: all processes call it)."""
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


def sync(name: str) -> None:
    """Waits until every process reaches the barrier `name` (nothing with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
