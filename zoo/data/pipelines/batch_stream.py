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
    order and reads only its rows [process_index * G/P, (process_index + 1) * G/P) of each, so
    the processes together see every example once per epoch. Built on grain's random-access
    `MapDataset` (shuffled anew each epoch from the seed), so global batch `i` is a pure function
    of (seed, i): resuming at batch `i` needs nothing but `i`. `local_batches` is this process's
    batches as a MapDataset; `zoo.data.pipelines.loader.TrainIterator` iterates it with
    background prefetch and worker processes, its state checkpointable.

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
        local_size = global_batch_size // process_count
        # Global batch i is items [i*G, (i+1)*G) of the (shuffled, repeated) item order; its rows
        # [p*G/P, (p+1)*G/P) are local batch i*P + p of the same order cut into G/P-item batches.
        # So each process reads only its own rows, and together they read each global batch.
        local = ds.batch(local_size, drop_remainder=True)
        if not repeat:  # a pass ends at its last whole global batch
            local = local[:len(ds) // global_batch_size * process_count]
        self.local_batches: grain.MapDataset = local[process_index::process_count]
        self.global_batch_size = global_batch_size
        self.process_index, self.process_count = process_index, process_count
        # What a saved iterator state must match to resume this stream (zoo.data.pipelines.loader).
        self.signature = {"items": len(source), "global_batch_size": global_batch_size,
                          "seed": seed if shuffle else None, "process_index": process_index,
                          "process_count": process_count}

    def __len__(self) -> int:
        return len(self.local_batches)

    def get(self, index: int) -> Batch:
        """This process's rows of global batch `index`: (G/P, ...) per field."""
        return self.local_batches[index]


def eval_stream(source: Any, global_batch_size: int, *, seed: int = 0, process_index: int = 0,
                process_count: int = 1) -> BatchStream:
    """The eval stream of every pipeline: one pass in order, the last batch padded."""
    return BatchStream(source, global_batch_size, seed=seed, shuffle=False, repeat=False,
                       pad_remainder=True, process_index=process_index,
                       process_count=process_count)
