"""A `dot_general` for Flax's Dense / DenseGeneral that computes one 2-D matmul.

`lax.dot_general` on (B, T, D) inputs (and DenseGeneral's (B, T, 3, N, H) qkv or (B, T, N, H)
out projection) keeps the batch axes through autodiff: the gradients become dot_generals over
3-D to 5-D shapes, around which XLA's CPU backend adds layout copies. Reshaping to
(B*T, D) @ (D, F) first makes the forward and both gradients (`dY @ Wᵀ`, `Xᵀ @ dY`) plain 2-D
matmuls, with the same values: the transformer and BERT train steps of
benchmarks/transformer_step.py ran 7% faster on the 2-core CPU (benchmarks/RESULTS.md). It is
an ordinary JAX function, so jvp, vmap, remat and scan all apply.

    nn.Dense(features, dot_general=dense_dot_general)
"""
from __future__ import annotations

import functools
import math

import jax
from jax import lax

from zoo.nn.logical_axes import on_mesh


def _is_dense_contraction(x: jax.Array, dimension_numbers) -> bool:
    """True for Dense-style contractions: the last k axes of x with the first k of the kernel."""
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    k = len(lhs_contract)
    return (not lhs_batch and not rhs_batch
            and tuple(lhs_contract) == tuple(range(x.ndim - k, x.ndim))
            and tuple(rhs_contract) == tuple(range(k)))


def dense_dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers, precision=None,
                      preferred_element_type=None) -> jax.Array:
    """Drop-in `lax.dot_general`. A Dense-style contraction, lhs (..., K1..Kk) with rhs
    (K1..Kk, F...), runs as one (M, K) @ (K, N) matmul; anything else goes to lax.dot_general."""
    if not _is_dense_contraction(lhs, dimension_numbers):
        return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type)
    k = len(dimension_numbers[0][0])
    batch_shape = lhs.shape[:lhs.ndim - k]
    inner = math.prod(lhs.shape[lhs.ndim - k:])
    out = matmul_2d(lhs.reshape(math.prod(batch_shape), inner), rhs.reshape(inner, -1),
                    precision=precision, preferred_element_type=preferred_element_type)
    return out.reshape(batch_shape + rhs.shape[k:])


def matmul_2d(x: jax.Array, kernel: jax.Array, **dot_kwargs) -> jax.Array:
    """x (M, K) @ kernel (K, N) -> (M, N).

    For K >= N the kernel is fed to the dot as an explicit (N, K) copy, `x @ (kernelᵀ)ᵀ`. The
    value is the same; what changes is the weight gradient: autodiff then computes it as the
    (N, K) product `dYᵀ @ X` and transposes that small result, where the plain form computes
    the (K, N) product `Xᵀ @ dY` directly, which XLA-CPU's kernels run at 2/3 of the speed when
    K > N (gpt_tiny's MLP output, (4096, 1024) -> 256: 29.4 vs 25.2 ms forward + backward). The
    optimization barrier keeps XLA from folding the transpose back into the dot. For K < N the
    plain form is the faster one (256 -> 8192: 188 vs 227 ms), so it is kept; on GPU and TPU,
    whose matmul libraries take either operand order natively, too.

    Inside the mesh path's step (`zoo.nn.logical_axes.on_mesh`) the matmul has its own VJP
    that forms the weight gradient (K, N) in one dot with no transpose after it: the data
    parallel all-reduce would otherwise sit between autodiff's (N, K) dot and its transpose,
    and every weight gradient then paid a transpose and a copy (gpt_tiny on 4 CPU devices:
    mesh / pmap step time 1.077 before, 0.95-0.99 after, 2026-12-01). Forward-mode autodiff
    (`jax.jvp`) does not go through a custom VJP; off the mesh nothing changes.
    """
    if on_mesh():
        return _mesh_matmul(x, kernel, dot_kwargs.get("precision"),
                            dot_kwargs.get("preferred_element_type"))
    if kernel.shape[0] >= kernel.shape[1] and jax.default_backend() == "cpu":
        return lax.dot_general(x, lax.optimization_barrier(kernel.T), (((1,), (1,)), ((), ())),
                               **dot_kwargs)
    return lax.dot(x, kernel, **dot_kwargs)


def dense_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """x (..., K) @ kernel (K, N) -> (..., N) as one 2-D matmul, e.g. tied output logits
    `dense_matmul(h, embedding.T)` (what `nn.Embed.attend` computes with a 3-D jnp.dot)."""
    return dense_dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _mesh_matmul(x: jax.Array, kernel: jax.Array, precision=None,
                 preferred_element_type=None) -> jax.Array:
    return lax.dot(x, kernel, precision=precision, preferred_element_type=preferred_element_type)


def _mesh_matmul_fwd(x, kernel, precision, preferred_element_type):
    return _mesh_matmul(x, kernel, precision, preferred_element_type), (x, kernel)


def _mesh_matmul_bwd(precision, preferred_element_type, residuals, g):
    x, kernel = residuals
    dx = lax.dot_general(g, kernel, (((1,), (1,)), ((), ())), precision=precision,
                         preferred_element_type=x.dtype)  # (M, K)
    # (K, N) straight from the dot: autodiff's own rule computes (N, K) and transposes it, and
    # on a mesh the partitioner's all-reduce of the gradient lands between the two, where XLA
    # can no longer fold the transpose into the dot (a weight-sized transpose and copy each).
    dk = lax.dot_general(x, g, (((0,), (0,)), ((), ())), precision=precision,
                         preferred_element_type=kernel.dtype)
    return dx, dk


_mesh_matmul.defvjp(_mesh_matmul_fwd, _mesh_matmul_bwd)
