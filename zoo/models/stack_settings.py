"""How a transformer family's block stack runs, shared by GPT, BERT and the encoder-decoder."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class StackSettings:
    """Fields every transformer config has (they change speed and memory, never the math)."""

    scan_layers: bool = False  # the block stack as one nn.scan: compiles once, not L times
    scan_unroll: int = 1  # layers per scan iteration (scan_layers=True)
    remat: str = "none"  # what blocks keep for the backward pass: "none" / "dots" / "full"
    compute_dtype: str = "float32"  # mixed precision (zoo.nn.precision): "bfloat16" on GPU/TPU
    param_dtype: str = "float32"
    attention_implementation: str | None = None  # None (auto) / "cudnn" / "pallas" / "xla" / ...
