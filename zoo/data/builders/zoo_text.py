"""An embedded, offline English text corpus as a real TFDS dataset: "zoo_text".

The text ships with Python itself, so nothing is downloaded:

* every entry of `pydoc_data.topics.topics` (the help() topics: the language reference), and
* long docstrings of standard-library modules and of their top-level classes and functions,
  read by parsing the source files with `ast` (no stdlib module is ever imported).

The content is deterministic for a given Python version (not across versions: the stdlib and
its docs change). Examples go to "validation" when md5(source key) % 20 == 0 (~5%), else to
"train". The dataset is written as array_record and read back with `tfds.data_source`, so
neither preparing nor reading needs TensorFlow.
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import tokenize
from collections.abc import Iterator

import tensorflow_datasets as tfds

from zoo.data.builders.preparation import prepare_builder
from zoo.data.builders.stdlib_sources import module_name, stdlib_files, stdlib_path

NAME = "zoo_text"
MIN_DOCSTRING_CHARS = 200


def _docstrings(rel_path: str) -> Iterator[tuple[str, str]]:
    """(source, raw docstring) of a module and its top-level classes and functions."""
    try:
        with tokenize.open(stdlib_path(rel_path)) as f:  # honours PEP 263 encoding declarations
            tree = ast.parse(f.read(), filename=rel_path)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return  # a few stdlib files are templates or use another grammar
    module = module_name(rel_path)
    yield module, ast.get_docstring(tree, clean=False)
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            yield f"{module}.{node.name}", ast.get_docstring(node, clean=False)


def corpus_examples() -> list[tuple[str, str]]:
    """All (source, text) pairs of the corpus, in a fixed order, unique in source and text."""
    import pydoc_data.topics  # data only: a dict literal

    candidates = [(f"pydoc_data.topics:{k}", v) for k, v in sorted(pydoc_data.topics.topics.items())]
    for rel_path in stdlib_files():
        candidates.extend(_docstrings(rel_path))
    examples, seen_sources, seen_texts = [], set(), set()
    for source, text in candidates:
        text = inspect.cleandoc(text or "")
        if len(text) < MIN_DOCSTRING_CHARS or source in seen_sources or text in seen_texts:
            continue
        seen_sources.add(source)
        seen_texts.add(text)
        examples.append((source, text))
    return examples


def split_of(source: str) -> str:
    """"validation" for ~5% of source keys (stable md5 hash), else "train"."""
    return "validation" if int(hashlib.md5(source.encode()).hexdigest(), 16) % 20 == 0 else "train"


class ZooText(tfds.core.GeneratorBasedBuilder):
    """Python's own documentation as an English text corpus (TFDS name "zoo_text")."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "pydoc topics and stdlib docstrings, ~5% held out by source hash."}

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> tfds.core.Path:
        """This file. (TFDS's default lookup needs the uninstalled `importlib_resources`.)"""
        return tfds.core.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=(
                "English text that ships with Python: every pydoc_data topic and the docstrings "
                f"(>= {MIN_DOCSTRING_CHARS} chars) of standard-library modules and their top-level "
                "classes and functions, parsed with ast. Deterministic for a given Python version."
            ),
            features=tfds.features.FeaturesDict({
                "text": tfds.features.Text(),
                "source": tfds.features.Text(),
            }),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        examples = corpus_examples()
        return {
            split: self._generate_examples([e for e in examples if split_of(e[0]) == split])
            for split in ("train", "validation")
        }

    def _generate_examples(self, examples):
        for source, text in examples:
            yield source, {"text": text, "source": source}


def prepare(data_dir: str | None = None) -> str:
    """Prepare "zoo_text" in `data_dir` (default `default_data_dir()`) unless there; return it."""
    return prepare_builder(ZooText, data_dir)
