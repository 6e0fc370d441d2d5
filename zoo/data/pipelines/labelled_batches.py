"""Batches for sequence classification and per-character tagging, from labelled TFDS datasets.

Texts become byte ids (`config.tokenizer`, "byte"), truncated to `config.seq_len` and padded
with 0. Batches (each field's leading axis is the batch, B = this process's rows):

* classification: {"inputs": (B, T) int32, "lengths": (B,) int32, "labels": (B,) int32,
  "weights": (B,) float32 (1 per real example, 0 per padding row)}
* tagging: {"inputs": (B, T) int32, "targets": (B, T) int32 (0 at padding),
  "weights": (B, T) float32 (1 at real bytes), "lengths": (B,) int32}

`lengths` counts the real tokens and is at least 1 (an empty text reads as one padding token).
Per-character tags are repeated over the UTF-8 bytes of their character, so targets line up with
byte ids. Train streams are shuffled and repeated, dropping each pass's last partial batch; eval
streams are in split order, one pass, covering every example: the last partial batch is padded
to the global batch with rows of weight 0 (`batch_stream.eval_stream`). Both are `BatchStream`s;
with `config.bucket_by_length` the train stream is a `bucketing.BucketedStream` instead (batches
of similar lengths, T cut to a bucket length <= seq_len; eval stays at seq_len).

Datasets: the embedded "zoo_docstrings" / "zoo_code_tags" (prepared in the data dir on first
use), or any TFDS dataset prepared there in array_record, read with `tfds.data_source` (the data
dir: `config.data_dir`, else $ZOO_DATA_DIR, else ~/.cache/zoo/tensorflow_datasets). Its text
feature is `config.text_key` if set, else the first of `TEXT_KEYS` it has (e.g. ag_news_subset's
"description"); labels are `config.label_key` (default "label") / tags `config.tags_key`
(default "tags"), both ClassLabel features.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from zoo.data.builders import zoo_code_tags, zoo_docstrings
from zoo.data.pipelines.batch_stream import Batch, BatchStream, eval_stream
from zoo.data.pipelines.bucketing import BucketedStream
from zoo.data.pipelines.bundle import Data
from zoo.data.pipelines.config_fields import config_field
from zoo.data.pipelines.tfds_splits import as_text, missing_features, open_split, read_examples
from zoo.data.pipelines.tokenizers import get_tokenizer
from zoo.errors import ConfigError

TEXT_KEYS = ("text", "description", "sentence", "content")
EMBEDDED: dict[str, Callable[[str | None], str]] = {
    zoo_docstrings.NAME: zoo_docstrings.prepare,
    zoo_code_tags.NAME: zoo_code_tags.prepare,
}


def _open_split(dataset: str, split: str, data_dir: str | None = None):
    """`tfds.data_source` of a split: an embedded dataset (prepared if needed) or any TFDS one."""
    return open_split(dataset, split, data_dir, prepare=EMBEDDED.get(dataset),
                      instead=f"one of the embedded datasets: {', '.join(EMBEDDED)}",
                      serves=("classification", "tagging"))


def text_key_of(features: Any, text_key: str | None = None) -> str:
    """`text_key` if given, else the first of TEXT_KEYS among the dataset's features."""
    if text_key:
        return text_key
    for key in TEXT_KEYS:
        if key in features:
            return key
    raise ValueError(f"no text feature among {sorted(features)}; expected one of {TEXT_KEYS} "
                     "(or set config.text_key).")


def read_split(source: Any, text_key: str, label_key: str) -> tuple[list[str], list[np.ndarray]]:
    """(texts, labels) of every example of a data source, in index order."""
    texts, labels = [], []
    for example in read_examples(source):
        texts.append(as_text(example[text_key]))
        labels.append(np.asarray(example[label_key], np.int32))
    return texts, labels


