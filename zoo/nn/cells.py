"""Recurrent cells (Elman, LSTM, GRU) as pure step functions plus single-step Flax modules.

A cell's parameters, for input width D, hidden width H and G gates:

    input_kernel  (D, G*H)   applied to all time steps at once, outside the recurrence
    hidden_kernel (H, G*H)   the only matmul inside the recurrence
    bias          (G*H,)     added to the input projection
    hidden_bias   (H,)       GRU only: the bias of the candidate's hidden matmul (see GRU)

Gates are laid out in PyTorch's order, so PyTorch weights map over by a transpose
(`zoo.nn.torch_import`): LSTM (i, f, g, o), GRU (r, z, n).

A carry is a tuple of (B, H) arrays: (h,) for Elman and GRU, (h, c) for the LSTM. A cell's
`step(params, carry, xp)` takes one time step's projected input xp (B, G*H) and returns the new
carry; the output at that step is always `carry[0]` (h).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.nn.dense import dense_matmul

Carry = tuple[jax.Array, ...]
Params = dict[str, jax.Array]


# Each cell is written as its *pointwise* part: (carry, xp, hw) -> new carry, where xp is the
# projected input (B, G*H) and hw = h @ hidden_kernel + hidden bias (B, G*H) is the only matmul.
# Keeping the matmul outside lets the layers' backward pass batch the weight gradient over all
# time steps (see zoo.nn.recurrence).


def _elman_pointwise(activation: Callable[[jax.Array], jax.Array]):
    def pointwise(carry: Carry, xp: jax.Array, hw: jax.Array) -> Carry:
        return (activation(xp + hw),)

    return pointwise


def _lstm_pointwise(carry: Carry, xp: jax.Array, hw: jax.Array) -> Carry:
    _, c = carry
    i, f, g, o = jnp.split(xp + hw, 4, axis=-1)  # PyTorch gate order
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c


# Hand-written backward passes for the additive cells, used by zoo.nn.recurrence: the forward
# loop saves the gates' activations, so the reverse loop needs no exp/tanh of its own.
# save(carry, g) -> (new carry, residuals); grad(prev carry, residuals, d_new) ->
# (d_prev through the pointwise math only, d_g), where g = xp + hw is the gate pre-activation.


def _elman_save(activation: Callable[[jax.Array], jax.Array]):
    def save(carry: Carry, g: jax.Array):
        h = activation(g)
        return (h,), h

    return save


def _tanh_grad(prev: Carry, h: jax.Array, d_new: Carry):
    return (jnp.zeros_like(h),), d_new[0] * (1.0 - h * h)


def _relu_grad(prev: Carry, h: jax.Array, d_new: Carry):
    return (jnp.zeros_like(h),), jnp.where(h > 0, d_new[0], 0.0)


def _lstm_save(carry: Carry, g: jax.Array):
    _, c = carry
    n = c.shape[-1]
    # One sigmoid over all four gates, using tanh(x) = 2 sigmoid(2x) - 1 for the candidate, so
    # the saved activations need no concatenation (~2% of an lstm_lm step; the candidate
    # differs from jnp.tanh by float rounding, ~1e-7 absolute).
    scale = jnp.concatenate([jnp.ones((2 * n,), g.dtype), jnp.full((n,), 2.0, g.dtype),
                             jnp.ones((n,), g.dtype)])
    s = jax.nn.sigmoid(g * scale[None])  # (B, 4H): sigma(i), sigma(f), sigma(2g), sigma(o)
    i, f, s_u, o = (s[:, k * n:(k + 1) * n] for k in range(4))
    c = f * c + i * (2.0 * s_u - 1.0)
    tanh_c = jnp.tanh(c)
    return (o * tanh_c, c), (s, tanh_c)


def _lstm_grad(prev: Carry, residuals, d_new: Carry):
    (s, tanh_c), (_, c_prev), (d_h, d_c) = residuals, prev, d_new
    n = tanh_c.shape[-1]
    i, f, s_u, o = (s[:, k * n:(k + 1) * n] for k in range(4))
    d_c = d_c + d_h * o * (1.0 - tanh_c * tanh_c)
    # d/dx sigma(a x) = a sigma (1 - sigma), and the candidate is 2 sigma(2x) - 1: factor 4.
    upstream = jnp.concatenate([d_c * (2.0 * s_u - 1.0), d_c * c_prev, 4.0 * d_c * i,
                                d_h * tanh_c], axis=-1)
    return (jnp.zeros_like(d_h), d_c * f), upstream * s * (1.0 - s)


def _gru_pointwise(carry: Carry, xp: jax.Array, hw: jax.Array) -> Carry:
    (h,) = carry
    x_r, x_z, x_n = jnp.split(xp, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(hw, 3, axis=-1)  # h_n already holds the hidden bias b_hn
    r = jax.nn.sigmoid(x_r + h_r)
    z = jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * h_n)
    return ((1.0 - z) * n + z * h,)


@dataclasses.dataclass(frozen=True)
class CellType:
    """What the layers need to know about a cell: gates, carry parts, step function."""

    name: str
    num_gates: int
    carry_parts: int  # 2 for the LSTM (h, c), else 1
    pointwise: Callable[[Carry, jax.Array, jax.Array], Carry]  # (carry, xp, hw) -> carry
    hidden_bias: bool = False  # GRU: a separate bias inside the reset-gated hidden term
    forget_bias: float | None = None  # LSTM: initial value of the forget gate's bias
    additive: bool = True  # pointwise depends on xp + hw only (not the GRU)
    # Additive cells may bring their own backward pass (see _lstm_save / _lstm_grad); the
    # others get theirs from jax.vjp of `pointwise`.
    save: Callable[[Carry, jax.Array], tuple[Carry, Any]] | None = None
    grad: Callable[[Carry, Any, Carry], tuple[Carry, jax.Array]] | None = None

    def hidden_bias_full(self, params: Params) -> jax.Array | None:
        """The bias added to h @ hidden_kernel, (G*H,): b_hn in the GRU's n slot, else None."""
        if not self.hidden_bias:
            return None
        b = params["hidden_bias"]
        return jnp.concatenate([jnp.zeros((2 * b.shape[0],), b.dtype), b])

    def step(self, params: Params, carry: Carry, xp: jax.Array) -> Carry:
        """One time step from the projected input xp (B, G*H)."""
        hw = carry[0] @ params["hidden_kernel"]
        bias = self.hidden_bias_full(params)
        if bias is not None:
            hw = hw + bias[None]
        return self.pointwise(carry, xp, hw)

    def init_carry(self, batch_size: int, hidden_size: int, dtype=jnp.float32) -> Carry:
        return tuple(jnp.zeros((batch_size, hidden_size), dtype) for _ in range(self.carry_parts))


