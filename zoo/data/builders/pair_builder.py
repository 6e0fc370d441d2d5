"""The base of the embedded sequence-to-sequence datasets: generated (source, target) text pairs.

Its datasets ("zoo_num2words", "zoo_synthetic_seq2seq") have the features {"source": Text,
"target": Text} (supervised keys source -> target) plus any a subclass adds, and are named
"<dataset>/<config>" like any TFDS dataset with BuilderConfigs ("zoo_num2words/en_de"; the bare
name is the first config). They are written as array_record and read with `tfds.data_source`,
without TensorFlow. Generation is deterministic: sampling uses NumPy's legacy `RandomState`,
whose streams are frozen across NumPy versions.
"""
from __future__ import annotations

import abc
import sys
from typing import Any

import tensorflow_datasets as tfds

Examples = dict[str, list[tuple[str, dict[str, Any]]]]  # split -> [(unique key, features)]


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
