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
import contextlib
import fcntl
import hashlib
import inspect
import os
import tokenize
from collections.abc import Iterator

import tensorflow_datasets as tfds

NAME = "zoo_text"
MIN_DOCSTRING_CHARS = 200
# Stdlib directories / files never read (tests, GUIs, vendored or legacy packages).
_SKIP_DIRS = frozenset({
    "site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "tkinter",
    "turtledemo", "ensurepip", "__pycache__", "distutils",
})


def _is_skipped(part: str) -> bool:
    """True for a path component that is excluded, or that names a test ("test_x", "x_test")."""
    stem = part.removesuffix(".py")
    return part in _SKIP_DIRS or bool({"test", "tests"} & set(stem.split("_")))


def _stdlib_files() -> list[str]:
    """Paths of the stdlib's .py files relative to its root, sorted, skipped ones left out."""
    root = os.path.dirname(os.__file__)
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not _is_skipped(d)]
        rel = os.path.relpath(dirpath, root)
        for f in filenames:
            if f.endswith(".py") and not _is_skipped(f):
                files.append(os.path.normpath(os.path.join(rel, f)).replace(os.sep, "/"))
    return sorted(files)


def _module_name(rel_path: str) -> str:
    """"email/mime/text.py" -> "email.mime.text"; "json/__init__.py" -> "json"."""
    parts = rel_path[:-3].split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _docstrings(rel_path: str) -> Iterator[tuple[str, str]]:
    """(source, raw docstring) of a module and its top-level classes and functions."""
    path = os.path.join(os.path.dirname(os.__file__), rel_path)
    try:
        with tokenize.open(path) as f:  # honours PEP 263 encoding declarations
            tree = ast.parse(f.read(), filename=rel_path)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return  # a few stdlib files are templates or use another grammar
    module = _module_name(rel_path)
    yield module, ast.get_docstring(tree, clean=False)
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            yield f"{module}.{node.name}", ast.get_docstring(node, clean=False)


def corpus_examples() -> list[tuple[str, str]]:
    """All (source, text) pairs of the corpus, in a fixed order, unique in source and text."""
    import pydoc_data.topics  # data only: a dict literal

    candidates = [(f"pydoc_data.topics:{k}", v) for k, v in sorted(pydoc_data.topics.topics.items())]
    for rel_path in _stdlib_files():
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


def default_data_dir() -> str:
    """$ZOO_DATA_DIR, else ~/.cache/zoo/tensorflow_datasets."""
    return os.environ.get("ZOO_DATA_DIR") or os.path.expanduser("~/.cache/zoo/tensorflow_datasets")


@contextlib.contextmanager
def _no_progress_bar():
    """Hide TFDS's tqdm bars inside the block, then restore the previous setting."""
    from tensorflow_datasets.core.utils import tqdm_utils

    previous = getattr(tqdm_utils, "_active", True)
    tfds.display_progress_bar(False)
    try:
        yield
    finally:
        tfds.display_progress_bar(previous)


def prepare_builder(builder_cls: type[tfds.core.DatasetBuilder], data_dir: str | None = None,
                    config: str | None = None) -> str:
    """Prepare `builder_cls` (array_record) in `data_dir` unless already there; return the dir.

    `config` names one of the builder's BuilderConfigs (None: its default one). Idempotent and
    fast once prepared. Safe across concurrent processes: an exclusive `fcntl.flock` on
    `<data_dir>/<name>.lock` serialises the check-and-build.
    """
    data_dir = os.path.abspath(data_dir or default_data_dir())
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, f"{builder_cls.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            builder = builder_cls(data_dir=data_dir, config=config, file_format="array_record")
            if not builder.is_prepared():
                with _no_progress_bar():
                    builder.download_and_prepare(
                        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return data_dir


def prepare(data_dir: str | None = None) -> str:
    """Prepare "zoo_text" in `data_dir` (default `default_data_dir()`) unless there; return it."""
    return prepare_builder(ZooText, data_dir)


def load_texts(split: str, data_dir: str | None = None) -> list[str]:
    """All texts of `split` ("train" or "validation"), in index order, prepared if needed."""
    source = tfds.data_source(NAME, split=split, data_dir=prepare(data_dir))
    return [ex["text"].decode("utf-8") for ex in source]