CELL_TYPES: dict[str, CellType] = {
    "rnn_tanh": CellType("rnn_tanh", 1, 1, _elman_pointwise(jnp.tanh),
                         save=_elman_save(jnp.tanh), grad=_tanh_grad),
    "rnn_relu": CellType("rnn_relu", 1, 1, _elman_pointwise(jax.nn.relu),
                         save=_elman_save(jax.nn.relu), grad=_relu_grad),
    "lstm": CellType("lstm", 4, 2, _lstm_pointwise, forget_bias=1.0,
                     save=_lstm_save, grad=_lstm_grad),
    "gru": CellType("gru", 3, 1, _gru_pointwise, hidden_bias=True, additive=False),
}


def get_cell_type(name: str) -> CellType:
    if name not in CELL_TYPES:
        raise ValueError(f"unknown cell {name!r}; choose one of {', '.join(CELL_TYPES)}.")
    return CELL_TYPES[name]


def _bias_init(cell: CellType):
    def init(key, shape, dtype=jnp.float32):
        bias = jnp.zeros(shape, dtype)
        if cell.forget_bias is not None:  # LSTM gate order i, f, g, o
            hidden = shape[0] // cell.num_gates
            bias = bias.at[hidden:2 * hidden].set(cell.forget_bias)
        return bias

    return init