def byte_tags(text: str, tags: np.ndarray) -> np.ndarray:
    """Per-character tags -> per-UTF-8-byte tags (a character's tag on each of its bytes)."""
    tags = np.asarray(tags, np.int32)
    if len(tags) != len(text):
        raise ValueError(f"{len(tags)} tags for a text of {len(text)} characters.")
    if text.isascii():
        return tags
    return np.repeat(tags, [len(c.encode("utf-8")) for c in text])


class LabelledExamples:
    """Random access: item i -> {"inputs": (T,) int32 ids padded with 0, "lengths": () int32,
    and "labels": () int32 + "weights": () float32 1.0 (classification) or "targets": (T,)
    int32 + "weights": (T,) float32 (tagging)}. `ids` and the `targets` sequences are already
    truncated to `seq_len`."""

    def __init__(self, ids: Sequence[np.ndarray], seq_len: int, *,
                 labels: Sequence[int] | None = None, targets: Sequence[np.ndarray] | None = None):
        if (labels is None) == (targets is None):
            raise ValueError("give exactly one of labels (classification) or targets (tagging).")
        self.ids, self.seq_len, self.labels, self.targets = ids, seq_len, labels, targets

    def __len__(self) -> int:
        return len(self.ids)

    def length_groups(self) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
        """The (B, T) keys and each example's length, for `bucketing` (`lengths` >= 1)."""
        keys = ("inputs",) if self.targets is None else ("inputs", "targets", "weights")
        return {"tokens": (keys, np.array([max(len(ids), 1) for ids in self.ids], np.int64))}

    def _pad(self, values: np.ndarray, dtype) -> np.ndarray:
        padded = np.zeros(self.seq_len, dtype)
        padded[:len(values)] = values
        return padded

    def __getitem__(self, i: int) -> Batch:
        ids = self.ids[int(i)]
        item = {"inputs": self._pad(ids, np.int32),
                "lengths": np.asarray(max(len(ids), 1), np.int32)}
        if self.targets is None:
            item["labels"] = np.asarray(self.labels[int(i)], np.int32)
            item["weights"] = np.asarray(1.0, np.float32)
        else:
            item["targets"] = self._pad(self.targets[int(i)], np.int32)
            item["weights"] = self._pad(np.ones(len(ids)), np.float32)
        return item


def _needs(tagging: bool) -> str:
    """What a labelled task reads, and the config fields that name those features."""
    text = (f"a text feature (config.text_key, else the first of "
            f"{', '.join(map(repr, TEXT_KEYS))})")
    if tagging:
        return (f"Tagging reads {text} and a sequence of ClassLabel tags, one per character "
                f"(config.tags_key, default 'tags'), as {zoo_code_tags.NAME} has.")
    return (f"Classification reads {text} and a ClassLabel feature (config.label_key, default "
            f"'label'), as {zoo_docstrings.NAME} has.")


def _load(config: Any, default_dataset: str, label_field: str, default_label_key: str, split: str):
    """(texts, labels or per-example tag arrays, number of classes) of a split."""
    dataset = config_field(config, "dataset", default_dataset)
    source = _open_split(dataset, split, config_field(config, "data_dir"))
    features = source.dataset_info.features
    tagging = label_field == "tags_key"
    label_key = config_field(config, label_field, default_label_key)
    try:
        text_key = text_key_of(features, config_field(config, "text_key"))
    except ValueError:  # no text feature: reported below
        text_key = TEXT_KEYS[0]
    missing = [key for key in (text_key, label_key) if key not in features]
    if missing:
        raise missing_features(dataset, features, missing, _needs(tagging))
    label_feature = features[label_key]
    if tagging:  # per-character tags: a Sequence of ClassLabel
        is_sequence = isinstance(label_feature, tfds.features.Sequence)
        label_feature = label_feature.feature if is_sequence else None
    if not isinstance(label_feature, tfds.features.ClassLabel):
        kind = "a sequence of ClassLabel" if tagging else "a ClassLabel"
        raise ConfigError(f"dataset {dataset!r}: feature {label_key!r} is a "
                          f"{type(features[label_key]).__name__}, not {kind}. {_needs(tagging)}")
    texts, labels = read_split(source, text_key, label_key)
    return texts, labels, label_feature.num_classes


