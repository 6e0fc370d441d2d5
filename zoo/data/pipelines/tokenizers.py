"""Tokenizers: text <-> int32 token ids.

The run field `tokenizer` picks one: "byte" (UTF-8 bytes, 256 ids, the default) or
"sentencepiece" (a BPE or unigram SentencePiece model, `spm_model_type`, with `spm_vocab_size`
pieces, by default the model's `vocab_size`, trained on the dataset's train split and cached in
the data dir; `sentencepiece_tokenizer`). `tokenizer_for(config, texts)` gives the run's
tokenizer; the training loop saves a trained one in the workdir (`zoo.train.workdir`), where
generate reads it back. Every tokenizer has `encode(str) -> (N,) int32`, `decode(ids) -> str`
and `vocab_size`.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from zoo.data.pipelines.config_fields import config_field
from zoo.token_ids import checked_ids


@dataclasses.dataclass(frozen=True)
class ByteTokenizer:
    """UTF-8 bytes as tokens: 256 ids, no vocabulary file, no unknown token.

    `decode(encode(s)) == s` for every string; decoding an arbitrary id sequence that is not
    valid UTF-8 gives U+FFFD replacement characters instead of failing.
    """

    vocab_size: int = 256

    def encode(self, text: str) -> np.ndarray:
        """The UTF-8 bytes of `text` as a 1-D int32 array."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def decode(self, ids: Any) -> str:
        """Text from token ids (a list, numpy or jax array of ints, any shape, read flat).

        Raises:
          ValueError: if an id is not an integer in [0, 256); the message names the value.
        """
        ids = checked_ids(ids, self.vocab_size)
        return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")


TOKENIZERS = {"byte": ByteTokenizer}  # the tokenizers that need no training
TRAINED = ("sentencepiece",)  # the tokenizers trained on the dataset (`tokenizer_for`)


def get_tokenizer(name: str):
    """The tokenizer registered as `name` ("byte")."""
    if name in TRAINED:
        raise ValueError(f"tokenizer {name!r} is trained on a dataset: build it with "
                         "tokenizer_for(config, texts), or load a workdir's with "
                         "zoo.train.workdir.load_tokenizer.")
    if name not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; available: "
                         f"{', '.join(sorted(TOKENIZERS) + list(TRAINED))}.")
    return TOKENIZERS[name]()


def tokenizer_for(config: Any, texts: Sequence[str], split: str = "train"):
    """The run's tokenizer; a SentencePiece one is trained on `texts` (the dataset's `split`)
    or read from the cache in the data dir, where an earlier run with the same texts and
    options left it.

    Config fields: tokenizer; for "sentencepiece" also spm_model_type, spm_vocab_size (None:
    vocab_size, the model's), dataset, data_dir, text_key.
    """
    name = config_field(config, "tokenizer", "byte")
    if name != "sentencepiece":
        return get_tokenizer(name)
    from zoo.data.pipelines.sentencepiece_tokenizer import cached_sentencepiece

    text_key = config_field(config, "text_key", "text")
    vocab_size = config_field(config, "spm_vocab_size", config_field(config, "vocab_size"))
    tokenizer, _ = cached_sentencepiece(
        texts, sentencepiece_cache_dir(config.dataset, split, text_key, config.data_dir),
        model_type=config_field(config, "spm_model_type", "unigram"), vocab_size=vocab_size,
        what=f"{config.dataset}'s {split} split ({text_key!r})")
    return tokenizer


def sentencepiece_cache_dir(dataset: str, split: str, text_key: str,
                            data_dir: str | None = None) -> str:
    """Where the SentencePiece models trained on (dataset, split, text key) are cached:
    DATA_DIR/tokenizers/<dataset>/<split>/<text_key>/."""
    from zoo.data.builders.preparation import resolve_data_dir  # imports tensorflow_datasets

    return os.path.join(resolve_data_dir(data_dir), "tokenizers", *dataset.split("/"), split,
                        text_key)
