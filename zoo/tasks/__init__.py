"""Tasks: what a batch means (loss and metrics). Looked up by name from the model registry."""
from zoo.tasks.base import Task, mean_metrics
from zoo.tasks.causal_lm import CausalLM

_TASKS: dict[str, Task] = {"causal_lm": CausalLM()}


def get_task(name: str) -> Task:
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; available tasks: {', '.join(sorted(_TASKS))}.")
    return _TASKS[name]


__all__ = ["Task", "get_task", "mean_metrics"]
