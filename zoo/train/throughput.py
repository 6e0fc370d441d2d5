"""Training throughput: the loop's tokens/s, TFLOP/s per device and model FLOP utilisation.

Throughput counts training steps only: `TrainingClock` leaves out each process's first step
(its compile) and the evaluations and checkpoints between steps. MFU (PaLM, appendix B) is
the model's matmul FLOPs per second (`ModelSpec.train_flops`: no rematerialisation, no
padding) over the chip's datasheet peak for the compute dtype. Only dense 16-bit peaks are
listed; elsewhere (CPUs, float32, unlisted chips) the loop logs TFLOP/s alone.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import jax

# Dense bf16/fp16 TFLOP/s per chip from the vendors' datasheets, matched against jax's
# `device_kind` in this order: the first substring found wins ("TPU v5 lite" before "TPU v5").
DATASHEET_TFLOPS = (
    ("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0),
    ("TPU v4", 275.0), ("TPU v5 lite", 197.0), ("TPU v5", 459.0), ("TPU v6 lite", 918.0),
)


def peak_tflops(device_kind: str, dtype: str) -> float | None:
    """The datasheet's dense TFLOP/s of one `device_kind` chip in `dtype`, None if unlisted."""
    if dtype not in ("bfloat16", "float16"):
        return None
    return next((t for name, t in DATASHEET_TFLOPS if name in device_kind), None)


def flops_metrics(flops: float, seconds: float, num_devices: int,
                  peak: float | None) -> dict[str, float]:
    """`flops` model FLOPs done by `num_devices` chips in `seconds` -> {"tflops_per_device"}
    and, with a `peak` (TFLOP/s per chip), {"mfu"} as a fraction of it."""
    per_device = flops / seconds / num_devices / 1e12
    return {"tflops_per_device": per_device, **({"mfu": per_device / peak} if peak else {})}


class TrainingClock:
    """Seconds spent training between log steps: from the end of this process's first step
    (which compiles), not counting the `paused()` spans (evaluation, checkpoints).

        clock = TrainingClock(start_step)
        ... after each step: clock.stepped(step, state) ... with clock.paused(state): evaluate
        steps, seconds = clock.window(step)  # since the last window; steps 0: none measured
    """

    def __init__(self, step: int, now: Callable[[], float] = time.perf_counter):
        self.now, self.first_step = now, step + 1
        self.last_step, self.last_time = self.first_step, None

    def stepped(self, step: int, state: Any) -> None:
        if step == self.first_step:  # compiled and ran: time from here
            jax.block_until_ready(state)
            self.last_time = self.now()

    @contextlib.contextmanager
    def paused(self, state: Any):
        jax.block_until_ready(state)  # the steps dispatched so far count as training
        t0 = self.now()
        try:
            yield
        finally:
            if self.last_time is not None:
                self.last_time += self.now() - t0

    def window(self, step: int) -> tuple[int, float]:
        """(steps, seconds) since the last window (or the first step), then a new window."""
        now = self.now()
        steps, seconds = step - self.last_step, now - (self.last_time or now)
        self.last_step, self.last_time = step, now
        return steps, seconds
