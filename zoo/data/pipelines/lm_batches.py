"""Language-model batches from a text dataset: deterministic, resumable, shardable.

A split's texts are tokenized into one stream and cut into non-overlapping windows of T + 1
tokens; `inputs` = window[:-1], `targets` = window[1:], `weights` = 1 on real positions. Batches
come from a `BatchStream`, so global batch `i` is a pure function of (seed, i): resuming at
batch `i` needs nothing but `i`.

Host batch: {"inputs", "targets": (B, T) int32, "weights": (B, T) float32}. Train windows are
whole, shuffled and repeated (a pass drops its last partial batch). Eval covers every token of
its split once: the stream's tail is one more window padded with 0 (weights 0 there), and the
last partial batch is padded with zero-weight rows (`batch_stream.eval_stream`), so the eval
weights sum to the split's token count minus one (each token but the first is predicted once).

With `config.packing` the texts are not concatenated: each is a document, packed whole into
rows of T tokens with segment ids and per-segment positions (`packing.PackedLMRows`), so no
token attends to or predicts across a document boundary; rows are then served the same way
(train shuffled and repeated, eval in order with its last batch padded).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from zoo.data.builders import zoo_text
from zoo.data.pipelines.baselines import unigram_entropy
from zoo.data.pipelines.batch_stream import Batch, BatchStream, eval_stream
from zoo.data.pipelines.bundle import Data
from zoo.data.pipelines.config_fields import config_field
from zoo.data.pipelines.packing import PackedLMRows, document_tokens
from zoo.data.pipelines.tfds_splits import as_text, missing_features, open_split, read_examples
from zoo.data.pipelines.tokenizers import TRAINED, tokenizer_for


def load_texts(dataset: str, split: str, data_dir: str | None = None,
               text_key: str = "text") -> list[str]:
    """All texts of `split`, in index order: the embedded "zoo_text" corpus (prepared in the
    data dir if needed), or any TFDS dataset by name.

    The data dir is `data_dir`, else $ZOO_DATA_DIR, else ~/.cache/zoo/tensorflow_datasets. Real
    TFDS datasets (e.g. "tiny_shakespeare", "lm1b") are read with `tfds.data_source`
    (array_record, no TensorFlow, no download) from there, where they must already be prepared;
    a ConfigError names the command that prepares one (`tfds_splits.open_split`).
    """
    source = open_split(dataset, split, data_dir,
                        prepare=zoo_text.prepare if dataset == zoo_text.NAME else None,
                        instead=f"--config.dataset={zoo_text.NAME} (the embedded corpus)",
                        serves=("language modelling",))
    features = source.dataset_info.features
    if text_key not in features:
        raise missing_features(dataset, features, [text_key], (
            f"Language models read a text feature (config.text_key, default 'text'), as "
            f"{zoo_text.NAME} has."))
    return [as_text(example[text_key]) for example in read_examples(source)]


def token_stream(texts: Sequence[str], tokenizer: Any, separator: str = "\n\n") -> np.ndarray:
    """Tokenizes and concatenates the texts (separated by `separator`) -> (N,) int32."""
    return tokenizer.encode(separator.join(texts)).astype(np.int32)


class LMWindows:
    """Random-access windows: item i -> {"inputs", "targets": (T,) int32, "weights": (T,) float32}.

    pad_last: also the stream's tail as a last window, padded with 0 (weight 0) to T positions,
      so the windows predict every token but the first (eval); else only whole windows (train).
    """

    def __init__(self, stream: np.ndarray, seq_len: int, *, pad_last: bool = False):
        if len(stream) < (2 if pad_last else seq_len + 1):
            raise ValueError(f"a stream of {len(stream)} tokens is too short for seq_len={seq_len}"
                             f"{'' if pad_last else ' (a window takes seq_len + 1 tokens)'}.")
        self.stream, self.seq_len, self.pad_last = stream, seq_len, pad_last

    def __len__(self) -> int:
        predicted = len(self.stream) - 1
        return -(-predicted // self.seq_len) if self.pad_last else predicted // self.seq_len

    def __getitem__(self, i: int) -> Batch:
        start = int(i) * self.seq_len
        window = self.stream[start:start + self.seq_len + 1]
        if len(window) == self.seq_len + 1:
            return {"inputs": window[:-1], "targets": window[1:],
                    "weights": np.ones(self.seq_len, np.float32)}
        n = len(window) - 1  # the padded tail (pad_last)
        item = {key: np.zeros(self.seq_len, np.int32) for key in ("inputs", "targets")}
        item["inputs"][:n], item["targets"][:n] = window[:-1], window[1:]
        item["weights"] = (np.arange(self.seq_len) < n).astype(np.float32)
        return item


def create_lm_data(config: Any, global_batch_size: int, *, process_index: int = 0,
                   process_count: int = 1) -> Data:
    """Language-model windows of the config's dataset.

    Baselines: "unigram_entropy" (nats/token of the train split) and "eval_bytes_per_token"
    (UTF-8 bytes of the eval text per predicted token: the eval loss divided by it is in nats
    per byte, comparable across tokenizers). A trained tokenizer (SentencePiece) is also
    `built_vocab`, which the loop saves in the workdir.

    Config fields: dataset, data_dir, tokenizer, eval_split, seq_len, seed; optional text_key
    ("text"), spm_model_type, spm_vocab_size, vocab_size (`tokenizers.tokenizer_for`).
    """
    text_key = config_field(config, "text_key", "text")
    train_texts = load_texts(config.dataset, "train", config.data_dir, text_key)
    valid_texts = load_texts(config.dataset, config.eval_split, config.data_dir, text_key)
    tokenizer = tokenizer_for(config, train_texts)
    if config_field(config, "packing", False):
        return _packed_lm_data(config, tokenizer, train_texts, valid_texts, global_batch_size,
                               process_index, process_count)
    train, valid = token_stream(train_texts, tokenizer), token_stream(valid_texts, tokenizer)
    global_batch = global_batch_size
    train_stream = BatchStream(LMWindows(train, config.seq_len), global_batch, seed=config.seed,
                               process_index=process_index, process_count=process_count)
    evaluation = eval_stream(LMWindows(valid, config.seq_len, pad_last=True), global_batch,
                             seed=config.seed, process_index=process_index,
                             process_count=process_count)
    baselines = {"unigram_entropy": unigram_entropy(train, tokenizer.vocab_size),
                 "eval_bytes_per_token": text_bytes(valid_texts) / max(len(valid) - 1, 1)}
    return Data(train_stream, evaluation, tokenizer, baselines,
                built_vocab=tokenizer if config_field(config, "tokenizer", "byte") in TRAINED
                else None)


def text_bytes(texts: Sequence[str], separator: str = "\n\n") -> int:
    """UTF-8 bytes of the texts as `token_stream` joins them."""
    return len(separator.join(texts).encode("utf-8"))


def _packed_lm_data(config: Any, tokenizer: Any, train_texts: Sequence[str],
                    valid_texts: Sequence[str], global_batch_size: int, process_index: int,
                    process_count: int) -> Data:
    """`create_lm_data` with `config.packing`: rows of whole documents (`PackedLMRows`)."""
    kwargs = {"seed": config.seed, "process_index": process_index,
              "process_count": process_count}
    train = PackedLMRows(document_tokens(train_texts, tokenizer), config.seq_len)
    valid = PackedLMRows(document_tokens(valid_texts, tokenizer), config.seq_len)
    baselines = {"unigram_entropy": unigram_entropy(train.tokens, tokenizer.vocab_size),
                 "eval_bytes_per_token": sum(len(t.encode("utf-8")) for t in valid_texts)
                 / max(valid.tokens.size - valid.num_documents, 1),
                 "packed_fill": train.fill()}
    return Data(BatchStream(train, global_batch_size, **kwargs),
                eval_stream(valid, global_batch_size, **kwargs), tokenizer, baselines,
                built_vocab=tokenizer if config_field(config, "tokenizer", "byte") in TRAINED
                else None)
