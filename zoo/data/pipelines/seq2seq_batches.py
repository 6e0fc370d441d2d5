"""Batches for sequence-to-sequence tasks, characters as tokens (one vocabulary for both sides).

Host batch (leading axis = this process's B rows; S = T = `config.seq_len`):

    {"inputs":  (B, S) int32    source character ids, padded with PAD_ID (no BOS, no EOS),
     "targets": (B, T) int32    target character ids then EOS_ID, padded with PAD_ID,
     "weights": (B, T) float32  1.0 on the real target positions (the EOS included), else 0}

The `CharVocab` (`char_vocab`, also `Data.tokenizer`) is built from the train split's
sources and targets; characters of the eval split that it lacks become UNK_ID. Train streams are
shuffled and repeated, dropping each pass's last partial batch; eval streams are in split order,
one pass, covering every example: the last partial batch is padded to the global batch with rows
of weight 0 (`batch_stream.eval_stream`). Both are `BatchStream`s; with `config.bucket_by_length`
the train stream is a `bucketing.BucketedStream` (pairs of similar lengths; S and T each cut to
a bucket length <= seq_len; eval stays at seq_len). With `config.packing` (the encoder-decoder
transformer) train rows hold several pairs each (`packing.PackedPairRows`: segment ids and
positions per side, pair k of a row is segment k on both); eval stays one pair per row.
Nothing is truncated: an example longer than seq_len is an error that names the length needed.

Datasets: the embedded "zoo_num2words/<config>" and "zoo_synthetic_seq2seq/<task>"
(`zoo.data.builders`, prepared in the data dir on first use), or any TFDS dataset prepared there
in array_record, read with `tfds.data_source` (the data dir: `config.data_dir`, else
$ZOO_DATA_DIR, else ~/.cache/zoo/tensorflow_datasets); its source and target features
are `config.source_key` / `config.target_key` (default "source" / "target"; e.g. "pt" / "en" for
"ted_hrlr_translate/pt_to_en").
"""
from __future__ import annotations

import collections
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from zoo.data.builders import seq2seq_datasets
from zoo.data.pipelines.baselines import unigram_entropy
from zoo.data.pipelines.batch_stream import Batch, BatchStream, eval_stream
from zoo.data.pipelines.bucketing import BucketedStream
from zoo.data.pipelines.bundle import Data
from zoo.data.pipelines.char_vocab import CharVocab
from zoo.data.pipelines.config_fields import config_field
from zoo.data.pipelines.packing import PackedPairRows
from zoo.data.pipelines.padding import pad_rows
from zoo.data.pipelines.tfds_splits import as_text, missing_features, open_split, read_examples
from zoo.special_tokens import EOS_ID, PAD_ID

DEFAULT_DATASET = "zoo_num2words/en_fr"


def _open_split(dataset: str, split: str, data_dir: str | None = None):
    """`tfds.data_source` of a split: an embedded dataset (prepared if needed) or any TFDS one."""
    embedded = " or ".join(f"{name}/<{'|'.join(builder.builder_configs)}>"
                           for name, builder in seq2seq_datasets.BUILDERS.items())
    prepare = (functools.partial(seq2seq_datasets.prepare, dataset)
               if seq2seq_datasets.is_embedded(dataset) else None)
    return open_split(dataset, split, data_dir, prepare=prepare,
                      instead=f"an embedded dataset: {embedded}", serves=("seq2seq",))


def load_pairs(dataset: str, split: str, data_dir: str | None = None, *,
               source_key: str | None = None,
               target_key: str | None = None) -> tuple[list[str], list[str]]:
    """(sources, targets) of every example of a split, in index order.

    `source_key` / `target_key` name the features (default "source" / "target"); a ConfigError
    lists the dataset's features when one is missing.
    """
    source = _open_split(dataset, split, data_dir)
    keys = (source_key or "source", target_key or "target")
    features = list(source.dataset_info.features.keys())
    missing = [k for k in keys if k not in features]
    if missing:
        raise missing_features(dataset, features, missing, (
            "Set --config.source_key and --config.target_key: seq2seq reads a source and a "
            "target text feature (default 'source' and 'target')."))
    pairs = [(as_text(ex[keys[0]]), as_text(ex[keys[1]])) for ex in read_examples(source)]
    return [s for s, _ in pairs], [t for _, t in pairs]


class Seq2seqExamples:
    """Random access: item i -> {"inputs": (S,) int32, "targets": (T,) int32, "weights": (T,)
    float32}, from (N, S) source ids and (N, T) target ids (EOS included), both PAD-padded."""

    def __init__(self, inputs: np.ndarray, targets: np.ndarray):
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> Batch:
        targets = self.targets[int(i)]
        return {"inputs": self.inputs[int(i)], "targets": targets,
                "weights": (targets != PAD_ID).astype(np.float32)}


