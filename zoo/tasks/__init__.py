"""Tasks: what a batch means (loss and metrics). Looked up by name from the model registry."""
import dataclasses
from typing import Any

from zoo.models import get_config, get_spec
from zoo.tasks.base import Task, mean_metrics, task_settings
from zoo.tasks.bidirectional_lm import BidirectionalLM
from zoo.tasks.causal_lm import CausalLM
from zoo.tasks.classification import Classification, Tagging
from zoo.tasks.masked_lm import MaskedLM
from zoo.tasks.seq2seq import Seq2Seq

_TASKS: dict[str, Task] = {
    task.name: task
    for task in (CausalLM(), BidirectionalLM(), MaskedLM(), Classification(), Tagging(), Seq2Seq())
}


def get_task(name: str, model_config: Any = None, **settings: Any) -> Task:
    """The task `name` with its run `settings` (see `task_settings`), bound to `model_config`
    (vocabulary size, special token ids) when one is given."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; available tasks: {', '.join(sorted(_TASKS))}.")
    task = _TASKS[name]
    unknown = sorted(set(settings) - set(task_settings(task)))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown} for task {name!r}; its settings: "
                         f"{sorted(task_settings(task)) or 'none'}.")
    task = dataclasses.replace(task, **settings)
    return task.configure(model_config) if model_config is not None else task


def task_for_model(model_name: str, model_config: Any = None, **settings: Any) -> Task:
    """The task that trains registered model `model_name`, with the preset's task defaults
    (`register_model(task_settings=...)`) under `settings`, bound to `model_config` (default
    the preset's)."""
    spec = get_spec(model_name)
    model_config = get_config(model_name) if model_config is None else model_config
    return get_task(spec.task, model_config, **{**spec.task_settings, **settings})


def get_task_settings(name: str) -> dict[str, Any]:
    """{setting: default} of task `name`."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; available tasks: {', '.join(sorted(_TASKS))}.")
    return task_settings(_TASKS[name])


__all__ = ["Task", "get_task", "get_task_settings", "mean_metrics", "task_for_model",
           "task_settings"]
