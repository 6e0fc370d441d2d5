"""Tasks: what a batch means (loss and metrics). Looked up by name from the model registry."""
from zoo.tasks.base import Task, mean_metrics
from zoo.tasks.bidirectional_lm import BidirectionalLM
from zoo.tasks.causal_lm import CausalLM
from zoo.tasks.classification import Classification, Tagging

_TASKS: dict[str, Task] = {
    task.name: task for task in (CausalLM(), BidirectionalLM(), Classification(), Tagging())
}


def get_task(name: str) -> Task:
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; available tasks: {', '.join(sorted(_TASKS))}.")
    return _TASKS[name]


__all__ = ["Task", "get_task", "mean_metrics"]
