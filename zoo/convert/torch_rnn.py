"""PyTorch `nn.RNN` / `nn.LSTM` / `nn.GRU` weights -> `zoo.nn.recurrent.RecurrentStack` params.

NumPy only: this module imports neither torch nor jax (tensors are read through
`zoo.convert.reader.to_numpy`). It reads a PyTorch state dict whose values are torch tensors
(anything with `.detach()`) or NumPy arrays, and returns a plain nested dict of np.float32 arrays
laid out as `RecurrentStack` declares them (see `zoo.nn.cells`):

    {"layer{l}_forward" | "layer{l}_backward": {
        "input_kernel":  (D_l, G*H)  = weight_ih_l{l}[_reverse].T
        "hidden_kernel": (H, G*H)    = weight_hh_l{l}[_reverse].T
        "bias":          (G*H,)      = bias_ih + bias_hh             (Elman, LSTM)
                                     = bias_ih + [b_hr, b_hz, 0]     (GRU)
        "hidden_bias":   (H,)        = b_hn                          (GRU only)
    }}

with D_0 the input size, D_l = H * num_directions above, and G = 1 (Elman), 4 (LSTM: i, f, g, o)
or 3 (GRU: r, z, n); the zoo uses PyTorch's gate order, so no gate is permuted. A stack's carry
is PyTorch's: (h_n,) or (h_n, c_n), each (num_layers * num_directions, B, H).

Usage::

    import jax.numpy as jnp
    import torch
    from zoo.convert.torch_rnn import rnn_config_from_torch, rnn_params_from_torch
    from zoo.nn.recurrent import RecurrentStack

    lstm = torch.nn.LSTM(16, 32, num_layers=2, bidirectional=True)  # batch_first=False
    config = rnn_config_from_torch(lstm)
    stack = RecurrentStack(config["cell"], config["hidden_size"], config["num_layers"],
                           config["bidirectional"])
    params = rnn_params_from_torch(lstm.state_dict(), cell=config["cell"])
    # or, for a whole model holding the LSTM as `self.rnn`:
    #     rnn_params_from_torch(model.state_dict(), prefix="rnn.")

    x = torch.randn(7, 4, 16)                        # (T, B, D): batch_first=False
    y_torch, (h_n, c_n) = lstm(x)                    # (T, B, 2H), (4, B, H) each
    # The zoo is always batch-major: transpose (T, B, D) -> (B, T, D) and back.
    y, (h, c) = stack.apply({"params": params}, jnp.asarray(x.numpy()).swapaxes(0, 1))
    # y.swapaxes(0, 1) ~ y_torch; h ~ h_n; c ~ c_n. Initial states pass as
    # initial_carry=(h0, c0) ((h0,) for RNN / GRU), in PyTorch's (L * dirs, B, H) layout.

Packed sequences (`nn.utils.rnn.pack_padded_sequence`) correspond to `lengths=` (B,).
Not supported: `proj_size > 0` (LSTM projections, `weight_hr_l*` keys).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from zoo.convert.reader import to_numpy

__all__ = ["rnn_config_from_torch", "rnn_params_from_torch"]

# Gates per cell; must agree with zoo.nn.cells.CELL_TYPES (checked by the tests). Kept here so
# that this module does not import jax.
_NUM_GATES: dict[str, int] = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}
_CELL_FOR_GATES: dict[int, str] = {1: "rnn_tanh", 4: "lstm", 3: "gru"}
_TORCH_MODES: dict[str, str] = {
    "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu", "LSTM": "lstm", "GRU": "gru",
}
_KEY = re.compile(r"(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?")

Params = dict[str, dict[str, np.ndarray]]


def _suggest_prefixes(keys: list[str]) -> list[str]:
    """Prefixes under which the state dict holds a recurrent module (keys ending weight_ih_l0)."""
    return sorted({k[:-len("weight_ih_l0")] for k in keys if k.endswith("weight_ih_l0")})


def rnn_params_from_torch(state_dict: Mapping[str, Any], *, cell: str | None = None,
                          num_layers: int | None = None, bidirectional: bool | None = None,
                          prefix: str = "") -> Params:
    """PyTorch RNN / LSTM / GRU state dict -> `RecurrentStack` params (nested dict of np.float32).

    Args:
      state_dict: the module's `state_dict()` (torch tensors or NumPy arrays), or a whole
        model's together with `prefix`. Keys: `{prefix}weight_ih_l{k}` (G*H, D_k),
        `weight_hh_l{k}` (G*H, H), `bias_ih_l{k}` / `bias_hh_l{k}` (G*H,) (absent for
        `bias=False`: zero biases), each also with a `_reverse` suffix when bidirectional.
      cell: "rnn_tanh" | "rnn_relu" | "lstm" | "gru". Optional: inferred from the gate count G
        (4 -> lstm, 3 -> gru, 1 -> rnn_tanh); needed only for "rnn_relu", whose weights look
        exactly like rnn_tanh's. Must agree with G if given.
      num_layers, bidirectional: inferred from the keys when None; if given they must match.
      prefix: prepended to every key, e.g. "rnn." for a model holding the module as `self.rnn`.

    Returns:
      {"layer{l}_forward" / "layer{l}_backward": {"input_kernel" (D_l, G*H),
      "hidden_kernel" (H, G*H), "bias" (G*H,)[, "hidden_bias" (H,) for GRU]}}, to be used as
      `RecurrentStack(cell, H, num_layers, bidirectional).apply({"params": params}, ...)`.

    Raises:
      ValueError: no recurrent weights under `prefix`, missing or extra keys, bad shapes,
        `proj_size > 0`, or a `cell` / `num_layers` / `bidirectional` that contradicts the keys.
    """
    found: dict[tuple[str, int, bool], str] = {}  # (kind, layer, reverse) -> key
    for key in state_dict:
        if not key.startswith(prefix):
            continue
        match = _KEY.fullmatch(key[len(prefix):])
        if match:
            found[(match.group(1), int(match.group(2)), match.group(3) is not None)] = key

    if not found:
        hint = _suggest_prefixes(list(state_dict))
        fix = (f" Pass prefix= one of {hint}." if hint
               else " Pass the state_dict() of a torch.nn.RNN / LSTM / GRU.")
        raise ValueError(f"no recurrent weights (keys '{prefix}weight_ih_l0', ...) in the state "
                         f"dict under prefix {prefix!r}.{fix}")
    if any(kind == "weight_hr" for kind, _, _ in found):
        raise ValueError("the state dict has projection weights (weight_hr_l*): an LSTM with "
                         "proj_size > 0, which RecurrentStack does not support. Use proj_size=0.")

    found_layers = 1 + max(layer for _, layer, _ in found)
    found_bidirectional = any(reverse for _, _, reverse in found)
    if num_layers is None:
        num_layers = found_layers
    elif num_layers < found_layers:
        raise ValueError(f"num_layers={num_layers} but the state dict has weights for "
                         f"{found_layers} layers (up to '{prefix}weight_ih_l{found_layers - 1}'). "
                         "Pass num_layers=None to infer it, or the module's num_layers.")
    if bidirectional is None:
        bidirectional = found_bidirectional
    elif not bidirectional and found_bidirectional:
        raise ValueError("bidirectional=False but the state dict has '_reverse' weights. Pass "
                         "bidirectional=None to infer it, or True.")
    directions = (False, True) if bidirectional else (False,)

    def require(kind: str, layer: int, reverse: bool) -> np.ndarray:
        name = f"{prefix}{kind}_l{layer}{'_reverse' if reverse else ''}"
        if (kind, layer, reverse) not in found:
            raise ValueError(f"missing key {name!r} for a {num_layers}-layer "
                             f"{'bidirectional' if bidirectional else 'unidirectional'} module. "
                             "Check prefix=, num_layers= and bidirectional=, or pass the full "
                             "state_dict() of the torch module.")
        return to_numpy(state_dict[name]).astype(np.float64)

    # Gate count and hidden size from the first layer's recurrent weight (G*H, H).
    w_hh = require("weight_hh", 0, False)
    if w_hh.ndim != 2 or w_hh.shape[0] % w_hh.shape[1]:
        raise ValueError(f"'{prefix}weight_hh_l0' has shape {w_hh.shape}; expected (G*H, H) with "
                         "G = 1, 3 or 4 gates.")
    hidden = w_hh.shape[1]
    gates = w_hh.shape[0] // hidden
    if gates not in _CELL_FOR_GATES:
        raise ValueError(f"'{prefix}weight_hh_l0' has shape {w_hh.shape}: {gates} gates; only "
                         "1 (RNN), 3 (GRU) or 4 (LSTM) are supported.")
    if cell is None:
        cell = _CELL_FOR_GATES[gates]
    elif cell not in _NUM_GATES:
        raise ValueError(f"unknown cell {cell!r}; choose one of {', '.join(_NUM_GATES)}.")
    elif _NUM_GATES[cell] != gates:
        raise ValueError(f"cell={cell!r} has {_NUM_GATES[cell]} gate(s) but the weights have "
                         f"{gates} ('{prefix}weight_hh_l0' is {w_hh.shape}, H={hidden}): they "
                         f"belong to a {_CELL_FOR_GATES[gates]!r} module. Pass "
                         f"cell={_CELL_FOR_GATES[gates]!r} (or cell=None to infer it).")

    has_bias = any(kind.startswith("bias") for kind, _, _ in found)
    width = gates * hidden
    input_size = require("weight_ih", 0, False).shape[-1]
    params: Params = {}
    for layer in range(num_layers):
        for reverse in directions:
            suffix = f"_l{layer}{'_reverse' if reverse else ''}"
            w_ih = require("weight_ih", layer, reverse)
            w_hh = require("weight_hh", layer, reverse)
            expected_in = input_size if layer == 0 else hidden * len(directions)
            if w_ih.shape != (width, expected_in):
                raise ValueError(f"'{prefix}weight_ih{suffix}' has shape {w_ih.shape}; expected "
                                 f"{(width, expected_in)} for {cell} with H={hidden}"
                                 f"{', bidirectional' if bidirectional else ''}.")
            if w_hh.shape != (width, hidden):
                raise ValueError(f"'{prefix}weight_hh{suffix}' has shape {w_hh.shape}; expected "
                                 f"{(width, hidden)}.")
            if has_bias:
                b_ih = require("bias_ih", layer, reverse)
                b_hh = require("bias_hh", layer, reverse)
                for kind, b in (("bias_ih", b_ih), ("bias_hh", b_hh)):
                    if b.shape != (width,):
                        raise ValueError(f"'{prefix}{kind}{suffix}' has shape {b.shape}; "
                                         f"expected {(width,)}.")
            else:  # bias=False
                b_ih = b_hh = np.zeros((width,))

            entry = {"input_kernel": w_ih.T, "hidden_kernel": w_hh.T}
            if cell == "gru":  # b_hn stays inside the reset gate: r * (h W_hn + b_hn)
                entry["bias"] = b_ih + np.concatenate([b_hh[:2 * hidden], np.zeros(hidden)])
                entry["hidden_bias"] = b_hh[2 * hidden:]
            else:
                entry["bias"] = b_ih + b_hh
            name = f"layer{layer}_{'backward' if reverse else 'forward'}"
            params[name] = {k: np.ascontiguousarray(v, dtype=np.float32)
                            for k, v in entry.items()}
    return params


def rnn_config_from_torch(module: Any) -> dict[str, Any]:
    """A live `torch.nn.RNN` / `LSTM` / `GRU` -> its configuration, read from attributes.

    Returns dict(cell, hidden_size, num_layers, bidirectional, input_size, batch_first); the
    first four are `RecurrentStack`'s arguments. `batch_first=False` means the module takes
    (T, B, D) inputs: transpose them to (B, T, D) for the zoo. `dropout` is not returned
    (pass it as RecurrentStack's `dropout_rate` if training on).

    Raises:
      ValueError: not a recurrent module, or an LSTM with proj_size > 0.
    """
    mode = getattr(module, "mode", None)
    if mode not in _TORCH_MODES:
        raise ValueError(f"{type(module).__name__} is not a torch.nn.RNN / LSTM / GRU "
                         f"(mode={mode!r}); pass the recurrent submodule itself.")
    if getattr(module, "proj_size", 0):
        raise ValueError(f"proj_size={module.proj_size}: LSTM projections are not supported by "
                         "RecurrentStack. Use proj_size=0.")
    return {
        "cell": _TORCH_MODES[mode],
        "hidden_size": int(module.hidden_size),
        "num_layers": int(module.num_layers),
        "bidirectional": bool(module.bidirectional),
        "input_size": int(module.input_size),
        "batch_first": bool(module.batch_first),
    }
