"""Embedded sequence-to-sequence TFDS datasets, generated offline: "zoo_num2words" and
"zoo_synthetic_seq2seq".

Both have the features {"source": Text, "target": Text} (supervised keys source -> target), the
splits "train", "validation" and "test", versions 1.1.0 (num2words) and 1.0.0 (synthetic), and
are named "<dataset>/<config>" like any TFDS dataset with BuilderConfigs
("zoo_num2words/en_de"; the bare name is the first config). They are written as array_record and read with `tfds.data_source`, without TensorFlow.
Generation is deterministic: sampling uses NumPy's legacy `RandomState`, whose streams are
frozen across NumPy versions.

"zoo_num2words": a number in [0, MAX_NUMBER) written in English words (source) and in another
language (target), both by num2words, plus the feature "number" (int64), e.g. 2026 ->
"two thousand and twenty-six" -> "deux mille vingt-six". Configs "en_fr" (default), "en_de",
"en_it", "en_pt" (European Portuguese). num2words 0.5.14 writes these well; German has one
slip, "...einstausend" for a thousands group ending in 01 (201000 -> "zweihunderteinstausend",
~1% of numbers), and Spanish is left out ("veintiuno mil" for 21000, ~10% of numbers).
Every config uses the same numbers: "test" is the first NUM2WORDS_SIZES["test"] of a seeded
permutation of [NUM_BUILDING_BLOCKS, MAX_NUMBER), "validation" the next ones, and "train" is
every number below NUM_BUILDING_BLOCKS (the words all larger numbers are made of),
BUILDING_BLOCK_REPEATS (4) times each, plus the following ones of the permutation. The splits are disjoint, so a model is tested on numbers it
never saw; held-out numbers are all >= 1000. Sizes (train / validation / test): 40000 / 1000 /
2000. Lengths in characters are max (all splits) / mean (train); "chars" counts the distinct
characters of train's sources and targets; "prepare" is the time to generate and write a config
(num2words takes 5 to 130 us a call, depending on the language):

    config  2026 ->                     source      target      chars  prepare
    en_fr   deux mille vingt-six        73 / 56.7   73 / 45.8   27     10 s
    en_de   zweitausendsechsundzwanzig  73 / 56.7   65 / 48.0   27     10 s
    en_it   duemilaventisei             73 / 56.7   58 / 37.3   26      4 s
    en_pt   dois mil e vinte e seis     73 / 56.7   69 / 48.2   26      6 s

A seq_len of 80 fits every config (the target's EOS included).

"zoo_synthetic_seq2seq": classic synthetic tasks, one config each. "copy", "reverse" and "sort"
(the characters in code-point order) take strings of 1..MAX_SYMBOLS letters from `LETTERS`
(length uniform, then letters uniform) and share the same sources; "addition" maps "a+b" to the
decimal sum, each operand of 1..MAX_DIGITS digits (digit count uniform, then value uniform, no
leading zeros), e.g. "123+4567" -> "4690". Sources are unique across all splits (a repeated draw
is skipped), shuffled, then cut into test / validation / train of SYNTHETIC_SIZES: 1000 / 500 /
20000. Lengths (max / mean of train): copy, reverse, sort 20 / 11.2 for source and target (26
characters); addition 21 / 12.1 for the source, 11 / 7.3 for the target (11 characters).
Preparing a config takes under 1 s.
"""
from __future__ import annotations

import abc
import sys
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from num2words import num2words

from zoo.data.corpus import prepare_builder

Examples = dict[str, list[tuple[str, dict[str, Any]]]]  # split -> [(unique key, features)]

NUM2WORDS = "zoo_num2words"
SYNTHETIC = "zoo_synthetic_seq2seq"
SEED = 2026

MAX_NUMBER = 1_000_000
NUM_BUILDING_BLOCKS = 1_000  # 0..999, all in train
# Each building block is in train this many times: uniform sampling below MAX_NUMBER makes short
# numbers rare (85 of 40,000 sources under 12 characters), and a model trained on one copy of
# each mistranslated "twelve" or "one hundred" while getting the held-out numbers right.
BUILDING_BLOCK_REPEATS = 4
NUM2WORDS_SIZES = {"train": 40_000, "validation": 1_000, "test": 2_000}
NUM2WORDS_LANGUAGES = ("fr", "de", "it", "pt")  # targets; the source is English

SYNTHETIC_TASKS = ("copy", "reverse", "sort", "addition")
SYNTHETIC_SIZES = {"train": 20_000, "validation": 500, "test": 1_000}
LETTERS = "abcdefghijklmnopqrstuvwxyz"
MAX_SYMBOLS = 20  # letters in a copy / reverse / sort source
MAX_DIGITS = 10  # digits in an addition operand


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


class PairBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder of generated (source, target) text pairs: nothing is downloaded.

    Subclasses set VERSION, RELEASE_NOTES, BUILDER_CONFIGS and DESCRIPTION, and define
    `examples()`; `features()` may add features to "source" and "target".
    """

    DESCRIPTION: str

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> tfds.core.Path:
        """The subclass's file (TFDS's default lookup needs the uninstalled importlib_resources)."""
        return tfds.core.Path(sys.modules[cls.__module__].__file__)

    def features(self) -> dict[str, tfds.features.FeatureConnector]:
        """The dataset's features: "source" and "target" texts."""
        return {"source": tfds.features.Text(), "target": tfds.features.Text()}

    @abc.abstractmethod
    def examples(self) -> Examples:
        """Per split: [(unique key, features)], in a fixed order."""

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=self.DESCRIPTION, features=tfds.features.FeaturesDict(self.features()),
            supervised_keys=("source", "target"))

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {split: self._generate_examples(examples)
                for split, examples in self.examples().items()}

    def _generate_examples(self, examples):
        yield from examples


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


BUILDERS: dict[str, type[PairBuilder]] = {NUM2WORDS: ZooNum2words, SYNTHETIC: ZooSyntheticSeq2seq}


def is_embedded(dataset: str) -> bool:
    """Whether `dataset` ("name" or "name/config") is one of this module's datasets."""
    return dataset.partition("/")[0] in BUILDERS


def prepare(dataset: str, data_dir: str | None = None) -> str:
    """Prepare `dataset` ("zoo_num2words/en_fr", "zoo_synthetic_seq2seq/reverse", or a bare
    name for its first config) in `data_dir` (default: `corpus.default_data_dir()`); return it.
    """
    name, _, config = dataset.partition("/")
    if name not in BUILDERS:
        raise ValueError(f"{dataset!r} is not an embedded seq2seq dataset ({', '.join(BUILDERS)}).")
    configs = BUILDERS[name].builder_configs
    if config and config not in configs:
        raise ValueError(f"{name!r} has no config {config!r}; it has {', '.join(configs)}.")
    return prepare_builder(BUILDERS[name], data_dir, config=config or None)
