"""Checkpoints through orbax's CheckpointManager: train state + a JSON record of the run, verified
on every restore.

Layout: <workdir>/checkpoints/<step>/{state, meta}. `state` is the pytree {step, params,
opt_state, rng} of global arrays (replicated or sharded over the devices of all processes);
every process calls `save` and orbax writes each shard once, from the process that holds it
(replicated arrays from process 0), so nothing is gathered to one host (saving from process 0
alone would need sharded state gathered there, and orbax's save is a collective every process
enters anyway; a pmap state is wrapped as a replicated global array without a copy,
`zoo.train.distributed.global_from_pmap`). A restore reads into the shardings of the target it
is given (any device count or mesh), so a checkpoint written on 8 devices restores on 4 or 1.
`meta` records the model name and config (to refuse resuming a different model), the data
position and a fingerprint of every array of `state`. Writes are atomic: orbax renames a
finished temp dir, so a failed write (disk full, killed) leaves the earlier checkpoints as they
were.

A restore checks what orbax read against the fingerprints and for non-finite values.
`restore_latest_intact` walks back from the newest step: a damaged one (unreadable metadata,
orbax failing to read it, a fingerprint mismatch, NaN / inf) is reported, moved to
<workdir>/checkpoints_damaged/ when the caller owns the workdir, and the next older is tried.
"""
from __future__ import annotations

import collections
import errno
import os
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from zoo.data.pipelines import loader_checkpoint
from zoo.errors import CheckpointError, WorkdirError
from zoo.train.distributed import sync, to_host

DAMAGED_DIR = "checkpoints_damaged"


class DamagedCheckpoint(CheckpointError):
    """One checkpoint step cannot be trusted (raised by `Checkpointer.restore`)."""


def _as_uint32(x: jax.Array) -> jax.Array:  # (N,) raw bits of a flattened leaf
    x = x.reshape(-1)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
    return jax.lax.bitcast_convert_type(x, width).reshape(-1).astype(jnp.uint32)


@jax.jit
def _fingerprints(leaves: list[jax.Array]) -> jax.Array:  # (L, 2) uint32
    """Two position-weighted sums of each leaf's bits (mod 2^32): any single changed element
    changes the first, and scattered changes are caught by the second with odds 2^-32."""
    rows = []
    for x in leaves:
        bits = _as_uint32(x)
        index = jnp.arange(bits.shape[0], dtype=jnp.uint32)
        first = jnp.sum(bits * (2 * index + 1), dtype=jnp.uint32)
        second = jnp.sum((bits ^ (index * jnp.uint32(0x9E3779B9))) * jnp.uint32(0x85EBCA6B),
                         dtype=jnp.uint32)
        rows.append(jnp.stack([first, second]))
    return jnp.stack(rows) if rows else jnp.zeros((0, 2), jnp.uint32)


def fingerprint(state: Any) -> dict[str, list[int]]:
    """{leaf path: [two uint32 sums]} of a pytree of arrays, computed where the arrays live."""
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    if not flat:
        return {}
    paths, leaves = zip(*flat)
    sums = to_host(_fingerprints(list(leaves)))
    return {jax.tree_util.keystr(p): [int(a), int(b)] for p, (a, b) in zip(paths, sums)}


@jax.jit
def _finite(leaves: list[jax.Array]) -> jax.Array:  # (L,) bool
    return jnp.stack([jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact)
                      else jnp.asarray(True) for x in leaves])


def non_finite_leaves(state: Any) -> list[str]:
    """Paths of the floating-point leaves of `state` holding NaN or inf."""
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    if not flat:
        return []
    ok = to_host(_finite([x for _, x in flat]))
    return [jax.tree_util.keystr(p) for (p, _), good in zip(flat, ok) if not good]


