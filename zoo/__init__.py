"""zoo: pure functional sequence models in JAX/Flax that train through one shared step.

Public API:
    zoo.create_model(name, **overrides) -> flax.linen.Module
    zoo.list_models(pattern="*") -> list[str]
    zoo.get_config(name, **overrides) -> the model's frozen config dataclass
    zoo.task_for_model(name, **settings) -> the task (loss, metrics) that trains model `name`
    zoo.create_train_state(model, tx, example_inputs, rng) -> a TrainState for the shared step
    zoo.load_trained(workdir, step=None) -> (registry spec, model, params, metadata)
"""
# Every name loads on first access (the models bring jax), so that `import zoo` stays light and
# can set the allocator before JAX's backend starts (zoo/host_malloc.py).
import importlib

from zoo.host_malloc import keep_freed_memory

keep_freed_memory()

_LAZY = {"create_model": "zoo.models", "get_config": "zoo.models", "list_models": "zoo.models",
         "task_for_model": "zoo.tasks", "create_train_state": "zoo.train.state",
         "load_trained": "zoo.train.workdir"}

__all__ = ["create_model", "create_train_state", "get_config", "list_models", "load_trained",
           "task_for_model"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