def _streams(config: Any, global_batch_size: int, train: LabelledExamples,
             evaluation: LabelledExamples, process_index: int, process_count: int):
    seed = config_field(config, "seed", 0)
    kwargs = {"process_index": process_index, "process_count": process_count}
    if config_field(config, "bucket_by_length", False):
        train_stream = BucketedStream(train, train.length_groups(), global_batch_size,
                                      config.seq_len, seed=seed, **kwargs)
    else:
        train_stream = BatchStream(train, global_batch_size, seed=seed, **kwargs)
    return train_stream, eval_stream(evaluation, global_batch_size, seed=seed, **kwargs)


def create_classification_data(config: Any, global_batch_size: int, *, process_index: int = 0,
                               process_count: int = 1) -> Data:
    """Sequence classification ("zoo_docstrings" by default); baseline: majority-class accuracy.

    Config fields: dataset, data_dir, tokenizer, eval_split ("test"), seq_len, seed; optional
    text_key, label_key. baselines = {"majority_accuracy": share of the eval split in the train
    split's most frequent class, "num_classes"}.
    """
    tokenizer = get_tokenizer(config_field(config, "tokenizer", "byte"))
    seq_len = config.seq_len
    splits = {}
    eval_split = config_field(config, "eval_split", "test")
    for name, split in (("train", "train"), ("eval", eval_split)):
        texts, labels, num_classes = _load(config, zoo_docstrings.NAME, "label_key", "label",
                                           split)
        ids = [tokenizer.encode(t)[:seq_len] for t in texts]
        splits[name] = LabelledExamples(ids, seq_len, labels=np.asarray(labels, np.int32))
    majority = np.bincount(splits["train"].labels, minlength=num_classes).argmax()
    baselines = {"majority_accuracy": float(np.mean(splits["eval"].labels == majority)),
                 "num_classes": num_classes}
    return Data(*_streams(config, global_batch_size, splits["train"], splits["eval"],
                          process_index, process_count), tokenizer, baselines)


def create_tagging_data(config: Any, global_batch_size: int, *, process_index: int = 0,
                        process_count: int = 1) -> Data:
    """Per-character tagging ("zoo_code_tags" by default); baseline: majority-tag accuracy.

    Config fields: dataset, data_dir, tokenizer, eval_split ("test"), seq_len, seed; optional
    text_key, tags_key. baselines = {"majority_accuracy": accuracy over the eval split's real
    (weighted) bytes of always predicting the train split's most frequent tag, "num_classes"}.
    """
    tokenizer = get_tokenizer(config_field(config, "tokenizer", "byte"))
    seq_len = config.seq_len
    splits = {}
    eval_split = config_field(config, "eval_split", "test")
    for name, split in (("train", "train"), ("eval", eval_split)):
        texts, tags, num_classes = _load(config, zoo_code_tags.NAME, "tags_key", "tags", split)
        ids = [tokenizer.encode(t) for t in texts]
        targets = [byte_tags(t, g) for t, g in zip(texts, tags)]
        if any(len(i) != len(g) for i, g in zip(ids, targets)):
            raise ValueError("tagging needs a byte-level tokenizer (one token per UTF-8 byte).")
        ids, targets = [i[:seq_len] for i in ids], [g[:seq_len] for g in targets]
        splits[name] = LabelledExamples(ids, seq_len, targets=targets)
    counts = np.bincount(np.concatenate(splits["train"].targets), minlength=num_classes)
    eval_targets = np.concatenate(splits["eval"].targets)
    baselines = {"majority_accuracy": float(np.mean(eval_targets == counts.argmax())),
                 "num_classes": num_classes}
    return Data(*_streams(config, global_batch_size, splits["train"], splits["eval"],
                          process_index, process_count), tokenizer, baselines)
