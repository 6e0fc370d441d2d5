"""Opening a split of a TFDS dataset by name, prepared as array_record, and reading its examples.

Any TFDS dataset opens by name: "tiny_shakespeare", "lm1b", "imdb_reviews", "ag_news_subset",
"ted_hrlr_translate/pt_to_en" ("name/config"), "lm1b:1.1.0" ("name:version"). Splits are read
with `tfds.data_source` (array_record, no TensorFlow), with `download=False` and without GCS
lookups: a run never downloads anything, so it needs no network.

The directory is the zoo's one data directory (`zoo.data.builders.preparation`): the config's
`data_dir`, else `$ZOO_DATA_DIR`, else `~/.cache/zoo/tensorflow_datasets`. An embedded dataset
(`zoo.data.builders`) is prepared there on first use; any other must already be prepared there.
What cannot be opened is a `ConfigError` of one line, raised within seconds, that names:

* an unknown name: the close names among TFDS's datasets (`difflib`), or for "name/config" the
  dataset's configs;
* a dataset not prepared in the directory: the directory and the command that prepares it once
  (this one needs the network, and for some builders TensorFlow):
  `python -c "import tensorflow_datasets as tfds; tfds.builder('NAME', data_dir='DIR',
  file_format='array_record').download_and_prepare()"`. (`tfds build` imports TensorFlow.)
* a split the prepared dataset lacks, or a dataset prepared in another file format.

Reading a prepared dataset needs tensorflow-datasets and its own dependencies only; preparing a
real one also imports `importlib_resources` (TFDS finds its checksums files with it).
"""
from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import tensorflow_datasets as tfds

from zoo.data.builders import TASKS
from zoo.data.builders.preparation import offline, resolve_data_dir
from zoo.errors import ConfigError

READ_CHUNK = 65_536  # examples per `__getitems__` call

# TFDS's packages of builders that live outside `tensorflow_datasets.datasets` (e.g. "glue",
# "c4", "wmt14_translate"). TFDS imports them in one go and stops at the first that fails (some
# need h5py), which hides the rest; `builder_class` imports them one by one instead.
LEGACY_PACKAGES = (
    "audio", "graphs", "image", "image_classification", "object_detection", "nearest_neighbors",
    "question_answering", "d4rl", "ranking", "recommendation", "rl_unplugged", "rlds.datasets",
    "robotics", "robomimic", "structured", "summarization", "text", "text_simplification",
    "time_series", "translate", "video", "vision_language",
)


