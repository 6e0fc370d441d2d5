"""Model FLOP utilisation: the loop's TFLOP/s per device and MFU beside tokens/s.

MFU (PaLM, appendix B) is the model's matmul FLOPs per second (`ModelSpec.train_flops`: no
rematerialisation, no padding) over the chip's datasheet peak for the compute dtype. Only dense
16-bit peaks are listed; elsewhere (CPUs, float32, unlisted chips) the loop logs TFLOP/s alone.
"""
from __future__ import annotations

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
