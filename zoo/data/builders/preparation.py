"""Where the embedded datasets are prepared, and preparing one: once, safely across processes."""
from __future__ import annotations

import contextlib
import fcntl
import os

import tensorflow_datasets as tfds


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