def cell_params(module: nn.Module, cell: CellType, input_size: int, hidden_size: int,
                kernel_init: nn.initializers.Initializer,
                recurrent_init: nn.initializers.Initializer) -> Params:
    """Declares a cell's parameters on `module` (inside its compact method) and returns them."""
    width = cell.num_gates * hidden_size
    params = {
        "input_kernel": module.param("input_kernel", kernel_init, (input_size, width)),
        "hidden_kernel": module.param("hidden_kernel", recurrent_init, (hidden_size, width)),
        "bias": module.param("bias", _bias_init(cell), (width,)),
    }
    if cell.hidden_bias:
        params["hidden_bias"] = module.param("hidden_bias", nn.initializers.zeros, (hidden_size,))
    return params


def project_inputs(params: Params, x: jax.Array) -> jax.Array:
    """(..., D) -> (..., G*H): the input half of every gate, for all time steps in one matmul."""
    bias = params["bias"].reshape((1,) * (x.ndim - 1) + (-1,))
    return dense_matmul(x, params["input_kernel"]) + bias


def project_tokens(params: Params, embedding: jax.Array, tokens: jax.Array) -> jax.Array:
    """`project_inputs(params, embedding[tokens])` for int tokens (...,) -> (..., G*H).

    When the table has fewer rows V than there are tokens N, the V rows are projected once and
    the result is gathered: V*D*G*H instead of N*D*G*H multiply-adds in the forward pass and in
    both gradients (a byte-level LM with B*T = 4096 tokens and V = 256 does 1/16 of the work).
    The values are the same dot products, up to float rounding.
    """
    if embedding.shape[0] < tokens.size:
        return jnp.take(project_inputs(params, embedding), tokens, axis=0)
    return project_inputs(params, jnp.take(embedding, tokens, axis=0))


class Cell(nn.Module):
    """One step of a recurrent cell, like `flax.linen.LSTMCell`: (carry, x (B, D)) -> (carry, h).

    The layers in `zoo.nn.recurrent` do not call this module step by step; they share its
    parameter layout and step function but hoist the input matmul out of the time loop.
    """

    cell: str  # "rnn_tanh" | "rnn_relu" | "lstm" | "gru"
    hidden_size: int
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    recurrent_init: nn.initializers.Initializer = nn.initializers.orthogonal()

    @nn.compact
    def __call__(self, carry: Carry, x: jax.Array) -> tuple[Carry, jax.Array]:
        cell = get_cell_type(self.cell)
        params = cell_params(self, cell, x.shape[-1], self.hidden_size, self.kernel_init,
                             self.recurrent_init)
        carry = cell.step(params, carry, project_inputs(params, x))
        return carry, carry[0]

    def initialize_carry(self, batch_size: int) -> Carry:
        return get_cell_type(self.cell).init_carry(batch_size, self.hidden_size)


def ElmanCell(hidden_size: int, nonlinearity: str = "tanh", **kwargs) -> Cell:
    """Elman RNN cell: h' = act(x W_i + b + h W_h), act = tanh or relu."""
    return Cell(cell=f"rnn_{nonlinearity}", hidden_size=hidden_size, **kwargs)


def LSTMCell(hidden_size: int, **kwargs) -> Cell:
    """LSTM cell (gates i, f, g, o; forget-gate bias initialised to 1): carry (h, c)."""
    return Cell(cell="lstm", hidden_size=hidden_size, **kwargs)


def GRUCell(hidden_size: int, **kwargs) -> Cell:
    """GRU cell in the PyTorch / cuDNN formulation: the reset gate multiplies the hidden matmul.

    r = σ(x W_ir + h W_hr + b_r), z = σ(x W_iz + h W_hz + b_z),
    n = tanh(x W_in + b_in + r * (h W_hn + b_hn)), h' = (1 - z) * n + z * h.
    (Cho et al. 2014 apply r before the matmul: W_hn (r * h); the cuDNN form is faster because
    all three hidden matmuls become one.)
    """
    return Cell(cell="gru", hidden_size=hidden_size, **kwargs)
