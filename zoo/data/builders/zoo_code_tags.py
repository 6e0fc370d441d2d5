"""Lines of standard-library source, each character tagged by its token type: "zoo_code_tags".

A per-character tagging set built offline from source that ships with Python. Whole files are
run through `tokenize` (so a multi-line string is STRING on every line it spans), every
character gets the tag (`TAG_NAMES`) of the token covering it, and each non-blank line of at
most `MAX_LINE_CHARS` characters becomes one example: {"text": the line without its newline,
"tags": one tag id per character, "source": "<file>:<line number>"}.

Tags: NAME (identifiers, soft keywords such as `match` included), KEYWORD (NAME tokens for which
`keyword.iskeyword` holds), OP, NUMBER, STRING (a whole f-string on 3.11; on 3.12+ the parts
of its replacement fields are tagged as code), COMMENT, and OTHER for the
characters outside any of those tokens (indentation, spaces between tokens, a line-continuation
backslash).

Generated files (the charmap tables of `encodings`, `pydoc_data`, sysconfig data) are left out,
and to keep preparation quick only a fixed subset is used: files in md5("select:<path>") order, the
first `MAX_LINES_PER_FILE` qualifying lines of each, until `MAX_EXAMPLES` lines. Splits are by
file (`labelled_builder.split_of(path)`: "test" ~15%, "validation" ~5%, "train" the rest), so
test lines come from files never seen in training.

Counts under CPython 3.11.7 (deterministic for a given Python version, not across versions),
with the share of characters per tag:

    split       files  lines    chars  OTHER  NAME  KEYWORD   OP  NUMBER  STRING  COMMENT
    train         168  32686  1304588   18.7  25.0      5.0  5.1     0.4    31.5     14.2
    validation      7   1677    66757   16.5  22.6      4.8  4.8     0.3    36.5     14.5
    test           29   5637   227421   17.5  23.4      4.7  4.8     0.2    34.3     15.0

The majority tag of train (STRING) is right on ~34% of test characters. Preparing takes ~7 s.
"""
from __future__ import annotations

import hashlib
import io
import keyword
import token
import tokenize
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from zoo.data.builders.labelled_builder import LabelledBuilder
from zoo.data.builders.preparation import prepare_builder
from zoo.data.builders.stdlib_sources import stdlib_files, stdlib_path

NAME = "zoo_code_tags"
MAX_LINE_CHARS = 120
MAX_LINES_PER_FILE = 300
MAX_EXAMPLES = 40_000
TAG_NAMES: tuple[str, ...] = ("OTHER", "NAME", "KEYWORD", "OP", "NUMBER", "STRING", "COMMENT")
_TAG = {name: i for i, name in enumerate(TAG_NAMES)}
_TOKEN_TAGS = {token.NAME: _TAG["NAME"], token.OP: _TAG["OP"], token.NUMBER: _TAG["NUMBER"],
               token.STRING: _TAG["STRING"], token.COMMENT: _TAG["COMMENT"]}
for _name in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END"):  # Python >= 3.12
    if hasattr(token, _name):
        _TOKEN_TAGS[getattr(token, _name)] = _TAG["STRING"]
# Generated tables and data rather than hand-written code (encodings/: mostly charmap tables).
_SKIP_PREFIXES = ("encodings/", "pydoc_data/", "_sysconfigdata", "config-")


def num_classes() -> int:
    return len(TAG_NAMES)


def tag_source(source: str) -> list[np.ndarray]:
    """One (len(line),) uint8 array of tag ids per line of `source` (lines split at "\\n")."""
    lines = source.split("\n")
    tags = [np.zeros(len(line), np.uint8) for line in lines]
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        tag = _TOKEN_TAGS.get(tok.type)
        if tag is None:
            continue
        if tok.type == token.NAME and keyword.iskeyword(tok.string):
            tag = _TAG["KEYWORD"]
        (start_row, start_col), (end_row, end_col) = tok.start, tok.end
        for row in range(start_row, end_row + 1):
            begin = start_col if row == start_row else 0
            end = end_col if row == end_row else len(lines[row - 1])
            tags[row - 1][begin:end] = tag
    return tags


def _file_lines(rel_path: str) -> Iterator[tuple[int, str, np.ndarray]]:
    """(line number, line, tags) of the first MAX_LINES_PER_FILE qualifying lines of a file."""
    try:
        with tokenize.open(stdlib_path(rel_path)) as f:
            source = f.read()
        tags = tag_source(source)
    except (SyntaxError, UnicodeDecodeError, ValueError, tokenize.TokenError):
        return
    kept = 0
    for number, (line, line_tags) in enumerate(zip(source.split("\n"), tags), start=1):
        if line.strip() and len(line) <= MAX_LINE_CHARS and kept < MAX_LINES_PER_FILE:
            kept += 1
            yield number, line, line_tags


def code_examples() -> list[tuple[str, str, dict[str, Any]]]:
    """All (file, "<file>:<line>", {"text", "tags", "source"}) examples, in a fixed order."""
    files = sorted((f for f in stdlib_files() if not f.startswith(_SKIP_PREFIXES)),
                   key=lambda f: hashlib.md5(f"select:{f}".encode()).hexdigest())
    examples = []
    for rel_path in files:
        for number, line, tags in _file_lines(rel_path):
            if len(examples) == MAX_EXAMPLES:
                return examples
            key = f"{rel_path}:{number}"
            examples.append((rel_path, key, {"text": line, "tags": tags, "source": key}))
    return examples


class ZooCodeTags(LabelledBuilder):
    """Stdlib source lines with a token-type tag per character (TFDS name "zoo_code_tags")."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": f"{len(TAG_NAMES)} tags, <= {MAX_EXAMPLES} lines, split by file."}

    DESCRIPTION = (
        "Non-blank lines of Python standard-library source; every character is tagged with the "
        "tokenize token type covering it (NAME, KEYWORD, OP, NUMBER, STRING, COMMENT, else "
        "OTHER). Split by file. Deterministic for a given Python version."
    )
    LABEL_KEY = "tags"

    def label_feature(self):
        return tfds.features.Sequence(tfds.features.ClassLabel(names=TAG_NAMES))

    def examples(self):
        return code_examples()


def prepare(data_dir: str | None = None) -> str:
    """Prepare "zoo_code_tags" in `data_dir` (default: `default_data_dir()`); return it."""
    return prepare_builder(ZooCodeTags, data_dir)
