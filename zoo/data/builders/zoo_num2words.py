"""Numbers in English words -> in another language's words, generated offline: "zoo_num2words".

A number in [0, MAX_NUMBER) written in English words (source) and in another language
(target), both by num2words, plus the feature "number" (int64), e.g. 2026 ->
"two thousand and twenty-six" -> "deux mille vingt-six". Splits "train", "validation" and
"test"; version 1.1.0; a `PairBuilder` (`zoo.data.builders.pair_builder`). Configs "en_fr"
(default), "en_de", "en_it", "en_pt" (European Portuguese). num2words 0.5.14 writes these well;
German has one slip, "...einstausend" for a thousands group ending in 01 (201000 ->
"zweihunderteinstausend", ~1% of numbers), and Spanish is left out ("veintiuno mil" for 21000,
~10% of numbers).

Every config uses the same numbers: "test" is the first NUM2WORDS_SIZES["test"] of a seeded
permutation of [NUM_BUILDING_BLOCKS, MAX_NUMBER), "validation" the next ones, and "train" is
every number below NUM_BUILDING_BLOCKS (the words all larger numbers are made of),
BUILDING_BLOCK_REPEATS (4) times each, plus the following ones of the permutation. The splits
are disjoint, so a model is tested on numbers it never saw; held-out numbers are all >= 1000.
Sizes (train / validation / test): 40000 / 1000 / 2000. Lengths in characters are max (all
splits) / mean (train); "chars" counts the distinct characters of train's sources and targets;
"prepare" is the time to generate and write a config (num2words takes 5 to 130 us a call,
depending on the language):

    config  2026 ->                     source      target      chars  prepare
    en_fr   deux mille vingt-six        73 / 56.7   73 / 45.8   27     10 s
    en_de   zweitausendsechsundzwanzig  73 / 56.7   65 / 48.0   27     10 s
    en_it   duemilaventisei             73 / 56.7   58 / 37.3   26      4 s
    en_pt   dois mil e vinte e seis     73 / 56.7   69 / 48.2   26      6 s

A seq_len of 80 fits every config (the target's EOS included).
"""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from num2words import num2words

from zoo.data.builders.pair_builder import Examples, PairBuilder

NAME = "zoo_num2words"
SEED = 2026
MAX_NUMBER = 1_000_000
NUM_BUILDING_BLOCKS = 1_000  # 0..999, all in train
# Each building block is in train this many times: uniform sampling below MAX_NUMBER makes short
# numbers rare (85 of 40,000 sources under 12 characters), and a model trained on one copy of
# each mistranslated "twelve" or "one hundred" while getting the held-out numbers right.
BUILDING_BLOCK_REPEATS = 4
NUM2WORDS_SIZES = {"train": 40_000, "validation": 1_000, "test": 2_000}
NUM2WORDS_LANGUAGES = ("fr", "de", "it", "pt")  # targets; the source is English


def number_splits() -> dict[str, np.ndarray]:
    """The numbers of each split (int64 arrays), disjoint; see the module docstring."""
    rest = np.random.RandomState(SEED).permutation(np.arange(NUM_BUILDING_BLOCKS, MAX_NUMBER))
    n_test, n_valid = NUM2WORDS_SIZES["test"], NUM2WORDS_SIZES["validation"]
    blocks = np.tile(np.arange(NUM_BUILDING_BLOCKS), BUILDING_BLOCK_REPEATS)
    n_train = NUM2WORDS_SIZES["train"] - len(blocks)
    if n_train < 0 or n_test + n_valid + n_train > len(rest):
        raise ValueError(f"NUM2WORDS_SIZES {NUM2WORDS_SIZES} do not fit the numbers.")
    return {"train": np.concatenate([blocks, rest[n_test + n_valid:n_test + n_valid + n_train]]),
            "validation": rest[n_test:n_test + n_valid],
            "test": rest[:n_test]}


def num2words_examples(language: str) -> Examples:
    """Per split: (key, {"number", "source": English words, "target": `language` words}); the
    key is str(number), with "#i" added to the i-th repeat of a building block."""
    out = {}
    for split, numbers in number_splits().items():
        seen: dict[int, int] = {}
        examples = []
        for n in numbers.tolist():
            repeat = seen[n] = seen.get(n, -1) + 1
            examples.append((f"{n}#{repeat}" if repeat else str(n),
                             {"number": n, "source": num2words(n, lang="en"),
                              "target": num2words(n, lang=language)}))
        out[split] = examples
    return out


class ZooNum2words(PairBuilder):
    """Numbers in English words -> in another language's words (TFDS name "zoo_num2words")."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Numbers below 1e6 by num2words; test and validation numbers unseen in train.",
        "1.1.0": "Train holds each number below 1000 BUILDING_BLOCK_REPEATS (4) times."}
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
        tfds.core.BuilderConfig(name=f"en_{lang}", description=f"English -> {lang!r} number words")
        for lang in NUM2WORDS_LANGUAGES]
    DESCRIPTION = (
        f"Numbers in [0, {MAX_NUMBER}) written in words by num2words, English -> another "
        f"language. Train holds every number below {NUM_BUILDING_BLOCKS}; validation and test "
        "hold other numbers, never seen in train. Deterministic.")

    def features(self):
        return {**super().features(), "number": tfds.features.Scalar(np.int64)}

    def examples(self):
        return num2words_examples(self.builder_config.name.removeprefix("en_"))
