"""Model registry: names -> (config dataclass, module class, preset values, task).

`create_model(name, **overrides)` and `list_models(pattern)` work like timm's functions of the
same names. Each model family registers its presets in its own file when it is imported;
importing `zoo.models` imports them all, and the lookups below are used through it
(`from zoo.models import get_spec`) or through `zoo.create_model`. This module imports no model:
the layers point one way, models -> registry.
"""
from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zoo.errors import ConfigError

if TYPE_CHECKING:  # flax (and so jax) loads with the model families, on first lookup
    import flax.linen as nn


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    config_cls: type
    module_cls: type  # a flax.linen.Module subclass
    preset: dict[str, Any]
    task: str  # name of the task in zoo.tasks that trains this model
    decoder_cls: type | None = None  # adapts the model to zoo.decode (None: cannot generate)
    task_settings: dict[str, Any] = dataclasses.field(default_factory=dict)  # task defaults
    # (config, task, batch, seq_len) -> matmul FLOPs of one training step, forward and backward
    # (None: not counted); the loop logs TFLOP/s and, against the peak for the config's
    # `compute_dtype` (which such a config must have), MFU from it.
    train_flops: Callable[[Any, Any, int, int], float] | None = None


_REGISTRY: dict[str, ModelSpec] = {}
# Config fields renamed since earlier releases: old name -> new name (old workdirs and scripts).
RENAMED_FIELDS = {"dtype": "compute_dtype"}


def _registered() -> dict[str, ModelSpec]:
    if not _REGISTRY:
        raise LookupError("no model is registered yet: import zoo.models (which registers every "
                          "family) or use zoo.create_model.")
    return _REGISTRY


def register_model(name: str, config_cls: type, module_cls: type,
                   preset: dict[str, Any], task: str, decoder_cls: type | None = None,
                   task_settings: dict[str, Any] | None = None,
                   train_flops: Callable[[Any, Any, int, int], float] | None = None) -> None:
    """Registers preset `name`; `task_settings` are this preset's defaults for its task's run
    settings (e.g. the transformer's label smoothing 0.1, where the seq2seq task's is 0);
    `train_flops` counts a training step's model FLOPs (`ModelSpec.train_flops`)."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice.")
    _check_fields(name, config_cls, preset)
    _REGISTRY[name] = ModelSpec(name, config_cls, module_cls, dict(preset), task, decoder_cls,
                                dict(task_settings or {}), train_flops)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models matching a shell-style `pattern` ("gpt*")."""
    if not isinstance(pattern, str):
        raise ConfigError(f"list_models takes a shell-style pattern string such as 'gpt*'; got "
                          f"{pattern!r}.")
    return sorted(n for n in _registered() if fnmatch.fnmatch(n, pattern))


def get_spec(name: str) -> ModelSpec:
    if not isinstance(name, str):
        raise ConfigError(f"a model name is a string; got {name!r} of type {type(name).__name__}."
                          f" Available models: {', '.join(list_models())}.")
    if name not in _registered():
        close = [n for n in _REGISTRY if n.split("_")[0] == name.split("_")[0]]
        hint = f" Did you mean one of {close}?" if close else ""
        raise ConfigError(
            f"unknown model {name!r}.{hint} Available models: {', '.join(list_models())}."
        )
    return _REGISTRY[name]


def model_config_fields(name: str) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(get_spec(name).config_cls))


def get_config(name: str, **overrides: Any):
    """The frozen config dataclass of preset `name` with `overrides` applied."""
    spec = get_spec(name)
    overrides = upgrade_fields(spec.config_cls, overrides)
    _check_fields(name, spec.config_cls, overrides)
    return spec.config_cls(**{**spec.preset, **overrides})


def create_model(name: str, **overrides: Any) -> nn.Module:
    """A `flax.linen.Module` for the registered model `name`, e.g. create_model("gpt_tiny", dropout_rate=0.0)."""
    spec = get_spec(name)
    return spec.module_cls(get_config(name, **overrides))


def upgrade_fields(config_cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """`values` written by an earlier release as this one reads them: renamed fields
    (RENAMED_FIELDS) under their current names, `remat` booleans as the policy names that
    replaced them."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    values = {RENAMED_FIELDS[k] if k in RENAMED_FIELDS and RENAMED_FIELDS[k] in fields else k: v
              for k, v in values.items()}
    if isinstance(values.get("remat"), bool):
        values["remat"] = "full" if values["remat"] else "none"
    return values


def saved_config_fields(name: str, saved: dict[str, Any]) -> dict[str, Any]:
    """A model config saved by an earlier release (a workdir's metadata) as this release writes
    it (see `upgrade_fields`), fields added since at their preset values."""
    spec = get_spec(name)
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    values = {k: v for k, v in upgrade_fields(spec.config_cls, saved).items() if k in fields}
    return dataclasses.asdict(spec.config_cls(**{**spec.preset, **values}))


def _check_fields(name: str, config_cls: type, values: dict[str, Any]) -> None:
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(
            f"unknown config field(s) {unknown} for model {name!r} ({config_cls.__name__}); "
            f"valid fields: {', '.join(sorted(fields))}."
        )
