"""Length bucketing: train batches of examples of similar length, padded only as far as needed.

Epoch e (seed s) is a shuffled order of the examples (`np.random.default_rng((s, e))`), cut into
windows of `window_batches` global batches; each window is sorted by example length (ties keep
the shuffled order) and cut into batches, and the epoch's batches are then shuffled. So global
batch i is a pure function of (seed, i), as with `BatchStream`: resuming needs only i. Every
example is in at most one batch per epoch: exactly one when the global batch G divides the
number of examples N, else the last N mod G of the epoch's order sit that epoch out.

A batch's sequences are cut to the smallest bucket length (`bucket_lengths`: seq_len / 8, / 4,
/ 2 and seq_len, rounded up to a multiple of 8) that holds its longest example, so the step sees
at most four shapes (four compilations) whatever the data. Under several processes each reads
only its rows [p * G/P, (p + 1) * G/P) of a global batch, and all cut to the length the whole
global batch needs (from the lengths, never from the other processes' rows).
"""
from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import numpy as np

from zoo.data.pipelines.batch_stream import Batch

WINDOW_BATCHES = 16  # global batches sorted together: more groups lengths closer, less random


def bucket_lengths(seq_len: int, num_buckets: int = 4, multiple: int = 8) -> list[int]:
    """The lengths batches are padded to: seq_len / 2^k (k < num_buckets), rounded up to a
    multiple of `multiple` and at most seq_len, ascending."""
    lengths = set()
    for k in range(num_buckets):
        size = -(-seq_len // 2**k)  # ceil(seq_len / 2^k)
        lengths.add(min(seq_len, -(-size // multiple) * multiple))
    return sorted(lengths)


class LengthBucketedBatches:
    """Callable: global batch index -> this process's rows (G/P, ...) of that batch.

    source: random access to examples whose sequence fields are padded to seq_len.
    groups: {name: (the batch keys cut together, (N,) real length of each example)}; e.g.
      {"tokens": (("inputs", "targets", "weights"), lengths)}. Each group is cut to the bucket
      length of its longest example in the batch; examples are sorted by their longest group.
    """

    def __init__(self, source: Any, groups: Mapping[str, tuple[Sequence[str], np.ndarray]],
                 global_batch_size: int, seq_len: int, *, seed: int,
                 window_batches: int = WINDOW_BATCHES, process_index: int = 0,
                 process_count: int = 1):
        if global_batch_size % process_count:
            raise ValueError(f"global batch {global_batch_size} does not divide by "
                             f"{process_count} processes.")
        self.num_items = len(source)
        if self.num_items < global_batch_size:
            raise ValueError(f"{self.num_items} examples make no batch of {global_batch_size}.")
        self.source, self.seq_len, self.seed = source, seq_len, seed
        self.groups = {name: (tuple(keys), np.asarray(lengths, np.int64))
                       for name, (keys, lengths) in groups.items()}
        self.sort_key = np.max([lengths for _, lengths in self.groups.values()], axis=0)  # (N,)
        self.global_batch_size, self.window_batches = global_batch_size, window_batches
        self.batches_per_epoch = self.num_items // global_batch_size
        local = global_batch_size // process_count
        self.rows = slice(process_index * local, (process_index + 1) * local)
        self.buckets = np.asarray(bucket_lengths(seq_len))
        self._epoch: tuple[int, np.ndarray] | None = None

    def _epoch_batches(self, epoch: int) -> np.ndarray:
        """(batches_per_epoch, G) example indices of epoch `epoch`, in the epoch's batch order."""
        if self._epoch is not None and self._epoch[0] == epoch:
            return self._epoch[1]
        rng = np.random.default_rng((self.seed, epoch))
        order = rng.permutation(self.num_items)[:self.batches_per_epoch * self.global_batch_size]
        window = self.window_batches * self.global_batch_size
        for lo in range(0, len(order), window):
            part = order[lo:lo + window]
            order[lo:lo + window] = part[np.argsort(self.sort_key[part], kind="stable")]
        batches = order.reshape(self.batches_per_epoch, self.global_batch_size)
        batches = batches[rng.permutation(self.batches_per_epoch)]
        self._epoch = (epoch, batches)
        return batches

    def batch_indices(self, index: int) -> np.ndarray:
        """(G,) example indices of global batch `index`."""
        epoch, within = divmod(int(index), self.batches_per_epoch)
        return self._epoch_batches(epoch)[within]

    def padded_length(self, lengths: np.ndarray) -> int:
        """The smallest bucket length holding every one of `lengths` (at least 1)."""
        longest = max(int(np.max(lengths)), 1)
        return int(self.buckets[np.searchsorted(self.buckets, min(longest, self.seq_len))])

    def __call__(self, index: int) -> Batch:
        indices = self.batch_indices(index)
        items = [self.source[int(j)] for j in indices[self.rows]]
        batch = {key: np.stack([item[key] for item in items]) for key in items[0]}
        for keys, lengths in self.groups.values():
            length = self.padded_length(lengths[indices])
            for key in keys:
                batch[key] = batch[key][:, :length]
        return batch


class BucketedStream:
    """A train stream (`BatchStream`'s interface: `get(i)`, `local_batches`, `signature`) of
    length-bucketed batches, repeated without end. See `LengthBucketedBatches`."""

    def __init__(self, source: Any, groups: Mapping[str, tuple[Sequence[str], np.ndarray]],
                 global_batch_size: int, seq_len: int, *, seed: int,
                 window_batches: int = WINDOW_BATCHES, process_index: int = 0,
                 process_count: int = 1):
        self.batches = LengthBucketedBatches(
            source, groups, global_batch_size, seq_len, seed=seed, window_batches=window_batches,
            process_index=process_index, process_count=process_count)
        self.local_batches: grain.MapDataset = grain.MapDataset.range(sys.maxsize).map(
            self.batches)
        self.global_batch_size = global_batch_size
        self.process_index, self.process_count = process_index, process_count
        self.signature = {"items": len(source), "global_batch_size": global_batch_size,
                          "seed": seed, "process_index": process_index,
                          "process_count": process_count,
                          "bucket_by_length": {"window_batches": window_batches,
                                               "lengths": bucket_lengths(seq_len)}}

    def __len__(self) -> int:
        return len(self.local_batches)

    def get(self, index: int) -> Batch:
        """This process's rows of global batch `index`."""
        return self.local_batches[index]
