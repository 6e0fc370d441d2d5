"""Global batches by index from a random-access source: deterministic, resumable, shardable."""
from __future__ import annotations

from typing import Any

import grain
import numpy as np

Batch = dict[str, np.ndarray]


class BatchStream:
    """Global batches by index, deterministic from the seed; this process's slice of each.

    `get(i)` is batch i. Under multi-host training every process computes the same global batch
    order and keeps rows [process_index * G/P, (process_index + 1) * G/P). Built on grain's
    random-access `MapDataset` (shuffled anew each epoch from the seed), so global batch `i` is a
    pure function of (seed, i): resuming at batch `i` needs nothing but `i`.
    """

    def __init__(self, source: Any, global_batch_size: int, *, seed: int, shuffle: bool = True,
                 repeat: bool = True, process_index: int = 0, process_count: int = 1):
        if global_batch_size % process_count:
            raise ValueError(
                f"global batch {global_batch_size} does not divide by {process_count} processes."
            )
        ds = grain.MapDataset.source(source)
        if shuffle:
            ds = ds.shuffle(seed=seed)
        if repeat:
            ds = ds.repeat()
        self._batches = ds.batch(global_batch_size, drop_remainder=True)
        self.global_batch_size = global_batch_size
        self._rows = slice(process_index * global_batch_size // process_count,
                           (process_index + 1) * global_batch_size // process_count)

    def __len__(self) -> int:
        return len(self._batches)

    def get(self, index: int) -> Batch:
        return {k: v[self._rows] for k, v in self._batches[index].items()}
