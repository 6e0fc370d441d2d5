"""Checks on the model config dataclasses, shared by every family.

`check_ranges(config)` runs when a config is made (each family's `__post_init__`), so a bad
override fails at `create_model` / `get_config` with a `ConfigError` naming the field, the value
and the allowed range, instead of deep inside flax or XLA:

* sizes (`SIZES`: vocab_size, emb_dim, num_heads, num_layers, mlp_dim, max_len, hidden_size,
  ...) are positive integers; `vocab_pad_multiple` is None or a positive integer;
* rates (every field ending in `_rate`) are in [0, 1); `ln_epsilon` is > 0 and finite;
* switches (every field annotated `bool`: pre_ln, tie_embeddings, scan_layers, ...) are True or
  False, so a string such as "no" is not read as true;
* `emb_dim` divides by `num_heads` (every family with attention heads);
* `pad_token_id` (and `mask_token_id`, for an MLM head) lies in [0, vocab_size).

`check_choices(config, **family_choices)` checks the string fields against their allowed values
(`CHOICES`, plus the family's own, e.g. `pooling`). Each family's `validate()` calls it; the run
config (`zoo.train.config.validate`) calls `validate()` before a run starts. The layers refuse
the same values when the model is first called (`model.init`), which is where a config built in
Python meets them otherwise.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np

from zoo.errors import ConfigError
from zoo.nn.attention import IMPLEMENTATIONS as ATTENTION_IMPLEMENTATIONS
from zoo.nn.cells import CELL_TYPES
from zoo.nn.precision import DTYPES
from zoo.nn.recurrent import IMPLEMENTATIONS as RNN_IMPLEMENTATIONS
from zoo.nn.transformer import ACTIVATIONS, REMAT_POLICIES

# Integer fields that count something: each must be >= 1.
SIZES = ("vocab_size", "emb_dim", "num_heads", "num_layers", "num_encoder_layers",
         "num_decoder_layers", "mlp_dim", "max_len", "hidden_size", "num_classes",
         "type_vocab_size", "unroll", "scan_unroll")
# String fields every family spells the same way -> their allowed values.
CHOICES: dict[str, tuple[Any, ...]] = {
    "compute_dtype": DTYPES,
    "param_dtype": DTYPES,
    "remat": REMAT_POLICIES + (True, False),  # booleans: configs written before the policies
    "attention_implementation": ATTENTION_IMPLEMENTATIONS,
    "cell": tuple(CELL_TYPES),
    "rnn_implementation": RNN_IMPLEMENTATIONS,
    "activation": tuple(ACTIVATIONS),
    "positions": ("learned", "sinusoidal"),
}


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _fields(config: Any) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def check_ranges(config: Any) -> None:
    """Raises ConfigError naming the first field of `config` (a model config dataclass) whose
    value is out of range (see the module docstring)."""
    values = _fields(config)
    for name in SIZES:
        if name in values and not (_is_int(values[name]) and values[name] >= 1):
            raise ConfigError(f"{name} must be a positive integer; got {values[name]!r}.")
    for name, value in values.items():
        if name.endswith("_rate") and not (_is_real(value) and 0 <= value < 1):
            raise ConfigError(f"{name} must be in [0, 1); got {value!r}.")
    multiple = values.get("vocab_pad_multiple")
    if multiple is not None and not (_is_int(multiple) and multiple >= 1):
        raise ConfigError(f"vocab_pad_multiple must be None (automatic) or a positive integer "
                          f"(1 = no padding); got {multiple!r}.")
    epsilon = values.get("ln_epsilon", 1.0)
    if not (_is_real(epsilon) and math.isfinite(epsilon) and epsilon > 0):
        raise ConfigError(f"ln_epsilon must be > 0 and finite; got {epsilon!r}.")
    for field in dataclasses.fields(config):
        if field.type in ("bool", bool) and not isinstance(values[field.name], (bool, np.bool_)):
            raise ConfigError(f"{field.name} must be True or False; got {values[field.name]!r}.")
    if "num_heads" in values and "emb_dim" in values and values["emb_dim"] % values["num_heads"]:
        emb_dim, heads = values["emb_dim"], values["num_heads"]
        raise ConfigError(f"emb_dim={emb_dim} must be divisible by num_heads={heads} (each head "
                          f"gets emb_dim / num_heads features){_closest_divisor(emb_dim, heads)}.")
    vocab = values.get("vocab_size")
    ids = ["pad_token_id"] + (["mask_token_id"] if values.get("head", "mlm") == "mlm" else [])
    for name in ids:
        if name in values and not (_is_int(values[name]) and 0 <= values[name] < vocab):
            raise ConfigError(f"{name} must be in [0, vocab_size={vocab}); got "
                              f"{values[name]!r}. Set it to the vocabulary's id of that token.")


def _closest_divisor(emb_dim: int, heads: int, budget: int = 100_000) -> str:
    """The hint '; e.g. num_heads=N', N the divisor of emb_dim closest to `heads` (searched
    outward from `heads` for at most `budget` steps: a huge emb_dim must not stall the error),
    or '' when none is that close."""
    if heads > emb_dim:
        return f"; e.g. num_heads={emb_dim}"
    for distance in range(min(budget, heads)):
        for n in (heads - distance, heads + distance):
            if 1 <= n <= emb_dim and emb_dim % n == 0:
                return f"; e.g. num_heads={n}"
    return ""


def check_choices(config: Any, **family_choices: tuple[Any, ...]) -> None:
    """Raises ConfigError naming the first string field of `config` whose value is not one of
    its allowed values (`CHOICES`, updated with `family_choices`: field -> allowed values)."""
    values = _fields(config)
    for name, allowed in {**CHOICES, **family_choices}.items():
        if name in values and values[name] not in allowed:
            shown = ", ".join(repr(a) for a in allowed if not isinstance(a, bool))
            raise ConfigError(f"{name} must be one of {shown}; got {values[name]!r}.")
