"""SentencePiece subword tokenizers (BPE or unigram) trained on a dataset's texts, and cached.

    tokenizer = train_sentencepiece(texts, model_type="unigram", vocab_size=2048)
    ids = tokenizer.encode("The zoo")             # (N,) int32
    tokenizer.decode(ids) == "The zoo"

Ids 0..3 are the zoo's special ids (`zoo.special_tokens`): PAD_ID, BOS_ID, EOS_ID and UNK_ID,
so padding with 0 means the same thing as for the character vocabularies; "\\n" is one piece of
its own. Training keeps every character of the texts (`character_coverage=1.0`) and the text
exactly as given (no normalisation, no dummy prefix, runs of spaces kept), and falls back to
UTF-8 bytes (`byte_fallback`, 256 pieces) for characters it never saw, so
`decode(encode(s)) == s` for every string, except that U+2581 ("▁", SentencePiece's space
marker) decodes as a space. The texts are fed one line at a time (SentencePiece skips
"sentences" longer than `max_sentence_length`).

`cached_sentencepiece` keeps each trained model in a cache directory, under a name made of the
options and a hash of the training texts and options, so a second run reuses it;
`SentencePieceTokenizer.save` / `load` write and read the model file (`.model`, the standard
SentencePiece format: `sentencepiece.SentencePieceProcessor(model_file=...)` reads it too).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from zoo.errors import ConfigError
from zoo.special_tokens import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from zoo.token_ids import checked_ids

log = logging.getLogger("zoo.data")

MODEL_TYPES = ("unigram", "bpe")
# Trainer options every zoo SentencePiece model is trained with (see the module docstring).
TRAINER_OPTIONS: dict[str, Any] = dict(
    character_coverage=1.0, byte_fallback=True, normalization_rule_name="identity",
    remove_extra_whitespaces=False, add_dummy_prefix=False, allow_whitespace_only_pieces=True,
    split_digits=False, user_defined_symbols=["\n"], pad_id=PAD_ID, bos_id=BOS_ID,
    eos_id=EOS_ID, unk_id=UNK_ID, max_sentence_length=1 << 16)
CACHE_VERSION = 1  # bump when TRAINER_OPTIONS or the line splitting change


class SentencePieceTokenizer:
    """A trained SentencePiece model: text <-> int32 ids in [0, vocab_size)."""

    def __init__(self, model_proto: bytes):
        import sentencepiece

        self.model_proto = bytes(model_proto)
        self._processor = sentencepiece.SentencePieceProcessor(model_proto=self.model_proto)

    def __getstate__(self) -> dict[str, Any]:  # pickled as its model (data worker processes)
        return {"model_proto": self.model_proto}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["model_proto"])

    @property
    def vocab_size(self) -> int:
        """Number of ids (pieces), the special ones and the 256 byte pieces included."""
        return self._processor.get_piece_size()

    def encode(self, text: str) -> np.ndarray:
        """The ids of `text`, (N,) int32; no BOS or EOS is added."""
        return np.asarray(self._processor.encode(text, out_type=int), np.int32).reshape(-1)

    def decode(self, ids: Any) -> str:
        """Text from ids (list or array, any shape, read flat); PAD, BOS and EOS decode to "".

        Raises ValueError for ids that are not integers in [0, vocab_size).
        """
        return self._processor.decode(checked_ids(ids, self.vocab_size).tolist())

    def save(self, path: str) -> None:
        """Writes the model file to `path` (atomically: a reader never sees half a file)."""
        _write_atomically(path, self.model_proto)

    @classmethod
    def load(cls, path: str) -> SentencePieceTokenizer:
        """The tokenizer `save` wrote to `path` (any SentencePiece `.model` file)."""
        with open(path, "rb") as f:
            return cls(f.read())


def training_lines(texts: Sequence[str]) -> list[str]:
    """The non-empty lines of `texts`: SentencePiece's training "sentences"."""
    return [line for text in texts for line in text.split("\n") if line]


def train_sentencepiece(texts: Sequence[str], *, model_type: str, vocab_size: int,
                        what: str = "the training texts") -> SentencePieceTokenizer:
    """A SentencePiece model of `vocab_size` pieces trained on `texts` (in memory).

    Raises ConfigError naming `what` when SentencePiece cannot build that many pieces from the
    texts (or too few to hold their characters and the 256 byte pieces).
    """
    import io

    import sentencepiece

    if model_type not in MODEL_TYPES:
        raise ConfigError(f"config.spm_model_type must be one of {', '.join(map(repr, MODEL_TYPES))}"
                          f"; got {model_type!r}.")
    lines = training_lines(texts)
    if not lines:
        raise ConfigError(f"{what} hold no text to train a SentencePiece vocabulary on.")
    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=model, model_type=model_type,
            vocab_size=vocab_size, minloglevel=2, num_threads=min(os.cpu_count() or 1, 16),
            **TRAINER_OPTIONS)
    except RuntimeError as e:
        raise ConfigError(f"SentencePiece cannot build a {model_type} vocabulary of {vocab_size} "
                          f"pieces from {what}: {_reason(str(e))}.") from None
    return SentencePieceTokenizer(model.getvalue())


def _reason(message: str) -> str:
    """SentencePiece's training error in the zoo's words (the config field to change)."""
    too_high = re.search(r"Vocabulary size too high \((\d+)\).*<= (\d+)", message)
    if too_high:
        return (f"they hold at most {too_high.group(2)}; lower --config.spm_vocab_size (by "
                "default the model's vocab_size) or train on more text")
    too_low = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", message)
    if too_low:
        return (f"its characters, the 256 byte pieces and the special ids need at least "
                f"{too_low.group(2)}; raise --config.vocab_size to that or more (the "
                "vocabulary defaults to it; an explicit --config.spm_vocab_size must not exceed "
                "it)")
    detail = " ".join(message.split("] ")[-1].split()) or "training failed"
    return f"{detail}; choose another --config.spm_vocab_size"


def cache_key(texts: Sequence[str], *, model_type: str, vocab_size: int) -> str:
    """A hash of the training texts and every option that shapes the model."""
    digest = hashlib.sha256(json.dumps(
        {"version": CACHE_VERSION, "model_type": model_type, "vocab_size": vocab_size,
         "options": TRAINER_OPTIONS}, sort_keys=True).encode())
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def cached_sentencepiece(texts: Sequence[str], cache_dir: str, *, model_type: str,
                         vocab_size: int, what: str = "the training texts"
                         ) -> tuple[SentencePieceTokenizer, str]:
    """(tokenizer, its file): read from `cache_dir` when an earlier call trained it on the same
    texts with the same options, else trained and written there. A cache that cannot be
    written (a read-only data dir) only costs the training next time."""
    key = cache_key(texts, model_type=model_type, vocab_size=vocab_size)
    path = os.path.join(cache_dir, f"sentencepiece-{model_type}-{vocab_size}-{key}.model")
    if os.path.isfile(path):
        try:
            return SentencePieceTokenizer.load(path), path
        except (OSError, RuntimeError) as e:  # a damaged file: train it again
            log.warning("ignoring the unreadable cached tokenizer %s (%s)", path, e)
    tokenizer = train_sentencepiece(texts, model_type=model_type, vocab_size=vocab_size,
                                    what=what)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        tokenizer.save(path)
    except OSError as e:
        log.warning("could not cache the tokenizer in %s (%s); it will be trained again next "
                    "run", cache_dir, e)
    return tokenizer, path


def _write_atomically(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".model")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
