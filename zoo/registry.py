"""Model registry: names -> (config dataclass, module class, preset values, task).

`create_model(name, **overrides)` and `list_models(pattern)` work like timm's functions of the
same names. Each model family registers its presets in its own file (see `zoo/models`).
"""
from __future__ import annotations

import dataclasses
import fnmatch
import importlib
from typing import TYPE_CHECKING, Any

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


_REGISTRY: dict[str, ModelSpec] = {}


def _registered() -> dict[str, ModelSpec]:
    """The registry, after importing zoo.models (which registers every family's presets)."""
    importlib.import_module("zoo.models")
    return _REGISTRY


def register_model(name: str, config_cls: type, module_cls: type,
                   preset: dict[str, Any], task: str, decoder_cls: type | None = None) -> None:
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice.")
    _check_fields(name, config_cls, preset)
    _REGISTRY[name] = ModelSpec(name, config_cls, module_cls, dict(preset), task, decoder_cls)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models matching a shell-style `pattern` ("gpt*")."""
    return sorted(n for n in _registered() if fnmatch.fnmatch(n, pattern))


def get_spec(name: str) -> ModelSpec:
    if name not in _registered():
        close = [n for n in _REGISTRY if n.split("_")[0] == name.split("_")[0]]
        hint = f" Did you mean one of {close}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}.{hint} Available models: {', '.join(list_models())}."
        )
    return _REGISTRY[name]


def model_config_fields(name: str) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(get_spec(name).config_cls))


def get_config(name: str, **overrides: Any):
    """The frozen config dataclass of preset `name` with `overrides` applied."""
    spec = get_spec(name)
    _check_fields(name, spec.config_cls, overrides)
    return spec.config_cls(**{**spec.preset, **overrides})


def create_model(name: str, **overrides: Any) -> nn.Module:
    """A `flax.linen.Module` for the registered model `name`, e.g. create_model("gpt_tiny", dropout_rate=0.0)."""
    spec = get_spec(name)
    return spec.module_cls(get_config(name, **overrides))


def _check_fields(name: str, config_cls: type, values: dict[str, Any]) -> None:
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(
            f"unknown config field(s) {unknown} for model {name!r} ({config_cls.__name__}); "
            f"valid fields: {', '.join(sorted(fields))}."
        )
