"""A character vocabulary shared by a seq2seq task's source and target: text <-> int32 ids.

Ids 0..3 are special (`zoo.special_tokens`): PAD_ID, BOS_ID, EOS_ID and UNK_ID (a character
the vocabulary lacks). The vocabulary's characters, sorted by code point, take ids 4, 5, ...
It is built from the training split's texts; `save` / `load` store it as a JSON list of its
characters, so a trained workdir can encode and decode again.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np

from zoo.special_tokens import EOS_ID, NUM_SPECIAL, UNK_ID

UNK_CHAR = "\ufffd"  # how `decode` shows UNK_ID


class CharVocab:
    """Characters as tokens: the i-th character of `chars` (sorted, unique) has id 4 + i."""

    def __init__(self, chars: Iterable[str]):
        chars = sorted(set(chars))
        if any(len(c) != 1 for c in chars):
            raise ValueError(f"a CharVocab holds single characters, got {chars!r}.")
        self.chars: tuple[str, ...] = tuple(chars)
        self._codes = np.array([ord(c) for c in chars], np.uint32)  # sorted: for searchsorted
        self._symbols = ("", "", "", UNK_CHAR, *chars)  # decode: id -> text (PAD, BOS -> "")

    @classmethod
    def build(cls, texts: Iterable[str]) -> CharVocab:
        """The vocabulary of every character in `texts`."""
        return cls(set().union(*texts))

    @property
    def size(self) -> int:
        """Number of ids, the 4 special ones included."""
        return NUM_SPECIAL + len(self.chars)

    @property
    def vocab_size(self) -> int:
        """`size`, under the name the tokenizers use (`tokenizers.ByteTokenizer`)."""
        return self.size

    def encode(self, text: str, *, unknown: str = "error") -> np.ndarray:
        """The ids of `text`'s characters, (len(text),) int32; no BOS or EOS is added.

        unknown: "error" raises ValueError naming the characters the vocabulary lacks; "unk"
        maps each of them to UNK_ID.
        """
        if unknown not in ("error", "unk"):
            raise ValueError(f"unknown={unknown!r}; expected 'error' or 'unk'.")
        codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
        pos = np.searchsorted(self._codes, codes)
        known = pos < len(self._codes)
        known[known] = self._codes[pos[known]] == codes[known]
        if unknown == "error" and not known.all():
            missing = "".join(sorted({chr(c) for c in codes[~known]}))
            raise ValueError(
                f"characters {missing!r} of {text!r} are not in the vocabulary built from the "
                f"training split ({len(self.chars)} characters).")
        return np.where(known, pos + NUM_SPECIAL, UNK_ID).astype(np.int32)

    def decode(self, ids: Any) -> str:
        """Text from ids (list or array, any shape, read flat): stops at the first EOS_ID, skips
        PAD_ID and BOS_ID, shows UNK_ID as U+FFFD. Raises ValueError for an id outside [0, size).
        """
        ids = np.asarray(ids).reshape(-1)
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"token ids must be integers, got dtype {ids.dtype}.")
        eos = np.flatnonzero(ids == EOS_ID)
        if eos.size:
            ids = ids[:eos[0]]
        bad = (ids < 0) | (ids >= self.size)
        if bad.any():
            raise ValueError(f"token id {ids[np.argmax(bad)].item()} is outside [0, {self.size}).")
        return "".join(self._symbols[i] for i in ids.tolist())

    def save(self, path: str) -> None:
        """Write the characters to `path` as a JSON list."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(list(self.chars), f, ensure_ascii=False)

    @classmethod
    def load(cls, path: str) -> CharVocab:
        """The vocabulary `save` wrote to `path`."""
        with open(path, encoding="utf-8") as f:
            return cls(json.load(f))
