"""Tasks: what a batch means (loss and metrics). Looked up by name from the model registry."""
from typing import Any

from zoo.tasks.base import Task, mean_metrics
from zoo.tasks.bidirectional_lm import BidirectionalLM
from zoo.tasks.causal_lm import CausalLM
from zoo.tasks.classification import Classification, Tagging
from zoo.tasks.masked_lm import MaskedLM
from zoo.tasks.seq2seq import Seq2Seq

_TASKS: dict[str, Task] = {
    task.name: task
    for task in (CausalLM(), BidirectionalLM(), MaskedLM(), Classification(), Tagging(), Seq2Seq())
}


def get_task(name: str, model_config: Any = None) -> Task:
    """The task `name`; tasks with hyperparameters (label smoothing, masking rates) read them
    from `model_config` through their `configure` method."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; available tasks: {', '.join(sorted(_TASKS))}.")
    task = _TASKS[name]
    if model_config is not None and hasattr(task, "configure"):
        task = task.configure(model_config)
    return task


__all__ = ["Task", "get_task", "mean_metrics"]
