"""Classic synthetic sequence-to-sequence tasks, generated offline: "zoo_synthetic_seq2seq".

One config per task; splits "train", "validation" and "test"; version 1.0.0; a `PairBuilder`
(`zoo.data.builders.pair_builder`). "copy", "reverse" and "sort" (the characters in code-point
order) take strings of 1..MAX_SYMBOLS letters from `LETTERS` (length uniform, then letters
uniform) and share the same sources; "addition" maps "a+b" to the decimal sum, each operand of
1..MAX_DIGITS digits (digit count uniform, then value uniform, no leading zeros), e.g.
"123+4567" -> "4690". Sources are unique across all splits (a repeated draw is skipped),
shuffled, then cut into test / validation / train of SYNTHETIC_SIZES: 1000 / 500 / 20000.
Lengths (max / mean of train): copy, reverse, sort 20 / 11.2 for source and target (26
characters); addition 21 / 12.1 for the source, 11 / 7.3 for the target (11 characters).
Preparing a config takes under 1 s.
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from zoo.data.builders.pair_builder import Examples, PairBuilder

NAME = "zoo_synthetic_seq2seq"
SEED = 2026
SYNTHETIC_TASKS = ("copy", "reverse", "sort", "addition")
SYNTHETIC_SIZES = {"train": 20_000, "validation": 500, "test": 1_000}
LETTERS = "abcdefghijklmnopqrstuvwxyz"
MAX_SYMBOLS = 20  # letters in a copy / reverse / sort source
MAX_DIGITS = 10  # digits in an addition operand


def _letters(rng: np.random.RandomState) -> str:
    """1..MAX_SYMBOLS letters of LETTERS: the length uniform, then each letter uniform."""
    length = rng.randint(1, MAX_SYMBOLS + 1)
    return "".join(LETTERS[i] for i in rng.randint(len(LETTERS), size=length))


def _operand(rng: np.random.RandomState) -> int:
    """A number of 1..MAX_DIGITS digits: the digit count uniform, then the value uniform."""
    digits = rng.randint(1, MAX_DIGITS + 1)
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return int(rng.randint(low, 10 ** digits, dtype=np.int64))


TARGETS = {  # task -> target of a source
    "copy": lambda s: s,
    "reverse": lambda s: s[::-1],
    "sort": lambda s: "".join(sorted(s)),
    "addition": lambda s: str(sum(map(int, s.split("+")))),
}


def synthetic_examples(task: str) -> Examples:
    """Per split: (source, {"source", "target"}) of `task`, sources unique across splits."""
    rng = np.random.RandomState(SEED)
    total = sum(SYNTHETIC_SIZES.values())
    sources: dict[str, None] = {}  # insertion-ordered set
    while len(sources) < total:
        source = f"{_operand(rng)}+{_operand(rng)}" if task == "addition" else _letters(rng)
        sources.setdefault(source)
    unique = list(sources)
    shuffled = [unique[i] for i in rng.permutation(total)]
    examples, start = {}, 0
    for split in ("test", "validation", "train"):
        chunk = shuffled[start:start + SYNTHETIC_SIZES[split]]
        start += len(chunk)
        examples[split] = [(s, {"source": s, "target": TARGETS[task](s)}) for s in chunk]
    return examples


class ZooSyntheticSeq2seq(PairBuilder):
    """Copy, reverse, sort and addition of random strings (TFDS name "zoo_synthetic_seq2seq")."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "copy / reverse / sort of letters, addition of integers; unique sources."}
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
        tfds.core.BuilderConfig(name=task, description=f"the {task} task")
        for task in SYNTHETIC_TASKS]
    DESCRIPTION = (
        f"Synthetic tasks on random strings of 1..{MAX_SYMBOLS} letters (copy, reverse, sort) "
        f"or sums of two integers of 1..{MAX_DIGITS} digits (addition). Sources are unique "
        "across splits. Deterministic.")

    def examples(self):
        return synthetic_examples(self.builder_config.name)
