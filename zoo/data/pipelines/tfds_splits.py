"""Opening a split of a TFDS dataset prepared as array_record, and reading its examples.

Splits are read with `tfds.data_source`, so no TensorFlow is needed. An embedded dataset
(`zoo.data.builders`) is prepared first; any other must already be prepared in `data_dir`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import tensorflow_datasets as tfds

READ_CHUNK = 65_536  # examples per `__getitems__` call


def open_split(dataset: str, split: str, data_dir: str | None = None, *,
               prepare: Callable[[str | None], str] | None = None, instead: str):
    """`tfds.data_source` of a split of `dataset` in `data_dir`.

    prepare: for an embedded dataset, builds it in `data_dir` if needed and returns that dir.
    instead: what the error offers besides preparing the dataset, e.g. "an embedded dataset:
      ...". A dataset that cannot be opened is a ValueError naming the dataset, split and
      data_dir, TFDS's own error, and that fix.
    """
    if prepare is not None:
        data_dir = prepare(data_dir)
    try:
        return tfds.data_source(dataset, split=split, data_dir=data_dir)
    except Exception as e:  # TFDS raises several types for "not found / not prepared"
        raise ValueError(
            f"could not open TFDS dataset {dataset!r} split {split!r} in data_dir={data_dir!r} "
            f"({type(e).__name__}: {e}). Prepare it there in array_record format, or use "
            f"{instead}."
        ) from e


def read_examples(source: Any) -> Iterator[Any]:
    """Every example of a data source, in index order.

    Read READ_CHUNK examples per `__getitems__` call (~2x faster than item by item), item by
    item where the source has no working `__getitems__` (e.g. under `tfds.testing.mock_data`).
    """
    for start in range(0, len(source), READ_CHUNK):
        indices = list(range(start, min(start + READ_CHUNK, len(source))))
        try:
            examples = source.__getitems__(indices)
        except (AttributeError, TypeError):  # no (working) __getitems__
            examples = map(source.__getitem__, indices)
        yield from examples


def as_text(value: Any) -> str:
    """A text feature's value (bytes from array_record) as str."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
