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


def keep_records_until(path: str, step: int) -> int:
    """Rewrites the JSON-lines file `path` without its records past `step` (and without lines
    that do not parse, such as one cut short by a kill); returns how many were dropped."""
    if not os.path.exists(path):
        return 0
    kept, dropped = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                keep = int(json.loads(line)["step"]) <= step
            except (ValueError, KeyError, TypeError):
                keep = False
            if keep:
                kept.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    if dropped:
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.writelines(kept)
        os.replace(path + ".tmp", path)
    return dropped


class MetricWriter:
    """`write(step, {"loss": 1.2, ...}, split="train")` appends one JSON line and TB scalars.

    `start_step`: the step the run starts from (its checkpoint's; 0 for a fresh one). What an
    earlier, interrupted run logged past it is dropped, from metrics.jsonl and (tensorboardX's
    `purge_step`) from TensorBoard, so that a resumed run's metrics hold each step once.
    """

    def __init__(self, workdir: str, enabled: bool = True, start_step: int | None = None):
        self.enabled = enabled
        if enabled:
            os.makedirs(workdir, exist_ok=True)
            jsonl = os.path.join(workdir, "metrics.jsonl")
            if start_step is not None:
                keep_records_until(jsonl, start_step)
            self._jsonl = open(jsonl, "a", encoding="utf-8")
            purge = None if start_step is None else start_step + 1
            self._tb = _summary_writer_class()(os.path.join(workdir, "tensorboard"),
                                               purge_step=purge)

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
