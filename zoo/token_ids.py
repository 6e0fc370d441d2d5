"""Checking token ids before a tokenizer decodes them (every tokenizer's `decode` starts so)."""
from __future__ import annotations

from typing import Any

import numpy as np


def checked_ids(ids: Any, vocab_size: int) -> np.ndarray:
    """`ids` (a list, numpy or jax array of any shape) read flat -> (N,) integers; ValueError
    naming the first id that is not an integer in [0, vocab_size)."""
    ids = np.asarray(ids).reshape(-1)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"token ids must be integers, got dtype {ids.dtype}.")
    bad = (ids < 0) | (ids >= vocab_size)
    if bad.any():
        raise ValueError(f"token id {ids[np.argmax(bad)].item()} is outside [0, {vocab_size}).")
    return ids
