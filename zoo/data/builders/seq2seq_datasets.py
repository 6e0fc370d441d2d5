"""The embedded sequence-to-sequence datasets by name: "zoo_num2words", "zoo_synthetic_seq2seq".

`prepare("<dataset>/<config>")` prepares one config of either (a bare name: its first config).
"""
from __future__ import annotations

from zoo.data.builders import zoo_num2words, zoo_synthetic_seq2seq
from zoo.data.builders.pair_builder import PairBuilder
from zoo.data.builders.preparation import prepare_builder
from zoo.errors import ConfigError

BUILDERS: dict[str, type[PairBuilder]] = {
    zoo_num2words.NAME: zoo_num2words.ZooNum2words,
    zoo_synthetic_seq2seq.NAME: zoo_synthetic_seq2seq.ZooSyntheticSeq2seq,
}


def is_embedded(dataset: str) -> bool:
    """Whether `dataset` ("name" or "name/config") is one of this module's datasets."""
    return dataset.partition("/")[0] in BUILDERS


def prepare(dataset: str, data_dir: str | None = None) -> str:
    """Prepare `dataset` ("zoo_num2words/en_fr", "zoo_synthetic_seq2seq/reverse", or a bare
    name for its first config) in `data_dir` (default: `preparation.default_data_dir()`);
    return it.
    """
    name, _, config = dataset.partition("/")
    if name not in BUILDERS:
        raise ConfigError(f"{dataset!r} is not an embedded seq2seq dataset ({', '.join(BUILDERS)}).")
    configs = BUILDERS[name].builder_configs
    if config and config not in configs:
        raise ConfigError(f"{name!r} has no config {config!r}; it has {', '.join(configs)}.")
    return prepare_builder(BUILDERS[name], data_dir, config=config or None)