class _NoMissingInfoWarning(logging.Filter):
    """Drops TFDS's "Variant folder ... has no dataset_info.json" warnings: an unprepared dataset
    is reported by `open_split`'s one-line error instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().endswith("has no dataset_info.json")


@contextlib.contextmanager
def _quiet():
    """Inside the block: no GCS lookups (`offline`), no warnings about unprepared datasets."""
    log, quiet = logging.getLogger("absl"), _NoMissingInfoWarning()
    log.addFilter(quiet)
    try:
        with offline():
            yield
    finally:
        log.removeFilter(quiet)


def _import_legacy_packages() -> None:
    for package in LEGACY_PACKAGES:
        with contextlib.suppress(Exception):  # a package whose own imports are missing
            importlib.import_module(f"tensorflow_datasets.{package}")


def builder_class(name: str) -> type[tfds.core.DatasetBuilder] | None:
    """The builder class TFDS registers as `name` (no config, no version), or None."""
    for attempt in range(2):
        try:
            return tfds.builder_cls(name)
        except tfds.core.DatasetNotFoundError:
            if attempt == 0:
                _import_legacy_packages()
    return None


def _close(word: str, candidates: list[str]) -> str:
    return ", ".join(difflib.get_close_matches(word, sorted(set(candidates)), n=5, cutoff=0.6))


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _why_malformed(dataset: str) -> str:
    """Why TFDS cannot parse `dataset` as "name[/config][:version]", in a few words."""
    if not dataset:
        return "it is empty"
    if any(c.isspace() for c in dataset):
        return "it contains whitespace"
    base, colon, version = dataset.partition(":")
    parts = base.split("/")
    if "" in parts or (colon and not version):
        return "it has an empty part (a '/' or ':' at an end, or doubled)"
    bad = next((part for part in parts if not _IDENTIFIER.fullmatch(part)), None)
    if bad is not None:
        return f"{bad!r} is not a name (letters, digits and '_', not starting with a digit)"
    if colon and not re.fullmatch(r"[\d*]+\.[\d*]+\.[\d*]+", version):
        return f"the version {version!r} is not of the form x.y.z"
    if len(parts) > 2:
        return "it has more than one '/'"
    return "TFDS cannot parse it"


def _one_line(text: object) -> str:
    """`text` with its runs of whitespace (newlines included) made single spaces."""
    return " ".join(str(text).split())


def check_dataset_name(dataset: str, instead: str = "") -> type[tfds.core.DatasetBuilder]:
    """The builder class of `dataset` ("name", "name/config", "name:version"); a ConfigError
    with the close names for an unknown dataset or config. Reads no data, touches no network."""
    or_instead = f"; or use {instead}" if instead else ""
    try:
        name, kwargs = tfds.core.naming.parse_builder_name_kwargs(dataset)
    except Exception:  # malformed "name/config:version/..."; TFDS's help spans many lines
        raise ConfigError(f"{dataset!r} is not a TFDS dataset name: {_why_malformed(dataset)}; "
                          f"expected 'name', 'name/config' or 'name:version' (e.g. 'lm1b', "
                          f"'ted_hrlr_translate/pt_to_en', 'lm1b:1.1.0'){or_instead}.") from None
    if name.namespace:
        raise ConfigError(
            f"TFDS dataset {dataset!r} is in the namespace {name.namespace!r}; the zoo opens "
            f"only TFDS's own datasets (a namespace's builder looks its data up online)"
            f"{or_instead}.")
    try:
        cls = builder_class(str(name))
    except ImportError as e:  # the builder's module imports a package that is not installed
        raise ConfigError(f"the TFDS builder of {dataset!r} cannot be imported here "
                          f"({type(e).__name__}: {_one_line(e)}); install {e.name or 'what it names'}"
                          f"{or_instead}.") from e
    if cls is None and str(name) in TASKS:  # the zoo's own, registered only where it is read
        use = f"; use {instead}" if instead else ""
        raise ConfigError(f"{str(name)!r} is the zoo's embedded dataset for {TASKS[str(name)]}, "
                          f"which this model's task does not read{use}.")
    if cls is None:
        close = _close(str(name), tfds.list_builders(with_community_datasets=False))
        hint = (f"close names: {close}" if close else "no close name; list them with python -c "
                "\"import tensorflow_datasets as tfds; print(tfds.list_builders())\"")
        raise ConfigError(f"no TFDS dataset is named {str(name)!r}: {hint}{or_instead}.")
    config = kwargs.get("config")
    if isinstance(config, str) and config not in cls.builder_configs:
        configs = list(cls.builder_configs)
        if not configs:
            raise ConfigError(f"TFDS dataset {str(name)!r} has no configs, so not {config!r}: "
                              f"use --config.dataset={name}{or_instead}.")
        close = _close(config, configs)
        raise ConfigError(
            f"TFDS dataset {str(name)!r} has no config {config!r}"
            f"{f' (close: {close})' if close else ''}; its configs: {', '.join(configs)}.")
    return cls


def _imports_tensorflow(cls: type) -> bool:
    """Whether the module of the builder, or of a TFDS base class of it other than TFDS's core,
    imports TensorFlow (lazily, as TFDS's builders do): its download_and_prepare then needs
    TensorFlow installed; reading the prepared data does not."""
    from etils.epy.lazy_imports_utils import LazyModule

    def imports_tf(module: Any) -> bool:
        return any((isinstance(v, LazyModule) and vars(v).get("module_name") == "tensorflow")
                   or getattr(v, "__name__", None) == "tensorflow"
                   for v in vars(module).values())

    modules = {sys.modules.get(k.__module__) for k in cls.__mro__
               if not k.__module__.startswith("tensorflow_datasets.core")}
    return any(imports_tf(m) for m in modules if m is not None)


def prepare_command(dataset: str, data_dir: str, cls: type | None = None) -> str:
    """The shell command that prepares `dataset` in `data_dir` as array_record (network needed),
    preceded by a `pip install` of what it needs and this environment lacks."""
    python = (f"import tensorflow_datasets as tfds; tfds.builder({dataset!r}, "
              f"data_dir={data_dir!r}, file_format='array_record').download_and_prepare()")
    needed = [package for package, wanted in (
        ("importlib_resources", True),
        ("tensorflow", cls is not None and _imports_tensorflow(cls)),
    ) if wanted and importlib.util.find_spec(package) is None]
    install = f"pip install {' '.join(needed)} && " if needed else ""
    return f'{install}python -c "{python}"'


def _split_names(split: str) -> list[str]:
    """"train[:10%]+validation" -> ["train", "validation"]."""
    return [re.sub(r"\[.*", "", part).strip() for part in split.split("+")]


def _prepared_versions(builder: Any) -> list[str]:
    """Versions of the builder's dataset/config prepared in its data dir (any format)."""
    parent = os.path.dirname(os.fspath(builder.data_dir))
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    return sorted(n for n in names if re.fullmatch(r"\d+\.\d+\.\d+", n)
                  and os.path.exists(os.path.join(parent, n, "dataset_info.json")))


def _cannot_open(dataset: str, split: str, data_dir: str, instead: str, serves: tuple[str, ...],
                 error: Exception) -> ConfigError:
    """The one-line ConfigError for a dataset that TFDS could not open, checked on disk."""
    or_instead = f"; or use {instead}" if instead else ""
    task = TASKS.get(re.split(r"[/:]", dataset, maxsplit=1)[0])
    cls = None
    with contextlib.suppress(Exception):
        cls = check_dataset_name(dataset)
    builder = None
    with contextlib.suppress(Exception), _quiet():
        builder = tfds.builder(dataset, data_dir=data_dir)  # any file format: to inspect
    prepared = False
    with contextlib.suppress(Exception), _quiet():
        prepared = builder is not None and builder.is_prepared()
    if not prepared and task is not None and serves and task not in serves:
        return ConfigError(
            f"TFDS dataset {dataset!r} is the zoo's embedded dataset for {task}, which a {task} "
            f"run prepares on first use, and is not prepared in the data dir {data_dir}; for "
            f"this task use {instead or 'another dataset'}.")
    if not prepared:
        versions = _prepared_versions(builder) if builder is not None else []
        unversioned = dataset.rsplit(":", 1)[0]
        found = (f" (prepared there at version {', '.join(versions)}: name one as "
                 f"'{unversioned}:{versions[-1]}')") if versions else ""
        return ConfigError(
            f"TFDS dataset {dataset!r} is not prepared in the data dir {data_dir}{found}; runs "
            f"never download. Prepare it there once (needs the network): "
            f"{prepare_command(dataset, data_dir, cls)}{or_instead}.")
    splits = list(builder.info.splits)
    missing = [s for s in _split_names(split) if s not in splits]
    if missing:
        fix = ("training reads its 'train' split" if "train" in missing else
               "name one of them as the eval split: --config.eval_split in training, "
               "--split in experiments.evaluate")
        return ConfigError(
            f"TFDS dataset {dataset!r} has no split {', '.join(map(repr, missing))}; its splits "
            f"are {', '.join(map(repr, sorted(splits)))} ({fix}).")
    formats = sorted(str(f.value) for f in builder.info.available_file_formats())
    if "array_record" not in formats:
        return ConfigError(
            f"TFDS dataset {dataset!r} is prepared in {builder.data_dir} as "
            f"{', '.join(formats) or 'an unknown format'}, not array_record, which reading "
            f"without TensorFlow needs: delete that directory and prepare it again: "
            f"{prepare_command(dataset, data_dir, cls)}{or_instead}.")
    detail = _one_line(error)[:300]
    return ConfigError(
        f"could not open TFDS dataset {dataset!r} split {split!r} in the data dir {data_dir} "
        f"({type(error).__name__}: {detail}){or_instead}.")


def open_split(dataset: str, split: str, data_dir: str | None = None, *,
               prepare: Callable[[str | None], str] | None = None, instead: str = "",
               serves: tuple[str, ...] = ()):
    """`tfds.data_source` of a split of `dataset`, read from the data dir (module docstring).

    prepare: for an embedded dataset, builds it in the data dir if needed and returns that dir.
    instead: what the error offers besides preparing the dataset, e.g. "--config.dataset=
      zoo_text (the embedded corpus)".
    serves: the tasks of the calling pipeline (values of `zoo.data.builders.TASKS`): an
      embedded dataset of another task that is not prepared is named as such. A dataset that cannot be opened is a ConfigError (a
      ValueError) of one line: see the module docstring.
    """
    data_dir = resolve_data_dir(data_dir)
    if prepare is not None:
        data_dir = prepare(data_dir)
    else:
        check_dataset_name(dataset, instead)
    try:
        with _quiet():
            return tfds.data_source(dataset, split=split, data_dir=data_dir, download=False,
                                    try_gcs=False,
                                    builder_kwargs={"file_format": "array_record"})
    except Exception as e:  # TFDS raises several types for "not found / not prepared"
        raise _cannot_open(dataset, split, data_dir, instead, serves, e) from e


def missing_features(dataset: str, features: Any, missing: list[str], needs: str) -> ConfigError:
    """The one-line ConfigError for a dataset that lacks features a task reads; `needs` says
    what the task reads and which config fields name those features."""
    return ConfigError(
        f"dataset {dataset!r} has no feature {', '.join(map(repr, missing))}; its features are "
        f"{', '.join(map(repr, features)) or 'none'}. {needs}")


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
