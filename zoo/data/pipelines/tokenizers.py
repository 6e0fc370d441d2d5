"""Tokenizers: text <-> int32 token ids."""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


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
        ids = np.asarray(ids).reshape(-1)
        if ids.size == 0:
            return ""
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"token ids must be integers, got dtype {ids.dtype}")
        bad = (ids < 0) | (ids >= self.vocab_size)
        if bad.any():
            value = ids[np.argmax(bad)].item()
            raise ValueError(f"token id {value} is outside [0, {self.vocab_size})")
        return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")


TOKENIZERS = {"byte": ByteTokenizer}


def get_tokenizer(name: str):
    """The tokenizer registered as `name` ("byte")."""
    if name not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; available: {', '.join(sorted(TOKENIZERS))}.")
    return TOKENIZERS[name]()
