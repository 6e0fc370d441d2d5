"""Cross entropy straight from an output head, a chunk of tokens at a time.

`head_cross_entropy(head, targets, weights)` equals `token_cross_entropy(head.logits(), ...)`
(same summed loss, accuracy and gradients) but never holds the (N, V) float32 logits of all N
tokens: it runs over chunks of `chunk_size` tokens, and for each chunk computes the logits, the
loss, and at once the gradients of the loss with respect to the features and the output kernel
(a custom VJP, as "fused linear cross entropy" kernels do). The backward pass then only scales
those by the incoming cotangent: no logits are kept for it and none are recomputed, so the
matmul work is the same as the plain form's (one forward and two gradient matmuls).

Precision: the matmuls take the head's operands (bf16 under mixed precision) and accumulate in
float32; softmax, loss and the kernel gradient's accumulation are float32.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from zoo.nn.dense import dense_dot_general
from zoo.nn.vocab_head import OutputHead

DEFAULT_CHUNK_SIZE = 8192  # tokens per chunk: (8192, 50304) float32 logits are 1.6 GB


def _matmul(a: jax.Array, b: jax.Array, contract: tuple[int, int]) -> jax.Array:
    return dense_dot_general(a, b, (((contract[0],), (contract[1],)), ((), ())),
                             preferred_element_type=jnp.float32)


def _chunk_logits(x: jax.Array, kernel: jax.Array, bias: jax.Array, vocab_size: int) -> jax.Array:
    """x (c, D), kernel (D, Vp), bias (Vp,) -> (c, Vp) float32, padding columns masked."""
    logits = _matmul(x, kernel, (1, 0)) + bias.astype(jnp.float32)[None]
    if kernel.shape[1] == vocab_size:
        return logits
    column = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 1)
    return jnp.where(column < vocab_size, logits, jnp.finfo(jnp.float32).min / 2)


def _chunk_sums(logits: jax.Array, targets: jax.Array, weights: jax.Array):
    """(summed loss, summed accuracy, logsumexp (c,)) of one chunk.

    A token counts as correct when its target's logit is the row's maximum: the max that the
    logsumexp needs anyway, so accuracy costs no extra pass over the logits (an exact tie with
    an earlier column, which `argmax` would resolve the other way, counts as correct)."""
    row_max = jnp.max(logits, axis=-1)  # (c,)
    lse = row_max + jnp.log(jnp.sum(jnp.exp(logits - row_max[:, None]), axis=-1))  # (c,)
    target_logit = jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]  # (c,)
    loss = jnp.sum((lse - target_logit) * weights)
    correct = jnp.sum((target_logit >= row_max) * weights)
    return loss, correct, lse


def _chunks(x: jax.Array, chunk: int) -> jax.Array:
    return x.reshape(x.shape[0] // chunk, chunk, *x.shape[1:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _fused_cross_entropy(x, kernel, bias, targets, weights, vocab_size: int, chunk: int):
    """x (N, D), kernel (D, Vp), bias (Vp,), targets (N,), weights (N,) -> (loss sum, correct)."""
    def body(carry, xs):
        x_c, t_c, w_c = xs
        loss, correct, _ = _chunk_sums(_chunk_logits(x_c, kernel, bias, vocab_size), t_c, w_c)
        return (carry[0] + loss, carry[1] + correct), None

    zero = jnp.zeros((), jnp.float32)
    (loss, correct), _ = jax.lax.scan(
        body, (zero, zero), (_chunks(x, chunk), _chunks(targets, chunk), _chunks(weights, chunk)))
    return loss, correct


def _fused_forward(x, kernel, bias, targets, weights, vocab_size, chunk):
    def body(carry, xs):
        loss, correct, d_kernel, d_bias = carry
        x_c, t_c, w_c = xs
        logits = _chunk_logits(x_c, kernel, bias, vocab_size)  # (c, Vp)
        chunk_loss, chunk_correct, lse = _chunk_sums(logits, t_c, w_c)
        probs = jnp.exp(logits - lse[:, None])
        column = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 1)
        d_logits = jnp.where(column == t_c[:, None], probs - 1.0, probs) * w_c[:, None]
        d_logits_op = d_logits.astype(kernel.dtype)  # the matmuls' operand dtype
        d_x = _matmul(d_logits_op, kernel, (1, 1)).astype(x.dtype)  # (c, D)
        d_kernel = d_kernel + _matmul(x_c, d_logits_op, (0, 0))  # (D, Vp) float32
        d_bias = d_bias + jnp.sum(d_logits, axis=0)
        return (loss + chunk_loss, correct + chunk_correct, d_kernel, d_bias), d_x

    zero = jnp.zeros((), jnp.float32)
    init = (zero, zero, jnp.zeros(kernel.shape, jnp.float32), jnp.zeros(bias.shape, jnp.float32))
    (loss, correct, d_kernel, d_bias), d_x = jax.lax.scan(
        body, init, (_chunks(x, chunk), _chunks(targets, chunk), _chunks(weights, chunk)))
    residuals = (d_x.reshape(x.shape), d_kernel.astype(kernel.dtype), d_bias.astype(bias.dtype))
    return (loss, correct), residuals


def _fused_backward(vocab_size, chunk, residuals, cotangents):
    g = cotangents[0]  # the accuracy output has no gradient
    scaled = tuple((g * r.astype(jnp.float32)).astype(r.dtype) for r in residuals)
    return (*scaled, None, None)


_fused_cross_entropy.defvjp(_fused_forward, _fused_backward)


def head_cross_entropy(head: OutputHead, targets: jax.Array, weights: jax.Array,
                       chunk_size: int = DEFAULT_CHUNK_SIZE
                       ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Summed per-token cross entropy of an output head: features (..., D), targets (...),
    weights (...) -> (loss sum, {"loss", "accuracy", "weight"} sums), as `token_cross_entropy`."""
    dim = head.features.shape[-1]
    x = head.features.reshape(-1, dim)  # (N, D)
    t = targets.reshape(-1).astype(jnp.int32)
    w = weights.reshape(-1).astype(jnp.float32)
    n = x.shape[0]
    chunk = max(1, min(chunk_size, n))
    extra = -n % chunk  # pad to whole chunks with weight-0 rows
    if extra:
        x = jnp.pad(x, ((0, extra), (0, 0)))
        t, w = jnp.pad(t, (0, extra)), jnp.pad(w, (0, extra))
    bias = head.bias if head.bias is not None else jnp.zeros(head.kernel.shape[1], jnp.float32)
    loss, correct = _fused_cross_entropy(x, head.kernel, bias, t, w, head.vocab_size, chunk)
    return loss, {"loss": loss, "accuracy": correct, "weight": jnp.sum(w)}
