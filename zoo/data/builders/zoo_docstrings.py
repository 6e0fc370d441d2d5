"""Standard-library docstrings labelled by area, as a real TFDS dataset: "zoo_docstrings".

A sequence-classification set built offline from text that ships with Python: the docstrings of
stdlib modules, classes, functions and methods (at any depth), read by parsing the source with
`ast` (no stdlib module is imported), each labelled with the area (`CLASS_NAMES`) of its
top-level module, e.g. "email.mime.text" -> "email", "posixpath" -> "filesystem". Modules of no
listed area are left out. Texts are `inspect.cleandoc`-ed, at least `MIN_CHARS` long, and
unique after lower-casing and collapsing whitespace; a class with more than `MAX_PER_CLASS`
examples keeps a fixed, hash-chosen `MAX_PER_CLASS` of them.

Splits (`labelled_builder.split_of`, md5 of a group key): "test" ~15%, "validation" ~5%,
"train" the rest. The group key is the definition's qualified name *without* its module
("Path.glob", "isabs") and "module:<name>" for module docstrings, so the same function
documented in two files (`posixpath.isabs` and `ntpath.isabs`) lands in one split:
near-duplicates do not leak.

Counts under CPython 3.11.7 (deterministic for a given Python version, not across versions):

    class             train  validation  test  total
    asyncio             231          12    47    290
    email               232          17    51    300
    imports             231          22    47    300
    logging             163          18    42    223
    markup              228           6    34    268
    concurrency         241          11    48    300
    testing             165           7    37    209
    networking          238          21    41    300
    filesystem          238          17    44    299
    archives            166           5    20    191
    numeric             235          13    52    300
    types_functional    235          17    48    300
    all                2603         166   511   3280

A test-split majority-class baseline is ~10% (12 classes). Preparing takes ~2 s.
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import re
import tokenize
from collections.abc import Iterator
from typing import Any, ClassVar

import tensorflow_datasets as tfds

from zoo.data.builders.labelled_builder import LabelledBuilder
from zoo.data.builders.preparation import prepare_builder
from zoo.data.builders.stdlib_sources import module_name, stdlib_files, stdlib_path

NAME = "zoo_docstrings"
MIN_CHARS = 40
MAX_PER_CLASS = 300

# Area -> the stdlib top-level modules / packages whose docstrings it gets.
AREAS: dict[str, tuple[str, ...]] = {
    "asyncio": ("asyncio", "asyncore", "asynchat"),
    "email": ("email", "mailbox", "smtplib", "smtpd", "imaplib", "poplib", "nntplib", "mailcap",
              "mimetypes", "quopri"),
    "imports": ("importlib", "pkgutil", "zipimport", "modulefinder", "runpy", "imp", "py_compile",
                "compileall", "site", "sysconfig"),
    "logging": ("logging",),
    "markup": ("xml", "html", "_markupbase", "xmlrpc", "plistlib"),
    "concurrency": ("multiprocessing", "concurrent", "threading", "_threading_local", "queue",
                    "sched", "subprocess", "signal"),
    "testing": ("unittest", "doctest"),
    "networking": ("http", "urllib", "socket", "socketserver", "ssl", "ftplib", "telnetlib",
                   "wsgiref", "ipaddress", "webbrowser", "cgi", "cgitb", "netrc", "selectors"),
    "filesystem": ("os", "pathlib", "shutil", "glob", "fnmatch", "tempfile", "filecmp", "stat",
                   "posixpath", "ntpath", "genericpath", "fileinput", "io", "_pyio", "linecache"),
    "archives": ("tarfile", "zipfile", "gzip", "bz2", "lzma", "zipapp", "_compression"),
    "numeric": ("_pydecimal", "decimal", "fractions", "statistics", "random", "numbers",
                "colorsys", "secrets"),
    "types_functional": ("typing", "collections", "_collections_abc", "functools", "abc",
                         "_py_abc", "enum", "dataclasses", "operator", "contextlib", "types",
                         "copy", "weakref", "_weakrefset", "heapq", "bisect", "graphlib",
                         "reprlib", "contextvars"),
}
CLASS_NAMES: tuple[str, ...] = tuple(AREAS)
_AREA_OF = {module: area for area, modules in AREAS.items() for module in modules}


def num_classes() -> int:
    return len(CLASS_NAMES)


def _md5(key: str) -> int:
    return int(hashlib.md5(key.encode()).hexdigest(), 16)


def _definitions(node: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.AST]]:
    """(qualified name below the module, node) of every class and function inside `node`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            name = prefix + child.name
            yield name, child
            yield from _definitions(child, name + ".")
        else:  # e.g. definitions under `if sys.platform == ...:` or `try:`
            yield from _definitions(child, prefix)


def _file_docstrings(rel_path: str) -> Iterator[tuple[str, str, str]]:
    """(group key, source, raw docstring) of a module and every class and function in it."""
    try:
        with tokenize.open(stdlib_path(rel_path)) as f:
            tree = ast.parse(f.read(), filename=rel_path)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    module = module_name(rel_path)
    yield f"module:{module}", module, ast.get_docstring(tree, clean=False)
    for qualname, node in _definitions(tree):
        yield qualname, f"{module}:{qualname}:{node.lineno}", ast.get_docstring(node, clean=False)


def docstring_examples() -> list[tuple[str, str, dict[str, Any]]]:
    """All (group key, unique key, {"text", "label", "source"}) examples, in a fixed order."""
    examples, seen = [], set()
    for rel_path in stdlib_files():
        area = _AREA_OF.get(rel_path.split("/")[0].removesuffix(".py"))
        if area is None:
            continue
        for group, source, raw in _file_docstrings(rel_path):
            text = inspect.cleandoc(raw or "")
            normalized = re.sub(r"\s+", " ", text).strip().lower()
            if len(text) < MIN_CHARS or normalized in seen:
                continue
            seen.add(normalized)
            examples.append((group, source, {"text": text, "label": area, "source": source}))
    kept = set()
    for area in CLASS_NAMES:  # cap each class at a hash-chosen MAX_PER_CLASS of its examples
        sources = sorted((s for _, s, ex in examples if ex["label"] == area),
                         key=lambda s: _md5(f"keep:{s}"))
        kept.update(sources[:MAX_PER_CLASS])
    return [e for e in examples if e[1] in kept]


class ZooDocstrings(LabelledBuilder):
    """Stdlib docstrings labelled by area (TFDS name "zoo_docstrings")."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": f"{len(CLASS_NAMES)} areas; test/validation by qualified-name hash."}

    DESCRIPTION = (
        f"Docstrings (>= {MIN_CHARS} chars, deduplicated) of Python standard-library modules, "
        "classes and functions, parsed with ast and labelled by the area of their top-level "
        "module. Deterministic for a given Python version."
    )
    LABEL_KEY = "label"

    def label_feature(self):
        return tfds.features.ClassLabel(names=CLASS_NAMES)

    def examples(self):
        return docstring_examples()


def prepare(data_dir: str | None = None) -> str:
    """Prepare "zoo_docstrings" in `data_dir` (default: `default_data_dir()`); return it."""
    return prepare_builder(ZooDocstrings, data_dir)
