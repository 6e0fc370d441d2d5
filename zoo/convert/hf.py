"""Loads Hugging Face GPT-2 and BERT checkpoints into the zoo's Flax `GPT` and `Bert`.

Transformers v5 has no Flax models, so the checkpoint is read with NumPy (`zoo.convert.reader`;
torch just for the legacy `pytorch_model.bin` format) and laid out as the zoo's modules declare
it by the family's key map (`zoo.convert.gpt2`, `zoo.convert.bert`: their docstrings say what
each supports and how BERT's heads are chosen). Usage::

    from zoo.convert.hf import load_hf_checkpoint

    name, model, params = load_hf_checkpoint("path/to/gpt2")  # a save_pretrained() directory
    logits = model.apply({"params": params}, tokens)  # (B, T, V), as GPT2LMHeadModel's
    tokenizer = load_hf_tokenizer("path/to/gpt2")  # zoo.convert.hf_tokenizer: its tokenizer

    name, model, params = load_hf_checkpoint("path/to/bert-base-uncased")
    logits = model.apply({"params": params}, tokens, lengths, segments=token_type_ids)
    sequence, pooled = model.apply({"params": params}, tokens, lengths, return_hidden=True)

The directory holds `config.json` and the weights: `model.safetensors`, a sharded
`model.safetensors.index.json` (+ shards), or `pytorch_model.bin` (+ `.index.json` shards; needs
torch). `name` is the registered preset the model was built from (`zoo.create_model(name,
**overrides)`; the overrides are the fields of `model.config` that differ from the preset):
"gpt2_small" / "gpt2_medium" / "bert_base" / "bert_large" / ... when the checkpoint has the
preset's sizes, else the family's tiny preset with the checkpoint's sizes.

Hugging Face's attention mask is our `lengths` (or `pad_token_id` positions when no lengths are
given), `token_type_ids` our `segments`; padded positions attend to the valid keys in both.

Not supported: other model types (ValueError), the settings each family module lists, and
TensorFlow (`tf_model.h5`) and Flax (`flax_model.msgpack`) checkpoints. The inverse direction
(zoo -> Hugging Face) is not provided.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from zoo.convert import bert, gpt2
from zoo.convert.keymap import Params, normalise_key
from zoo.convert.reader import read_checkpoint_dir, to_numpy
from zoo.models import create_model, get_spec, list_models

__all__ = ["from_hf_state_dict", "load_hf_checkpoint"]

# config.json `model_type` -> the family's key map (MODEL, PRESET_KEYS, FIXED, convert, ...).
_FAMILIES = {"gpt2": gpt2, "bert": bert}


def load_hf_checkpoint(path: str | os.PathLike, *, dtype: Any = None,
                       overrides: Mapping[str, Any] | None = None) -> tuple[str, nn.Module, Params]:
    """A Hugging Face GPT-2 / BERT directory -> (registered name, zoo model, params).

    Args:
      path: a directory with `config.json` and the weights (see
        `zoo.convert.reader.read_checkpoint_dir`).
      dtype: the parameters' dtype (e.g. "bfloat16"); default float32. The compute dtype is
        the config's `compute_dtype` field (`overrides={"compute_dtype": ...}`).
      overrides: config fields the checkpoint does not fix (dropout_rate, scan_layers, remat,
        compute_dtype, attention_implementation, mask_token_id, ...). `scan_layers=True` returns the
        layers stacked under `layers` (leading axis L).

    Returns:
      (name, model, params): `model.apply({"params": params}, ...)` computes what the
      Hugging Face model computes in eval mode (see `zoo.convert.bert` for BERT's heads).

    Raises:
      FileNotFoundError: no config.json or no weights. ImportError: pytorch_model.bin without
      torch. ValueError: an unsupported model type or setting (named), or weights that do not
      fit the config.
    """
    root = Path(path)
    config_file = root / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"no config.json in {root}; pass the directory that "
                                "save_pretrained() wrote.")
    with open(config_file) as f:
        config = json.load(f)
    family = _family(config)  # before reading gigabytes of weights
    state = read_checkpoint_dir(root)
    overrides = family.overrides_from_directory(root, config, overrides or {})
    return from_hf_state_dict(config, state, dtype=dtype, overrides=overrides)


def from_hf_state_dict(config: Mapping[str, Any], state_dict: Mapping[str, Any], *,
                       dtype: Any = None, overrides: Mapping[str, Any] | None = None
                       ) -> tuple[str, nn.Module, Params]:
    """As `load_hf_checkpoint`, from a config dict and a state dict already in memory.

    E.g. `from_hf_state_dict(hf_model.config.to_dict(), hf_model.state_dict())`; the values may
    be torch tensors or NumPy arrays.
    """
    family = _family(config)
    state = {normalise_key(k): to_numpy(v) for k, v in state_dict.items()}
    overrides = dict(overrides or {})
    fields, params = family.convert(config, state)
    name = _pick_preset(family.MODEL, fields, family.PRESET_KEYS, family.fallback_preset(fields))
    clash = sorted(k for k, v in overrides.items() if k in family.FIXED and v != fields[k])
    if clash:
        raise ValueError(f"overrides {clash} contradict the checkpoint, which fixes "
                         f"{', '.join(sorted(family.FIXED))}.")
    preset = _full_preset(name)
    diff = {k: v for k, v in {**fields, **overrides}.items() if preset.get(k) != v}
    model = create_model(name, **diff)

    if model.config.scan_layers:
        params = family.stack_params(params)
    target = jnp.dtype(dtype) if dtype is not None else np.dtype(np.float32)
    params = _map(lambda a: np.ascontiguousarray(a.astype(target)), params)
    return name, model, params


def _family(config: Mapping[str, Any]):
    """The key-map module for config.json's `model_type`; raises for any other type."""
    model_type = config.get("model_type")
    if model_type not in _FAMILIES:
        raise ValueError(f"model_type {model_type!r} is not supported: load_hf_checkpoint reads "
                         f"{' and '.join(map(repr, _FAMILIES))} checkpoints only.")
    return _FAMILIES[model_type]


def _full_preset(name: str) -> dict[str, Any]:
    """Every config field of the registered preset `name`, defaults included."""
    spec = get_spec(name)
    return dataclasses.asdict(spec.config_cls(**spec.preset))


def _pick_preset(module_cls: type, fields: dict, keys: tuple[str, ...], fallback: str) -> str:
    """The first registered preset of `module_cls` whose `keys` equal `fields`', else fallback."""
    for name in list_models():
        if get_spec(name).module_cls is not module_cls:
            continue
        preset = _full_preset(name)
        if all(preset[k] == fields[k] for k in keys):
            return name
    return fallback


def _map(fn, tree: Any) -> Any:
    """fn on every array of a nested dict."""
    if isinstance(tree, dict):
        return {k: _map(fn, v) for k, v in tree.items()}
    return fn(tree)
