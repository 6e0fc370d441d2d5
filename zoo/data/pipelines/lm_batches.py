"""Language-model batches from a text dataset: deterministic, resumable, shardable.

A split's texts are tokenized into one stream and cut into non-overlapping windows of T + 1
tokens; `inputs` = window[:-1], `targets` = window[1:]. Batches come from a `BatchStream`, so
global batch `i` is a pure function of (seed, i): resuming at batch `i` needs nothing but `i`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from zoo.data.builders import zoo_text
from zoo.data.pipelines.baselines import unigram_entropy
from zoo.data.pipelines.batch_stream import Batch, BatchStream
from zoo.data.pipelines.bundle import Data
from zoo.data.pipelines.tfds_splits import as_text, open_split, read_examples
from zoo.data.pipelines.tokenizers import get_tokenizer


def load_texts(dataset: str, split: str, data_dir: str | None = None,
               text_key: str = "text") -> list[str]:
    """All texts of `split`, in index order: the embedded "zoo_text" corpus (prepared in
    `data_dir` if needed), or any TFDS dataset by name.

    Real TFDS datasets (e.g. "tiny_shakespeare", "lm1b") are read with `tfds.data_source`
    (array_record, no TensorFlow) from `data_dir`, where they must already be prepared.
    """
    source = open_split(dataset, split, data_dir,
                        prepare=zoo_text.prepare if dataset == zoo_text.NAME else None,
                        instead=f"--config.dataset={zoo_text.NAME} (the embedded corpus)")
    return [as_text(example[text_key]) for example in read_examples(source)]


def token_stream(texts: Sequence[str], tokenizer: Any, separator: str = "\n\n") -> np.ndarray:
    """Tokenizes and concatenates the texts (separated by `separator`) -> (N,) int32."""
    return tokenizer.encode(separator.join(texts)).astype(np.int32)


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