def _restore_target(x: Any) -> jax.ShapeDtypeStruct:
    """Shape, dtype and sharding to restore a leaf into: the leaf's own sharding (a global
    array's, whatever mesh wrote the checkpoint), else this process's first device."""
    target = ocp.utils.to_shape_dtype_struct(x)
    if getattr(target, "sharding", None) is None:
        target = jax.ShapeDtypeStruct(target.shape, target.dtype,
                                      sharding=jax.sharding.SingleDeviceSharding(
                                          jax.local_devices()[0]))
    return target


def _shapes(tree: Any) -> collections.Counter:
    return collections.Counter((tuple(x.shape), str(np.dtype(x.dtype)))
                               for x in jax.tree.leaves(tree))


class Checkpointer:
    """`read_only=True` (generate, evaluate, warm start) never creates or moves anything."""

    def __init__(self, workdir: str, *, max_to_keep: int = 3, read_only: bool = False):
        self.workdir = os.path.abspath(workdir)
        self.directory = os.path.join(self.workdir, "checkpoints")
        self.read_only = read_only
        if read_only and not os.path.isdir(self.directory):
            raise CheckpointError(
                f"no checkpoint in {self.workdir} ({self.directory} does not exist); train "
                f"first with python -m experiments.train --config ... --workdir {workdir}")
        self.manager = ocp.CheckpointManager(
            self.directory,
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler(),
                           **loader_checkpoint.data_item_handlers()},
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=not read_only, enable_async_checkpointing=False),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps(), reverse=True)

    def save(self, step: int, state: Any, meta: dict[str, Any], data: Any = None) -> None:
        """Saves `state` (a pytree of arrays), `meta` (JSON-able, plus the state's
        fingerprints) and the train iterator `data`'s state (one small file per process) as
        checkpoint `step`. WorkdirError, naming the directory, when the disk is full or
        read-only; the earlier checkpoints stay intact."""
        meta = {**meta, "fingerprints": fingerprint(state)}
        try:
            extra = loader_checkpoint.data_save_args(data) if data is not None else {}
            self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                            meta=ocp.args.JsonSave(meta), **extra))
            self.manager.wait_until_finished()
        except OSError as e:
            raise WorkdirError(
                f"could not write checkpoint {step} to {self.directory}: {e.strerror or e}. "
                f"Earlier checkpoints ({', '.join(map(str, self.all_steps())) or 'none'}) are "
                "intact; " + ("free disk space" if e.errno == errno.ENOSPC
                              else "make the workdir writable") + " and rerun to resume.") from e

    def restore_meta(self, step: int) -> dict[str, Any]:
        try:
            meta = self.manager.restore(step, args=ocp.args.Composite(
                meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:  # orbax raises whatever the file system or JSON parser raised
            raise DamagedCheckpoint(f"its metadata cannot be read ({type(e).__name__}: "
                                    f"{str(e).splitlines()[0] if str(e) else ''})") from e
        if not isinstance(meta, dict):
            raise DamagedCheckpoint(f"its metadata is {type(meta).__name__}, not a record")
        return meta

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """Checkpoint `step` restored into the structure (and dtypes / shapes) of
        `abstract_state`, verified; CheckpointError when it is another run's state,
        DamagedCheckpoint when it cannot be trusted."""
        meta = self.restore_meta(step)
        try:
            saved = self.manager.item_metadata(step)["state"].tree
        except Exception as e:
            raise DamagedCheckpoint(f"its array metadata cannot be read ({type(e).__name__})") from e
        if _shapes(saved) != _shapes(abstract_state):
            raise CheckpointError(
                f"checkpoint {step} in {self.directory} holds arrays of other shapes than this "
                "run's state (a changed optimizer setting such as grad_clip_norm or "
                "weight_decay, or another model); rerun with the config that wrote it, or use a "
                "fresh --workdir.")
        abstract = jax.tree.map(_restore_target, abstract_state)
        try:
            state = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract)))["state"]
        except Exception as e:
            raise DamagedCheckpoint(f"orbax could not read its arrays ({type(e).__name__}: "
                                    f"{str(e).splitlines()[0] if str(e) else ''})") from e
        expected = meta.get("fingerprints")
        if expected is not None and not isinstance(expected, dict):
            raise DamagedCheckpoint(f"its fingerprints are a {type(expected).__name__}, not a "
                                    "record")
        if expected is not None:  # checkpoints written before fingerprints have none
            found = fingerprint(state)
            changed = sorted(k for k in expected if found.get(k) != expected[k])
            if changed or set(found) != set(expected):
                raise DamagedCheckpoint(f"{len(changed)} array(s) differ from what was written "
                                        f"(first: {(changed or sorted(set(found) ^ set(expected)))[0]})")
        bad = non_finite_leaves(state)
        if bad:
            raise DamagedCheckpoint(f"{len(bad)} array(s) hold NaN or inf (first: {bad[0]})")
        return state, meta

    def restore_latest_intact(self, abstract_state: Any,
                              check_meta: Callable[[dict[str, Any]], None] = lambda meta: None
                              ) -> tuple[int, Any, dict[str, Any]] | None:
        """(step, state, meta) of the newest checkpoint that verifies, or None when there is
        none at all. `check_meta` raises (CheckpointError) for a checkpoint of another model;
        that is the user's mistake, not damage, so it stops the search. Damaged steps are
        reported on stderr and, unless read-only, moved aside."""
        steps = self.all_steps()
        damaged = []
        for step in steps:
            try:
                meta = self.restore_meta(step)
                check_meta(meta)
                state, meta = self.restore(step, abstract_state)
            except DamagedCheckpoint as e:
                damaged.append(step)
                self._report_damaged(step, e)
                continue
            return step, state, meta
        if damaged:
            where = (f"moved to {os.path.join(self.workdir, DAMAGED_DIR)}" if not self.read_only
                     else f"left in {self.directory}")
            raise CheckpointError(
                f"every checkpoint in {self.directory} is damaged (steps "
                f"{', '.join(map(str, damaged))}, {where}); rerun to train from scratch.")
        return None

    def _report_damaged(self, step: int, error: DamagedCheckpoint) -> None:
        action = "skipped it"
        if not self.read_only:
            # Every process finds the same damage; process 0 alone moves it, the others wait.
            aside = os.path.join(self.workdir, DAMAGED_DIR, str(step))
            suffix = 1
            while os.path.exists(aside):
                aside, suffix = os.path.join(self.workdir, DAMAGED_DIR, f"{step}.{suffix}"), suffix + 1
            if jax.process_index() == 0:
                os.makedirs(os.path.dirname(aside), exist_ok=True)
                os.rename(os.path.join(self.directory, str(step)), aside)
            sync(f"zoo-damaged-checkpoint-{step}")
            self.manager.reload()
            action = f"moved it to {aside}"
        print(f"warning: checkpoint {step} in {self.directory} is damaged: {error}; {action} "
              "and trying the next older checkpoint.", file=sys.stderr, flush=True)

    def saved_state(self, step: int) -> Any:
        """Checkpoint `step`'s state as saved (host arrays in the saved structure), unverified:
        for inspecting a checkpoint, not for resuming one."""
        return self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore()))["state"]

    def restore_data(self, step: int, iterator: Any) -> bool:
        """Sets the train iterator to checkpoint `step`'s saved iterator state -> True; False
        (the iterator unchanged, continuing from the data position in the metadata) where the
        checkpoint has none (older checkpoints) or none for this process count."""
        try:
            return loader_checkpoint.restore_data(self.manager, step, iterator)
        except (ValueError, OSError, KeyError) as e:
            print(f"warning: the data iterator state of checkpoint {step} was not restored "
                  f"({type(e).__name__}: {e}); continuing from its data position.",
                  file=sys.stderr, flush=True)
            return False

    def close(self) -> None:
        self.manager.close()
