"""Recurrent cells (Elman, LSTM, GRU) as pure step functions plus single-step Flax modules.

A cell's parameters, for input width D, hidden width H and G gates:

    input_kernel  (D, G*H)   applied to all time steps at once, outside the recurrence
    hidden_kernel (H, G*H)   the only matmul inside the recurrence
    bias          (G*H,)     added to the input projection
    hidden_bias   (H,)       GRU only: the bias of the candidate's hidden matmul (see GRU)

Gates are laid out in PyTorch's order, so PyTorch weights map over by a transpose
(`zoo.convert.torch_rnn`): LSTM (i, f, g, o), GRU (r, z, n).

A carry is a tuple of (B, H) arrays: (h,) for Elman and GRU, (h, c) for the LSTM. A cell's
`step(params, carry, xp)` takes one time step's projected input xp (B, G*H) and returns the new
carry; the output at that step is always `carry[0]` (h).

Mixed precision (`zoo.nn.precision`): under a 16-bit compute dtype the matmuls take operands in
that dtype and accumulate in float32 (`project_inputs`; `zoo.nn.recurrence` for h @ W_h), the
projected inputs xp and the layers' outputs are in the compute dtype, and the gates, the carry
(h and the LSTM's c) and all pointwise math stay float32. A float32 compute dtype casts nothing
down (`operand_dtype`: float64 inputs stay float64).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.nn.dense import dense_matmul
from zoo.nn.logical_axes import axes, on_mesh

Carry = tuple[jax.Array, ...]
Params = dict[str, jax.Array]


def operand_dtype(dtype: Any, *arrays: jax.Array) -> jnp.dtype:
    """The dtype of matmul operands under compute dtype `dtype`: a 16-bit `dtype` itself; for
    float32, the widest of float32 and the arrays' dtypes (full precision: nothing is cast down,
    so float64 gradient checks stay float64 and bfloat16 parameters are cast up)."""
    dtype = jnp.dtype(dtype)
    if dtype.itemsize < 4:
        return dtype
    return jnp.result_type(dtype, *(a.dtype for a in arrays))


def accumulation_dtype(dtype: Any) -> jnp.dtype:
    """The dtype matmuls accumulate in and the carry is kept in: at least float32."""
    return jnp.promote_types(dtype, jnp.float32)


def cast(x: jax.Array, dtype: Any) -> jax.Array:
    """`x.astype(dtype)`, and no op at all when x already has that dtype."""
    return x if x.dtype == dtype else x.astype(dtype)


def accumulating_dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers, precision=None,
                             preferred_element_type=None) -> jax.Array:
    """`lax.dot_general` that accumulates and returns at least float32: the `dot_general` of a
    Flax Dense whose output stays float32 under a 16-bit compute dtype (a classifier's logits).
    """
    del preferred_element_type  # always the accumulation dtype
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=accumulation_dtype(
                                   jnp.result_type(lhs, rhs)))


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


def _at_least_float32(init: nn.initializers.Initializer) -> nn.initializers.Initializer:
    """`init` drawing in float32 and then cast: the orthogonal initializer's QR has no 16-bit
    kernels, and 16-bit parameters get the same values as float32 ones, rounded."""
    def wrapped(key, shape, dtype=jnp.float32):
        return cast(init(key, shape, accumulation_dtype(dtype)), dtype)

    return wrapped


def cell_params(module: nn.Module, cell: CellType, input_size: int, hidden_size: int,
                kernel_init: nn.initializers.Initializer,
                recurrent_init: nn.initializers.Initializer,
                param_dtype: Any = jnp.float32) -> Params:
    """Declares a cell's parameters on `module` (inside its compact method) and returns them."""
    width = cell.num_gates * hidden_size
    params = {
        "input_kernel": module.param("input_kernel",
                                     axes(_at_least_float32(kernel_init), "embed", "gates"),
                                     (input_size, width), param_dtype),
        "hidden_kernel": module.param("hidden_kernel",
                                      axes(_at_least_float32(recurrent_init), "hidden", "gates"),
                                      (hidden_size, width), param_dtype),
        "bias": module.param("bias", axes(_bias_init(cell), "gates"), (width,), param_dtype),
    }
    if cell.hidden_bias:
        params["hidden_bias"] = module.param("hidden_bias", axes(nn.initializers.zeros, "hidden"),
                                             (hidden_size,), param_dtype)
    return params


class CellParams(nn.Module):
    """Declares one recurrent layer's parameters, exactly as `RecurrentLayer` does, and returns
    them without running the layer: `__call__(input_size)` -> params. Paths that run the cell
    some other way (`zoo.nn.cudnn_lstm`) use it so that their params tree is the scan's."""

    cell: str
    hidden_size: int
    param_dtype: Any = jnp.float32
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    recurrent_init: nn.initializers.Initializer = nn.initializers.orthogonal()

    @nn.compact
    def __call__(self, input_size: int) -> Params:
        return cell_params(self, get_cell_type(self.cell), input_size, self.hidden_size,
                           self.kernel_init, self.recurrent_init, self.param_dtype)


def project_inputs(params: Params, x: jax.Array, dtype: Any = jnp.float32,
                   time_major: bool = False) -> jax.Array:
    """(..., D) -> (..., G*H): the input half of every gate, for all time steps in one matmul.

    The result is in the operand dtype `operand_dtype(dtype, ...)`. The matmul returns that
    dtype too (GPUs, TPUs and XLA:CPU accumulate 16-bit products in float32 and round once),
    so that its gradients are 16-bit matmuls as well; the bias is added in float32.
    `time_major`: x is (T, B, D); on a device mesh its rows B are split, and the one 2-D
    matmul's (T*B, D) reshape would gather them, so the matmul keeps the (T, B) axes there.
    """
    kernel = params["input_kernel"]
    op = operand_dtype(dtype, x, kernel)
    if time_major and on_mesh():
        xp = jnp.matmul(cast(x, op), cast(kernel, op))  # (T, B, G*H)
    else:
        xp = dense_matmul(cast(x, op), cast(kernel, op))  # (..., G*H)
    bias = params["bias"].reshape((1,) * (x.ndim - 1) + (-1,))
    acc = accumulation_dtype(op)
    return cast(cast(xp, acc) + cast(bias, acc), op)


def project_tokens(params: Params, embedding: jax.Array, tokens: jax.Array,
                   dtype: Any = jnp.float32, time_major: bool = False) -> jax.Array:
    """`project_inputs(params, embedding[tokens], dtype)` for int tokens (...,) -> (..., G*H).

    When the table has fewer rows V than there are tokens N, the V rows are projected once and
    the result is gathered: V*D*G*H instead of N*D*G*H multiply-adds in the forward pass and in
    both gradients (a byte-level LM with B*T = 4096 tokens and V = 256 does 1/16 of the work).
    The values are the same dot products, up to float rounding.
    """
    if embedding.shape[0] < tokens.size:
        return jnp.take(project_inputs(params, embedding, dtype), tokens, axis=0)
    return project_inputs(params, jnp.take(embedding, tokens, axis=0), dtype, time_major)


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
