"""Checkpoints through orbax's CheckpointManager: train state + a JSON record of the run.

Layout: <workdir>/checkpoints/<step>/{state, meta}. `state` is the unreplicated pytree
{step, params, opt_state, rng}; `meta` records the model name and config (to refuse resuming a
different model) and the data position. Writes are atomic: orbax renames a finished temp dir.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, workdir: str, *, max_to_keep: int = 3):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Saves `state` (a pytree of arrays) and `meta` (JSON-able) as checkpoint `step`."""
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                    meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        self.manager.wait_until_finished()

    def restore_meta(self, step: int) -> dict[str, Any]:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """Restores checkpoint `step` into the structure (and dtypes/shapes) of `abstract_state`."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                    meta=ocp.args.JsonRestore()),
        )
        return restored["state"], restored["meta"]

    def close(self) -> None:
        self.manager.close()