def _encode(vocab: CharVocab, texts: Sequence[str]) -> list[np.ndarray]:
    """The ids of each text (unknown characters -> UNK_ID), encoded in one call."""
    ids = vocab.encode("".join(texts), unknown="unk")
    return np.split(ids, np.cumsum([len(t) for t in texts], dtype=np.int64))[:-1]


def _encode_pairs(vocab: CharVocab, sources: Sequence[str], targets: Sequence[str], *,
                  reverse_source: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Source ids (each source reversed if asked) and target ids + EOS_ID, one array each."""
    source_ids = _encode(vocab, [s[::-1] for s in sources] if reverse_source else sources)
    target_ids = [np.append(ids, np.int32(EOS_ID)) for ids in _encode(vocab, targets)]
    return source_ids, target_ids


def _check_lengths(encoded: dict[str, tuple[list[np.ndarray], list[np.ndarray]]],
                   seq_len: int) -> None:
    """ValueError naming the length needed if a source, or a target + EOS, exceeds seq_len."""
    longest = max(len(ids) for sources, targets in encoded.values() for ids in sources + targets)
    if longest > seq_len:
        raise ValueError(
            f"the longest example needs {longest} positions (source, or target + EOS) but "
            f"seq_len={seq_len}; raise --config.seq_len to at least {longest}.")


def _baselines(train_targets: Sequence[str], eval_targets: Sequence[str],
               train_target_ids: Sequence[np.ndarray], vocab_size: int) -> dict[str, float]:
    """{"unigram_entropy", "majority_exact_match"}: see `create_seq2seq_data`."""
    majority = collections.Counter(train_targets).most_common(1)[0][0]
    return {"unigram_entropy": unigram_entropy(np.concatenate(train_target_ids), vocab_size),
            "majority_exact_match": float(np.mean([t == majority for t in eval_targets]))}


def create_seq2seq_data(config: Any, global_batch_size: int, *, process_index: int = 0,
                        process_count: int = 1) -> Data:
    """Seq2seq batches of the config's dataset ("zoo_num2words/en_fr" by default).

    Config fields: dataset, data_dir, eval_split ("validation"), seq_len, seed; optional
    source_key, target_key ("source", "target"), reverse_source (False: if True, every source is
    fed reversed, as in Sutskever et al. 2014). baselines = {"unigram_entropy": nats per target
    token (EOS included) of the train targets' character frequencies, the loss of a model that
    ignores the source and the target prefix; "majority_exact_match": share of the eval split
    whose target is the train split's most frequent one}.
    """
    dataset = config_field(config, "dataset", DEFAULT_DATASET)
    data_dir = config_field(config, "data_dir")
    keys = {key: config_field(config, key) for key in ("source_key", "target_key")}
    eval_split = config_field(config, "eval_split", "validation")
    texts = {"train": load_pairs(dataset, "train", data_dir, **keys),
             "eval": load_pairs(dataset, eval_split, data_dir, **keys)}
    vocab = CharVocab.build(texts["train"][0] + texts["train"][1])
    reverse_source = bool(config_field(config, "reverse_source", False))
    encoded = {name: _encode_pairs(vocab, *pairs, reverse_source=reverse_source)
               for name, pairs in texts.items()}
    _check_lengths(encoded, config.seq_len)
    examples = {name: Seq2seqExamples(pad_rows(sources, config.seq_len),
                                      pad_rows(targets, config.seq_len))
                for name, (sources, targets) in encoded.items()}
    seed = config_field(config, "seed", 0)
    kwargs = {"process_index": process_index, "process_count": process_count}
    if config_field(config, "bucket_by_length", False):
        sources, targets = encoded["train"]
        groups = {"source": (("inputs",), np.array([len(s) for s in sources])),
                  "target": (("targets", "weights"), np.array([len(t) for t in targets]))}
        train_stream = BucketedStream(examples["train"], groups, global_batch_size,
                                      config.seq_len, seed=seed, **kwargs)
    elif config_field(config, "packing", False):
        train_stream = BatchStream(PackedPairRows(*encoded["train"], config.seq_len),
                                   global_batch_size, seed=seed, **kwargs)
    else:
        train_stream = BatchStream(examples["train"], global_batch_size, seed=seed, **kwargs)
    return Data(train_stream,
                eval_stream(examples["eval"], global_batch_size, seed=seed, **kwargs),
                vocab, _baselines(texts["train"][1], texts["eval"][1], encoded["train"][1],
                                  vocab.size),
                built_vocab=vocab)
