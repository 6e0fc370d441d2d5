"""What the per-family key maps share: checked look-ups in a state dict, the Linear / LayerNorm
layouts, tied-weight checks and the config error for an unsupported setting.

NumPy only. A state dict here is flat, {"h.0.attn.c_attn.weight": array, ...}; params are the
nested dicts of arrays that the zoo's Flax modules declare.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

__all__ = ["Params", "Weights", "check_tied", "layer_norm", "linear", "normalise_key",
           "unsupported"]

Params = dict[str, Any]

# Keys that carry no weights of ours: buffers of older checkpoints and dropped heads.
_IGNORED = re.compile(r"(.*\.)?(position_ids|attn\.bias|attn\.masked_bias)$"
                      r"|cls\.seq_relationship\..*")


def unsupported(field: str, value: Any, why: str) -> ValueError:
    """The error for a config.json setting the zoo model cannot reproduce, naming the field."""
    return ValueError(f"config.json: {field}={value!r} is not supported ({why}).")


def normalise_key(key: str) -> str:
    """Old (TF-converted) checkpoints name LayerNorm parameters gamma / beta."""
    if key.endswith(".gamma"):
        return key[:-len("gamma")] + "weight"
    if key.endswith(".beta"):
        return key[:-len("beta")] + "bias"
    return key


class Weights:
    """Takes arrays out of a state dict by name, checking shapes; reports what was not taken."""

    def __init__(self, state: dict[str, np.ndarray]):
        self.state = state
        self.used: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.state

    def get(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        """state[key] as float32, which must have `shape`."""
        if key not in self.state:
            raise ValueError(f"missing weight {key!r} (expected shape {shape}); the checkpoint "
                             "does not fit its config.json.")
        value = self.state[key]
        if value.shape != tuple(shape):
            raise ValueError(f"weight {key!r} has shape {value.shape}; config.json implies "
                             f"{tuple(shape)}.")
        self.used.add(key)
        return value.astype(np.float32)

    def check_all_used(self) -> None:
        """Raises if a weight was not taken (other than buffers and dropped heads)."""
        left = sorted(k for k in self.state if k not in self.used and not _IGNORED.fullmatch(k))
        if left:
            more = f" (and {len(left) - 10} more)" if len(left) > 10 else ""
            raise ValueError(f"the checkpoint has weights the zoo model has no place for: "
                             f"{left[:10]}{more}. Only GPT2Model / GPT2LMHeadModel and BertModel "
                             "/ BertForMaskedLM / BertForPreTraining / "
                             "BertForSequenceClassification / BertForTokenClassification are "
                             "supported.")


def layer_norm(w: Weights, key: str, dim: int) -> dict[str, np.ndarray]:
    """torch LayerNorm weight / bias (D,) -> nn.LayerNorm scale / bias (D,)."""
    return {"scale": w.get(f"{key}.weight", (dim,)), "bias": w.get(f"{key}.bias", (dim,))}


def linear(w: Weights, key: str, d_in: int, d_out: int) -> dict[str, np.ndarray]:
    """torch.nn.Linear (out, in) -> nn.Dense kernel (in, out)."""
    return {"kernel": w.get(f"{key}.weight", (d_out, d_in)).T,
            "bias": w.get(f"{key}.bias", (d_out,))}


def check_tied(w: Weights, key: str, table: np.ndarray, what: str) -> None:
    """Raises if the output embedding `key` is present and differs from `table` (V, D)."""
    if w.has(key) and not np.array_equal(w.get(key, table.shape), table):
        raise ValueError(f"{key!r} differs from {what}: untied output embeddings are not "
                         "supported (the zoo ties them).")
