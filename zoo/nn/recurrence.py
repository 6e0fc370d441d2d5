"""The time loop of a recurrent layer as one `lax.scan`, with a hand-written backward pass.

`recurrence(cell, hidden_kernel, hidden_bias, xp, carry, valid)` runs a cell over projected
inputs. Autodiff through a plain scan would accumulate the hidden kernel's gradient one time
step at a time (T small (H, B) x (B, G*H) matmuls, inside the loop). The custom VJP instead
saves each step's hidden pre-activation hw_t = h_{t-1} @ W_h + b, runs a reverse scan that only
propagates dh through W_h^T, and then forms the weight gradient in ONE matmul over all T*B rows:

    dW_h = sum_t h_{t-1}^T dhw_t    (a (H, T*B) x (T*B, G*H) matmul after the loop)

The pointwise gradients come from the cell: the LSTM and Elman cells save their gate
activations in the forward loop and give closed-form gradients (`CellType.save` / `.grad`; the
reverse loop then evaluates no exp or tanh); the GRU's come from `jax.vjp` of its pointwise
function. Without `valid` (no padding) the loops do no masking at all.

Precision (`zoo.nn.precision`): the matmuls (h @ W_h in both loops, dW_h after) take operands in
the compute dtype and accumulate in float32; the gates, the carry and the saved residuals are
float32, and the outputs are in the compute dtype. The hidden kernel and bias come in and their
gradients go out in the parameter dtype (the casts happen inside, so the weight gradient is
rounded once, from its float32 sum).

Shapes: T time, B batch, H hidden, G gates; carries are tuples of (B, H) arrays.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from zoo.nn.cells import Carry, CellType, accumulation_dtype, cast, operand_dtype
from zoo.nn.logical_axes import constrain_batch, on_mesh


def _where(valid_t: jax.Array | None, a, b):
    """`jnp.where(valid_t, a, b)`; just `a` when every step is valid (valid is None)."""
    return a if valid_t is None else jnp.where(valid_t, a, b)


def _dot(a: jax.Array, b: jax.Array, dtype) -> jax.Array:
    """a @ b with operands cast to `dtype`, accumulated (and returned) in at least float32."""
    return jnp.matmul(cast(a, dtype), cast(b, dtype),
                      preferred_element_type=accumulation_dtype(dtype))


def _forward(cell: CellType, unroll: int, dtype, w_h, b_h, xp, carry, valid, save: bool):
    """The time loop; with `save`, also what the backward pass needs per step: the cell's own
    residuals (`cell.save`), else the hidden pre-activation hw_t (or, for additive cells, the
    whole gate pre-activation xp_t + hw_t); and the previous carry. `dtype` is the matmul
    operand dtype and that of the outputs."""
    w_op = cast(w_h, dtype)  # (H, G*H), cast once rather than per step
    b_acc = None if b_h is None else cast(b_h, accumulation_dtype(dtype))[None]  # (1, G*H)

    def body(c, inputs):
        xp_t, valid_t = inputs
        hw = _dot(c[0], w_op, dtype)  # (B, G*H), float32
        if b_acc is not None:
            hw = hw + b_acc
        if save and cell.save is not None:
            new, residuals = cell.save(c, xp_t + hw)
        else:
            new = cell.pointwise(c, xp_t, hw)
            residuals = xp_t + hw if cell.additive else hw
        new = tuple(_where(valid_t, n, o) for n, o in zip(new, c))
        y = cast(_where(valid_t, new[0], 0.0), dtype)  # (B, H)
        if not save:
            return new, y
        return new, (y, residuals, c)

    return jax.lax.scan(body, carry, (xp, valid), unroll=unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _recurrence(cell: CellType, unroll: int, dtype, w_h, b_h, xp, carry, valid):
    return _forward(cell, unroll, dtype, w_h, b_h, xp, carry, valid, save=False)


def _recurrence_fwd(cell, unroll, dtype, w_h, b_h, xp, carry, valid):
    final, (ys, saved, prev) = _forward(cell, unroll, dtype, w_h, b_h, xp, carry, valid,
                                        save=True)
    return (final, ys), (w_h, b_h, None if cell.additive else xp, valid, saved, prev)


def _pointwise_grad(cell: CellType):
    """(prev carry, saved, d_new[, xp]) -> (d_prev via the pointwise math, (..., d_hw))."""
    if cell.grad is not None:
        def grad(prev_t, saved_t, d_new):
            d_prev, d_g = cell.grad(prev_t, saved_t, d_new)
            return d_prev, (d_g,)

        return grad
    # Additive cells saved the gate pre-activation g = xp + hw: dxp = dhw = dg.
    pointwise = (lambda c, g: cell.pointwise(c, g, 0.0)) if cell.additive else cell.pointwise

    def vjp_grad(prev_t, saved_t, d_new, *xp_t):
        _, pullback = jax.vjp(pointwise, prev_t, *xp_t, saved_t)
        d_prev, *d_inputs = pullback(d_new)
        return d_prev, tuple(d_inputs)

    return vjp_grad


def _recurrence_bwd(cell, unroll, dtype, residuals, cotangents):
    w_h, b_h, xp, valid, saved, prev = residuals
    d_final, d_ys = cotangents
    d_final = tuple(constrain_batch(d) for d in d_final)  # (B, H): rows split on a mesh
    d_ys = constrain_batch(d_ys, axis=1)  # (T, B, H)
    w_h_t = cast(w_h.T, dtype)  # (G*H, H), transposed and cast once rather than inside the loop
    grad = _pointwise_grad(cell)

    def body(d_carry, inputs):
        d_y, valid_t, prev_t, saved_t = inputs[:4]
        # carry_t = where(valid, new, prev); y_t = where(valid, new[0], 0).
        d_new = (d_carry[0] + d_y,) + tuple(d_carry[1:])
        d_new = tuple(_where(valid_t, d, 0.0) for d in d_new)
        d_prev, d_inputs = grad(prev_t, saved_t, d_new, *inputs[4:])
        d_hw = d_inputs[-1]
        if valid_t is not None:  # a padded step passes the carry's gradient straight through
            d_prev = tuple(dp + jnp.where(valid_t, 0.0, dc) for dp, dc in zip(d_prev, d_carry))
        d_prev = (d_prev[0] + _dot(d_hw, w_h_t, dtype),) + tuple(d_prev[1:])
        return d_prev, d_inputs

    inputs = (d_ys, valid, prev, saved) + (() if cell.additive else (xp,))
    d_carry, d_inputs = jax.lax.scan(body, d_final, inputs, reverse=True, unroll=unroll)
    d_hw = d_inputs[-1]  # (T, B, G*H), float32
    d_xp = cast(d_hw if cell.additive else d_inputs[0], dtype)  # xp's dtype (see `recurrence`)
    # One matmul for all steps, rounded to the parameter dtype once. On a mesh it contracts T
    # and B in place: the (T*B, H) reshape would merge the split rows B and gather them (on one
    # device the reshaped 2-D matmul is the faster one: 35 vs 47 ms at T=128, B=32, H=512).
    if on_mesh():
        d_w_h = jnp.einsum("tbh,tbg->hg", cast(prev[0], dtype), cast(d_hw, dtype),
                           preferred_element_type=accumulation_dtype(dtype))
    else:
        t, b, h = prev[0].shape
        d_w_h = _dot(prev[0].reshape(t * b, h).T, d_hw.reshape(t * b, -1), dtype)
    d_w_h = cast(d_w_h, w_h.dtype)
    d_b_h = None if b_h is None else cast(jnp.sum(d_hw, axis=(0, 1)), b_h.dtype)
    return d_w_h, d_b_h, d_xp, d_carry, None


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def recurrence(cell: CellType, hidden_kernel: jax.Array, hidden_bias: jax.Array | None,
               xp: jax.Array, carry: Carry, valid: jax.Array | None = None,
               unroll: int = 1, dtype=jnp.float32) -> tuple[Carry, jax.Array]:
    """Runs `cell` over time-major projected inputs -> (final carry, outputs (T, B, H)).

    xp: (T, B, G*H); carry: tuple of (B, H); valid: (T, B, 1) bool or None (all valid);
    hidden_bias: (G*H,) added to h @ hidden_kernel, or None. Invalid steps keep the carry and
    output 0. `dtype` is the compute dtype (`zoo.nn.cells.operand_dtype`): the matmul operands,
    xp and the outputs are in it; the carry is kept in at least float32.
    """
    op = operand_dtype(dtype, hidden_kernel, xp)
    # On a mesh: rows split, as everywhere (`constrain_batch`); every step stays local.
    carry = tuple(constrain_batch(cast(c, accumulation_dtype(op))) for c in carry)
    xp = constrain_batch(cast(xp, op), axis=1)  # (T, B, G*H)
    carry, ys = _recurrence(cell, unroll, op, hidden_kernel, hidden_bias, xp, carry, valid)
    return tuple(constrain_batch(c) for c in carry), constrain_batch(ys, axis=1)
