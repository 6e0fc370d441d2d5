"""The base of the embedded labelled datasets ("zoo_docstrings", "zoo_code_tags") and their split.

`split_of(key)` puts ~15% of keys in "test", ~5% in "validation" and the rest in "train", by a
stable md5 hash; a builder chooses the key (a docstring's qualified name, a source file), so
related examples land in one split.
"""
from __future__ import annotations

import abc
import hashlib
import sys
from typing import Any

import tensorflow_datasets as tfds

SPLITS = ("train", "validation", "test")


def split_of(key: str) -> str:
    """"test" for ~15% of keys, "validation" for ~5%, else "train" (stable md5 hash of `key`)."""
    bucket = int(hashlib.md5(key.encode()).hexdigest(), 16) % 20
    return "validation" if bucket == 0 else "test" if bucket <= 3 else "train"


class LabelledBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder of labelled examples made from Python's own files: nothing is downloaded.

    Features: "text", the label feature `LABEL_KEY` (`label_feature()`), and "source" (where the
    example comes from). Subclasses set VERSION, RELEASE_NOTES, DESCRIPTION and LABEL_KEY and
    define `label_feature()` and `examples()` -> [(split key, unique key, features)]; an example
    goes to split `split_of(split key)`.
    """

    DESCRIPTION: str
    LABEL_KEY: str

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> tfds.core.Path:
        """The subclass's file (TFDS's default lookup needs the uninstalled importlib_resources)."""
        return tfds.core.Path(sys.modules[cls.__module__].__file__)

    @abc.abstractmethod
    def label_feature(self) -> tfds.features.FeatureConnector:
        """The feature stored under LABEL_KEY."""

    @abc.abstractmethod
    def examples(self) -> list[tuple[str, str, dict[str, Any]]]:
        """All (split key, unique key, features) examples, in a fixed order."""

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict({
                "text": tfds.features.Text(),
                self.LABEL_KEY: self.label_feature(),
                "source": tfds.features.Text(),
            }),
            supervised_keys=("text", self.LABEL_KEY),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        examples = self.examples()
        return {split: self._generate_examples([e for e in examples if split_of(e[0]) == split])
                for split in SPLITS}

    def _generate_examples(self, examples):
        for _, key, features in examples:
            yield key, features
