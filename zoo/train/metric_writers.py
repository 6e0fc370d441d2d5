"""Metrics to the workdir: JSON lines (metrics.jsonl) and TensorBoard event files (no TensorFlow)."""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Any


def _summary_writer_class() -> type:
    """tensorboardX's SummaryWriter, imported without PyTorch when this process has not
    imported it: tensorboardX imports torch whenever it is installed, only to accept torch
    tensors, which cost a training launch 1.5-3 s and 180 MB of memory (measured 2026-12-01),
    and the zoo writes Python floats. `sys.modules["torch"] = None` makes `import torch` raise
    ImportError, which tensorboardX handles; torch stays importable afterwards."""
    hide_torch = "torch" not in sys.modules
    if hide_torch:
        sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        from tensorboardX import SummaryWriter
    finally:
        if hide_torch:
            del sys.modules["torch"]
    return SummaryWriter


class MetricWriter:
    """`write(step, {"loss": 1.2, ...}, split="train")` appends one JSON line and TB scalars."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled
        if enabled:
            os.makedirs(workdir, exist_ok=True)
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
            self._tb = _summary_writer_class()(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: dict[str, Any], split: str = "train") -> None:
        if not self.enabled:
            return
        values = {k: float(v) for k, v in metrics.items()}
        record = {"step": int(step), "split": split,
                  **{k: (v if math.isfinite(v) else str(v)) for k, v in values.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for k, v in values.items():
            self._tb.add_scalar(f"{split}/{k}", v, int(step))
        self._tb.flush()

    def __enter__(self) -> "MetricWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()  # also when the run fails: tensorboardX's own exit hook cannot flush then

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tb.close()
