"""Padding id rows to one length (NumPy only: decoding imports it without the datasets)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zoo.special_tokens import PAD_ID


def pad_rows(rows: Sequence[np.ndarray], seq_len: int) -> np.ndarray:
    """(N, seq_len) int32: row i is rows[i] followed by PAD_ID."""
    out = np.full((len(rows), seq_len), PAD_ID, np.int32)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out
