"""Global batches by index from a random-access source: deterministic, resumable, shardable.

Train streams are shuffled, repeated and drop the last partial batch of each pass. Eval streams
(`pad_remainder=True`) are one pass in source order whose last partial batch is filled up to the
global batch with padding rows: copies of the source's first items with every `WEIGHT_KEY`
value set to 0, so the metric sums (each weighted by it) count every real example exactly once.
"""
from __future__ import annotations

from typing import Any

import grain
import numpy as np

Batch = dict[str, np.ndarray]
# The field that weighs each item in the task's sums: (T,) per token, or () per example. Every
# pipeline's items have it; padding rows have it all 0.
WEIGHT_KEY = "weights"


class PaddedSource:
    """`source` followed by padding items up to a multiple of `multiple` items.

    Item j >= len(source) is a copy of item j % len(source) with its WEIGHT_KEY value 0: real
    inputs, so every model computes finite values on it, and zero weight, so the task's sums
    ignore it.
    """

    def __init__(self, source: Any, multiple: int):
        self.source, self.num_real = source, len(source)
        self.length = -(-self.num_real // multiple) * multiple

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, j: int) -> Batch:
        j = int(j)
        if not 0 <= j < self.length:
            raise IndexError(f"item {j} of a padded source of {self.length} items.")
        if j < self.num_real:
            return self.source[j]
        item = dict(self.source[j % self.num_real])
        if WEIGHT_KEY not in item:
            raise ValueError(f"padding needs a {WEIGHT_KEY!r} field in the items; they have "
                             f"{sorted(item)}.")
        item[WEIGHT_KEY] = np.zeros_like(item[WEIGHT_KEY])
        return item


class BatchStream:
    """Global batches by index, deterministic from the seed; this process's slice of each.

    `get(i)` is batch i. Under multi-host training every process computes the same global batch
    order and keeps rows [process_index * G/P, (process_index + 1) * G/P). Built on grain's
    random-access `MapDataset` (shuffled anew each epoch from the seed), so global batch `i` is a
    pure function of (seed, i): resuming at batch `i` needs nothing but `i`.

    pad_remainder: (eval, with shuffle=False and repeat=False) the last partial batch is padded
      to the global batch (`PaddedSource`) instead of dropped: `len` = ceil(items / batch).
    """

    def __init__(self, source: Any, global_batch_size: int, *, seed: int, shuffle: bool = True,
                 repeat: bool = True, pad_remainder: bool = False, process_index: int = 0,
                 process_count: int = 1):
        if global_batch_size % process_count:
            raise ValueError(
                f"global batch {global_batch_size} does not divide by {process_count} processes."
            )
        if pad_remainder and (shuffle or repeat):
            raise ValueError("pad_remainder is for one pass in order: shuffle=False, repeat=False.")
        if pad_remainder:
            source = PaddedSource(source, global_batch_size)
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


def eval_stream(source: Any, global_batch_size: int, *, seed: int = 0, process_index: int = 0,
                process_count: int = 1) -> BatchStream:
    """The eval stream of every pipeline: one pass in order, the last batch padded."""
    return BatchStream(source, global_batch_size, seed=seed, shuffle=False, repeat=False,
                       pad_remainder=True, process_index=process_index,
                       process_count=process_count)
