"""An LSTM stack through cuDNN (`jax.experimental.rnn.lstm`), on the zoo's own parameters.

`RecurrentStack(cell="lstm", implementation="cudnn")` runs here instead of the zoo's scan
(`zoo.nn.recurrent`). The params tree is the scan's, so checkpoints move between the two; on
each call the parameters are packed into the flat weight vector cuDNN reads:

    zoo, per layer and direction            cuDNN, per pseudo-layer (forward l, backward l, ...)
    input_kernel  (D, 4H)                   W_ih (4H, D)  = input_kernelᵀ
    hidden_kernel (H, 4H)                   W_hh (4H, H)  = hidden_kernelᵀ
    bias          (4H,)                     b_ih (4H,)    = bias
                                            b_hh (4H,)    = 0 (the zoo has one bias, cuDNN two)

Both use PyTorch's gate order (i, f, g, o). The flat vector holds every pseudo-layer's W_ih and
W_hh (row-major), then every pseudo-layer's b_ih and b_hh (`jax.experimental.rnn`'s docstring).
Gradients reach the zoo's parameters through the packing (slices, transposes, a concatenate).

`lstm_stack(params, x, lengths, initial_carry)` returns what `RecurrentStack` returns: outputs
(B, T, H * dirs) and the carry (h_n, c_n), each (num_layers * dirs, B, H). With
`reference=True` it runs `jax.experimental.rnn.lstm_ref`, the pure-JAX reference of the cuDNN
call (same packing, any backend), which the CPU tests use.

Limits of the cuDNN path: the LSTM only, float32 (jax.experimental.rnn has no 16-bit LSTM),
every length >= 1, and no dropout inside the call (cuDNN would draw its own masks; the stack
runs one call per layer instead and applies Flax's dropout between them).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from zoo.nn.cells import Carry, Params


def layer_names(num_layers: int, bidirectional: bool) -> list[str]:
    """The stack's per-layer param names in cuDNN's pseudo-layer order (layer-major, forward
    first): "layer0_forward", "layer0_backward", "layer1_forward", ..."""
    directions = ("forward", "backward") if bidirectional else ("forward",)
    return [f"layer{layer}_{d}" for layer in range(num_layers) for d in directions]


def stack_layout(params: dict[str, Params]) -> tuple[int, bool]:
    """(num_layers, bidirectional) of a `RecurrentStack`'s params."""
    num_layers = sum(1 for name in params if name.endswith("_forward"))
    return num_layers, "layer0_backward" in params


def pack_weights(params: dict[str, Params]) -> jax.Array:
    """A `RecurrentStack`'s LSTM params -> cuDNN's flat float32 weight vector (see the module
    doc): [W_ih, W_hh of every pseudo-layer..., b_ih, b_hh of every pseudo-layer...]."""
    layers = [params[name] for name in layer_names(*stack_layout(params))]
    kernels, biases = [], []
    for p in layers:
        kernels += [p["input_kernel"].T.ravel(), p["hidden_kernel"].T.ravel()]  # (4H, D), (4H, H)
        biases += [p["bias"], jnp.zeros_like(p["bias"])]  # b_ih = the zoo's bias, b_hh = 0
    return jnp.concatenate([w.astype(jnp.float32) for w in kernels + biases])


def lstm_stack(params: dict[str, Params], x: jax.Array, lengths: jax.Array | None = None,
               initial_carry: Carry | None = None, *, reference: bool = False,
               precision: Any = None) -> tuple[jax.Array, Carry]:
    """A `RecurrentStack(cell="lstm")`'s forward pass through cuDNN.

    params: the stack's params ({"layer0_forward": {...}, ...}); x: (B, T, D); lengths: (B,)
    ints >= 1 or None (all T); initial_carry: (h_0, c_0), each (L * dirs, B, H), or None
    (zeros). Returns (outputs (B, T, H * dirs) float32, (h_n, c_n)), with outputs 0 at padded
    positions and the backward direction starting at each row's true end, as the scan does.
    `reference` runs `jax.experimental.rnn.lstm_ref` instead of cuDNN; `precision` goes to
    `jax.experimental.rnn.lstm` (None: TF32 allowed unless jax_default_matmul_precision says
    otherwise).
    """
    from jax.experimental import rnn

    num_layers, bidirectional = stack_layout(params)
    hidden_size = params["layer0_forward"]["hidden_kernel"].shape[0]
    batch, length, input_size = x.shape
    if lengths is None:
        lengths = jnp.full((batch,), length, jnp.int32)
    if initial_carry is None:
        zeros = jnp.zeros((num_layers * (2 if bidirectional else 1), batch, hidden_size),
                          jnp.float32)  # (L * dirs, B, H)
        initial_carry = (zeros, zeros)
    h_0, c_0 = (c.astype(jnp.float32) for c in initial_carry)
    x = x.astype(jnp.float32)
    lengths = lengths.astype(jnp.int32)
    weights = pack_weights(params)  # (N,)
    if reference:
        w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(weights, input_size, hidden_size,
                                                         num_layers, bidirectional)
        y, h_n, c_n = rnn.lstm_ref(x, h_0, c_0, w_ih, w_hh, b_ih, b_hh, lengths, input_size,
                                   hidden_size, num_layers, 0.0, bidirectional)
    else:
        y, h_n, c_n = rnn.lstm(x, h_0, c_0, weights, lengths, input_size=input_size,
                               hidden_size=hidden_size, num_layers=num_layers, dropout=0.0,
                               bidirectional=bidirectional, precision=precision)
    return y, (h_n, c_n)  # (B, T, H * dirs), each (L * dirs, B, H)
