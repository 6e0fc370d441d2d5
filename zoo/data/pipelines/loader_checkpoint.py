"""The train iterator's state as one item of an orbax checkpoint, one small file per process.

grain's own orbax handler writes `<step>/data/process_<i>-of-<n>.json` (i, n: JAX's process
index and count) from `TrainIterator.get_state()` and restores it with `set_state()`, as
MaxText saves its grain iterators. Use it beside the other items of a `CheckpointManager`:

    manager = ocp.CheckpointManager(directory, item_handlers={
        "state": ocp.StandardCheckpointHandler(), **data_item_handlers()})
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               **data_save_args(iterator)))
    restore_data(manager, step, iterator)   # False: the checkpoint has no data item
"""
from __future__ import annotations

import os
from typing import Any

import grain
import orbax.checkpoint as ocp

from zoo.data.pipelines.loader import TrainIterator

DATA_ITEM = "data"


def data_item_handlers() -> dict[str, Any]:
    """{DATA_ITEM: grain's handler}, to merge into a CheckpointManager's `item_handlers`."""
    return {DATA_ITEM: grain.checkpoint.CheckpointHandler()}


def data_save_args(iterator: TrainIterator) -> dict[str, Any]:
    """{DATA_ITEM: the save args of `iterator`'s state}, to merge into an
    `ocp.args.Composite(...)` for `CheckpointManager.save`."""
    return {DATA_ITEM: grain.checkpoint.CheckpointSave(iterator)}


def has_data(manager: Any, step: int) -> bool:
    """Whether checkpoint `step` of `manager` holds a data item (checkpoints written before the
    iterator state was saved do not)."""
    return os.path.isdir(os.path.join(str(manager.directory), str(step), DATA_ITEM))


def restore_data(manager: Any, step: int, iterator: TrainIterator) -> bool:
    """Sets `iterator` to the state saved in checkpoint `step` (it then continues with the
    next batch after the last one the saved run consumed) -> True; False, the iterator
    unchanged, where the checkpoint has no data item."""
    if not has_data(manager, step):
        return False
    manager.restore(step, args=ocp.args.Composite(
        **{DATA_ITEM: grain.checkpoint.CheckpointRestore(iterator)}))
    return True
