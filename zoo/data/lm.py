"""Language-model batches from a text dataset: deterministic, resumable, shardable.

A split's texts are tokenized into one stream and cut into non-overlapping windows of T + 1
tokens; `inputs` = window[:-1], `targets` = window[1:]. Training batches come from grain's
random-access `MapDataset` (shuffled anew each epoch from the seed), so global batch `i` is a
pure function of (seed, i): resuming at batch `i` needs nothing but `i`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds

from zoo.data import corpus
from zoo.data.bundle import Data
from zoo.data.sharding import shard_batch  # noqa: F401  (re-exported)
from zoo.data.tokenizers import get_tokenizer

Batch = dict[str, np.ndarray]


def load_texts(dataset: str, split: str, data_dir: str | None = None,
               text_key: str = "text") -> list[str]:
    """All texts of `split`: the embedded "zoo_text" corpus, or any TFDS dataset by name.

    Real TFDS datasets (e.g. "tiny_shakespeare", "lm1b") are read with `tfds.data_source`
    (array_record, no TensorFlow) from `data_dir`, where they must already be prepared.
    """
    if dataset == "zoo_text":
        return corpus.load_texts(split, data_dir)
    try:
        source = tfds.data_source(dataset, split=split, data_dir=data_dir)
    except Exception as e:  # TFDS raises several types for "not found / not prepared"
        raise ValueError(
            f"could not open TFDS dataset {dataset!r} split {split!r} in data_dir={data_dir!r} "
            f"({type(e).__name__}: {e}). Prepare it there in array_record format, or use "
            "--config.dataset=zoo_text (the embedded corpus)."
        ) from e
    texts = []
    for i in range(len(source)):
        value = source[i][text_key]
        texts.append(value.decode("utf-8") if isinstance(value, bytes) else str(value))
    return texts


def token_stream(texts: Sequence[str], tokenizer: Any, separator: str = "\n\n") -> np.ndarray:
    """Tokenizes and concatenates the texts (separated by `separator`) -> (N,) int32."""
    return tokenizer.encode(separator.join(texts)).astype(np.int32)


def unigram_entropy(stream: np.ndarray, vocab_size: int) -> float:
    """Entropy (nats) of the token frequency distribution: the loss of the best context-free model."""
    counts = np.bincount(stream, minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


class LMWindows:
    """Random-access windows: item i -> {"inputs", "targets": (T,) int32, "weights": (T,) float32}."""

    def __init__(self, stream: np.ndarray, seq_len: int):
        if len(stream) < seq_len + 1:
            raise ValueError(f"a stream of {len(stream)} tokens is too short for seq_len={seq_len}.")
        self.stream, self.seq_len = stream, seq_len

    def __len__(self) -> int:
        return (len(self.stream) - 1) // self.seq_len

    def __getitem__(self, i: int) -> Batch:
        start = int(i) * self.seq_len
        window = self.stream[start:start + self.seq_len + 1]
        return {"inputs": window[:-1], "targets": window[1:],
                "weights": np.ones(self.seq_len, np.float32)}


class BatchStream:
    """Global batches by index, deterministic from the seed; this process's slice of each.

    `get(i)` is batch i. Under multi-host training every process computes the same global batch
    order and keeps rows [process_index * G/P, (process_index + 1) * G/P).
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


def create_lm_data(config: Any, global_batch_size: int, *, process_index: int = 0,
                   process_count: int = 1) -> Data:
    """Language-model windows of the config's dataset; baseline: unigram entropy of train.

    Config fields: dataset, data_dir, tokenizer, eval_split, seq_len, seed.
    """
    tokenizer = get_tokenizer(config.tokenizer)
    train = token_stream(load_texts(config.dataset, "train", config.data_dir), tokenizer)
    valid = token_stream(load_texts(config.dataset, config.eval_split, config.data_dir), tokenizer)
    global_batch = global_batch_size
    train_stream = BatchStream(LMWindows(train, config.seq_len), global_batch, seed=config.seed,
                               process_index=process_index, process_count=process_count)
    eval_stream = BatchStream(LMWindows(valid, config.seq_len), global_batch, seed=config.seed,
                              shuffle=False, repeat=False, process_index=process_index,
                              process_count=process_count)
    return Data(train_stream, eval_stream, tokenizer,
                {"unigram_entropy": unigram_entropy(train, tokenizer.vocab_size)})
