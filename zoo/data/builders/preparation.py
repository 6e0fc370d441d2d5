"""The zoo's one TFDS data directory, and preparing an embedded dataset there: once, safely
across processes.

Every dataset, embedded ("zoo_text", ...) or a real TFDS one ("tiny_shakespeare", "lm1b", ...),
is read from ONE directory, chosen in this order:

1. the run config's `data_dir` (`--config.data_dir=DIR`), when set;
2. else the environment variable `$ZOO_DATA_DIR`;
3. else `~/.cache/zoo/tensorflow_datasets`.

TFDS's own default (`$TFDS_DATA_DIR`, else `~/tensorflow_datasets`) is not read: point
`data_dir` or `$ZOO_DATA_DIR` there to use datasets prepared in it. Embedded datasets are
prepared in that directory on first use; a real TFDS dataset must already be prepared there,
in array_record format (`zoo.data.pipelines.tfds_splits` says how when it is missing).
"""
from __future__ import annotations

import contextlib
import fcntl
import os

import tensorflow_datasets as tfds


DEFAULT_DATA_DIR = "~/.cache/zoo/tensorflow_datasets"


def default_data_dir() -> str:
    """$ZOO_DATA_DIR, else ~/.cache/zoo/tensorflow_datasets."""
    return os.environ.get("ZOO_DATA_DIR") or os.path.expanduser(DEFAULT_DATA_DIR)


def resolve_data_dir(data_dir: str | None = None) -> str:
    """The data directory to use, absolute: `data_dir` if given, else `default_data_dir()`."""
    return os.path.abspath(os.path.expanduser(data_dir or default_data_dir()))


@contextlib.contextmanager
def offline():
    """Inside the block, TFDS does not look for datasets or their metadata on its GCS bucket.

    (`gcs_utils._is_gcs_disabled` is already True by default in tensorflow-datasets 4.9.10; older
    releases fetched `DatasetInfo` from GCS when building a builder of an unprepared dataset.)
    """
    from tensorflow_datasets.core.utils import gcs_utils

    previous = getattr(gcs_utils, "_is_gcs_disabled", True)
    gcs_utils._is_gcs_disabled = True
    try:
        yield
    finally:
        gcs_utils._is_gcs_disabled = previous


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
    data_dir = resolve_data_dir(data_dir)
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, f"{builder_cls.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with offline():
                builder = builder_cls(data_dir=data_dir, config=config,
                                      file_format="array_record")
                if not builder.is_prepared():
                    with _no_progress_bar():
                        builder.download_and_prepare(
                            download_config=tfds.download.DownloadConfig(try_download_gcs=False))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return data_dir
