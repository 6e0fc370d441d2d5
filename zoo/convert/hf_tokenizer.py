"""The tokenizer of a Hugging Face checkpoint directory, through the `tokenizers` library.

    from zoo.convert.hf_tokenizer import load_hf_tokenizer

    tokenizer = load_hf_tokenizer("path/to/gpt2")   # the directory load_hf_checkpoint reads
    ids = tokenizer.encode("Hello world")           # (N,) int32, as GPT2TokenizerFast's
    tokenizer.decode(ids)                           # "Hello world"

The directory's files are read in this order (what `save_pretrained()` writes):

* `tokenizer.json`: any fast tokenizer (`tokenizers.Tokenizer.from_file`);
* `vocab.json` + `merges.txt`: GPT-2's byte-level BPE (no prefix space, as GPT-2's);
* `vocab.txt`: BERT's WordPiece, lower-cased unless `tokenizer_config.json` says
  `"do_lower_case": false`.

`encode` adds no special tokens unless asked (`add_special_tokens=True` gives BERT's [CLS] ...
[SEP]), so that, as with the zoo's own tokenizers, the ids are the text's; `decode` keeps
special tokens unless asked to skip them. Byte-level BPE round-trips any text; WordPiece
normalises it (case, accents, spaces around punctuation).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from zoo.token_ids import checked_ids

__all__ = ["HFTokenizer", "load_hf_tokenizer", "TOKENIZER_FILES"]

TOKENIZER_FILES = ("tokenizer.json", "vocab.json + merges.txt", "vocab.txt")


class HFTokenizer:
    """A `tokenizers.Tokenizer` with the zoo's tokenizer interface: encode, decode, vocab_size."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    @property
    def vocab_size(self) -> int:
        """Number of ids, added (special) tokens included."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, add_special_tokens: bool = False) -> np.ndarray:
        """The ids of `text`, (N,) int32."""
        ids = self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids
        return np.asarray(ids, np.int32).reshape(-1)

    def decode(self, ids: Any, *, skip_special_tokens: bool = False) -> str:
        """Text from ids (list or array, any shape, read flat); ValueError for an id that is not
        an integer in [0, vocab_size)."""
        ids = checked_ids(ids, self.vocab_size)
        return self.tokenizer.decode(ids.tolist(), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)


def has_hf_tokenizer(path: str | os.PathLike) -> bool:
    """Whether the directory holds tokenizer files `load_hf_tokenizer` reads."""
    root = Path(path)
    return ((root / "tokenizer.json").is_file() or (root / "vocab.txt").is_file() or
            ((root / "vocab.json").is_file() and (root / "merges.txt").is_file()))


def load_hf_tokenizer(path: str | os.PathLike) -> HFTokenizer:
    """The tokenizer saved in a Hugging Face checkpoint directory (see the module docstring).

    Raises FileNotFoundError naming the files looked for when there is none.
    """
    from tokenizers import Tokenizer
    from tokenizers.implementations import BertWordPieceTokenizer, ByteLevelBPETokenizer

    root = Path(path)
    if (root / "tokenizer.json").is_file():
        return HFTokenizer(Tokenizer.from_file(str(root / "tokenizer.json")))
    if (root / "vocab.json").is_file() and (root / "merges.txt").is_file():
        bpe = ByteLevelBPETokenizer.from_file(str(root / "vocab.json"), str(root / "merges.txt"),
                                              add_prefix_space=False)
        specials = [t for t in _special_tokens(root) or ["<|endoftext|>"]
                    if bpe.token_to_id(t) is not None]
        bpe.add_special_tokens(specials)  # matched whole, as GPT2TokenizerFast does
        return HFTokenizer(bpe._tokenizer)
    if (root / "vocab.txt").is_file():
        settings = _tokenizer_config(root)
        wordpiece = BertWordPieceTokenizer(
            str(root / "vocab.txt"), lowercase=settings.get("do_lower_case", True),
            strip_accents=settings.get("strip_accents"),
            handle_chinese_chars=settings.get("tokenize_chinese_chars", True))
        return HFTokenizer(wordpiece._tokenizer)
    raise FileNotFoundError(f"no tokenizer in {root}: looked for {', '.join(TOKENIZER_FILES)} "
                            "(save the tokenizer with tokenizer.save_pretrained() beside the "
                            "model).")


def _tokenizer_config(root: Path) -> dict[str, Any]:
    """tokenizer_config.json's settings, {} when there is none."""
    path = root / "tokenizer_config.json"
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _special_tokens(root: Path) -> list[str]:
    """The special tokens (bos, eos, unk, pad, ...) that tokenizer_config.json and
    special_tokens_map.json name."""
    settings = dict(_tokenizer_config(root))
    path = root / "special_tokens_map.json"
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            settings.update(json.load(f))
    found = []
    for key, value in settings.items():
        if not key.endswith("_token"):
            continue
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str) and value not in found:
            found.append(value)
    return found
