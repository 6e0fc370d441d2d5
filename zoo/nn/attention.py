"""Multi-head attention shared by every transformer family: self (optionally causal) and cross
attention, padding masks, and key/value caches for autoregressive decoding.

The attention math goes through `jax.nn.dot_product_attention` on GPU and TPU, so the same
module runs cuDNN flash attention there (`implementation="cudnn"`) or XLA's kernel ("xla"). On
CPU the default (None, or "blocked") is the zoo's own XLA form of the same math: the heads are
moved in front of the sequence axes before the two batched matmuls (`head_major_attention`),
and causal self-attention over a whole sequence also skips the key blocks above the diagonal
(`blocked_causal_attention`). On a 2-core CPU that made BERT's masked attention forward +
backward 38 -> 23 ms per layer and gpt_tiny's causal attention 40 -> 34 ms: XLA's CPU batched
matmuls are fastest with the batch axes leading, and `jax.nn`'s XLA form contracts 5-D
(B, T, K, G, H) operands (it supports grouped-query attention) with the heads in the middle.

Masks are boolean, True = may attend, broadcastable to (B, N, T, S); `padding_mask` builds the
usual key-padding mask (B, 1, 1, S). Attention-probability dropout is not applied (the fused
kernels have none); residual dropout is applied by the blocks.

Shapes: B batch, T query length, S key length, D model width, N heads, H head width (D = N * H).
"""
from __future__ import annotations

import functools
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.nn.dense import dense_dot_general

Implementation = Literal["xla", "cudnn", "blocked"] | None
IMPLEMENTATIONS = (None, "xla", "cudnn", "blocked")

CAUSAL_BLOCK_SIZE = 64  # measured on a 2-core CPU: 32 and 128 are about as fast, 256 is no gain


def _masked_value(dtype) -> jax.Array:
    return jnp.asarray(-0.7 * float(jnp.finfo(dtype).max), dtype)  # as jax.nn masks


def _head_major(x: jax.Array) -> jax.Array:
    return x.transpose(0, 2, 1, 3)  # (B, T, N, H) <-> (B, N, T, H)


def _attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Head-major q (B, N, t, H), k and v (B, N, s, H), mask -> (B, N, t, H)."""
    scale = jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
    scores = jnp.einsum("bnth,bnsh->bnts", q, k) * scale  # (B, N, t, s)
    if mask is not None:
        scores = jnp.where(mask, scores, _masked_value(scores.dtype))
    probs = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("bnts,bnsh->bnth", probs, v)


def head_major_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                         mask: jax.Array | None = None) -> jax.Array:
    """q (B, T, N, H), k and v (B, S, N, H), mask broadcastable to (B, N, T, S) or None ->
    (B, T, N, H).

    `jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")` up to float
    rounding (a fully masked query row also averages all values), computed on (B, N, T, H)
    transposes of the operands.
    """
    return _head_major(_attend(_head_major(q), _head_major(k), _head_major(v), mask))


def blocked_causal_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, block_size: int = CAUSAL_BLOCK_SIZE,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Causal attention that skips the key blocks no query of a block can see.

    q, k, v: (B, T, N, H) -> (B, T, N, H); `mask` (broadcastable to (B, N, T, T), e.g. a key
    padding mask) further restricts it. Queries [lo, hi) attend to keys [0, hi) only, so about
    half of the score FLOPs of the full T x T form are never computed. Equal to
    `jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True)` up to float rounding;
    the loop over blocks is static (T / block_size blocks of one fused XLA attention each).
    """
    seq_len = q.shape[1]
    qh, kh, vh = _head_major(q), _head_major(k), _head_major(v)  # (B, N, T, H)
    if mask is not None:
        mask = jnp.broadcast_to(mask, jnp.broadcast_shapes(mask.shape, (1, 1, seq_len, seq_len)))
    outs = []
    for lo in range(0, seq_len, block_size):
        hi = min(lo + block_size, seq_len)
        visible = (jnp.arange(lo, hi)[:, None] >= jnp.arange(hi)[None, :])[None, None]  # (1,1,t,s)
        if mask is not None:
            visible = visible & mask[:, :, lo:hi, :hi]
        outs.append(_attend(qh[:, :, lo:hi], kh[:, :, :hi], vh[:, :, :hi], visible))
    return _head_major(jnp.concatenate(outs, axis=2))


def _zoo_cpu_form(implementation: Implementation) -> bool:
    return implementation == "blocked" or (
        implementation is None and jax.default_backend() == "cpu")


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                     implementation: Implementation = None) -> jax.Array:
    """Causal self-attention over a whole sequence, q, k, v: (B, T, N, H) -> (B, T, N, H).

    `implementation=None` picks "blocked" on CPU and lets `jax.nn.dot_product_attention`
    choose (cuDNN where it applies, else XLA) on GPU and TPU.
    """
    if _zoo_cpu_form(implementation):
        return blocked_causal_attention(q, k, v)
    return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=implementation)


def padding_mask(valid: jax.Array) -> jax.Array:
    """valid (B, S) bool (True at real tokens) -> key-padding mask (B, 1, 1, S)."""
    return valid[:, None, None, :]


def check_implementation(implementation: Implementation) -> None:
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention_implementation must be one of {IMPLEMENTATIONS}; got "
                         f"{implementation!r}.")


def masked_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, *,
                     causal: bool = False, implementation: Implementation = None) -> jax.Array:
    """q (B, T, N, H), k and v (B, S, N, H), mask broadcastable to (B, N, T, S) -> (B, T, N, H).

    With `implementation="cudnn"` the mask must be a key-padding mask (B, 1, 1, S) of
    right-padded sequences: it is passed to the kernel as key lengths, which cuDNN supports.
    """
    if _zoo_cpu_form(implementation):
        if causal:
            return blocked_causal_attention(q, k, v, mask=mask)
        return head_major_attention(q, k, v, mask)
    if mask is not None and implementation == "cudnn":
        key_lengths = jnp.sum(mask[:, 0, 0, :], axis=-1).astype(jnp.int32)  # (B,)
        return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="cudnn",
                                            key_value_seq_lengths=key_lengths)
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal,
                                        implementation=implementation)


class MultiHeadAttention(nn.Module):
    """Multi-head attention: self-attention (`context=None`, fused QKV projection) or
    cross-attention (queries from `x`, keys and values from `context`, fused KV projection).

    Self-attention with `causal=True` lets position t see positions <= t. `mask` (True = may
    attend) adds padding or any other restriction.

    With `decode=True` the module keeps a cache in the "cache" collection:
    * self-attention: `cached_key` / `cached_value` (B, S, N, H) and `cache_index`. Each call
      writes its T new keys at `cache_index` and attends causally over the cache (`mask` is
      ignored: decoded sequences carry no padding). The cache length S is the length of the
      sequence the cache was initialised with (see `zoo.models.gpt.init_cache`). A call may
      write several tokens at once (prompt prefill) or one (a decoding step).
    * cross-attention: `cached_context_key` / `cached_context_value` (B, S, N, H), the
      projected `context`. A call with `context` (re)computes and stores them; a call with
      `context=None` attends over the stored ones, so a decoding step never re-projects the
      encoder outputs.
    """

    num_heads: int
    causal: bool = False
    dtype: jnp.dtype = jnp.float32
    use_bias: bool = True
    kernel_init: nn.initializers.Initializer = nn.initializers.normal(0.02)
    out_kernel_init: nn.initializers.Initializer = nn.initializers.normal(0.02)
    implementation: Implementation = None
    decode: bool = False
    cross: bool = False  # cross-attention (keys/values from a context) rather than self

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None,
                 mask: jax.Array | None = None) -> jax.Array:
        """x (B, T, D), context (B, S, Dc) or None, mask (B|1, N|1, T|1, S) -> (B, T, D)."""
        d_model = x.shape[-1]
        if d_model % self.num_heads:
            raise ValueError(
                f"emb_dim={d_model} is not divisible by num_heads={self.num_heads}; "
                "choose num_heads that divides emb_dim."
            )
        head_dim = d_model // self.num_heads
        dense = functools.partial(nn.DenseGeneral, kernel_init=self.kernel_init,
                                  use_bias=self.use_bias, dtype=self.dtype,
                                  dot_general=dense_dot_general)
        if self.cross:
            q = dense(features=(self.num_heads, head_dim), name="query")(x)  # (B, T, N, H)
            k, v = self._context_keys(dense, head_dim, context)  # (B, S, N, H) each
            out = masked_attention(q, k, v, mask, implementation=self.implementation)
        else:
            qkv = dense(features=(3, self.num_heads, head_dim), name="qkv")(x)  # (B, T, 3, N, H)
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each (B, T, N, H)
            if self.decode and self.has_variable("cache", "cached_key"):
                out = self._attend_with_cache(q, k, v)
            else:
                if self.decode:  # initialisation: create an empty cache of this length
                    self._init_cache(k, v)
                out = masked_attention(q, k, v, mask, causal=self.causal,
                                       implementation=self.implementation)
        return nn.DenseGeneral(
            features=d_model,
            axis=(-2, -1),
            kernel_init=self.out_kernel_init,
            use_bias=self.use_bias,
            dtype=self.dtype,
            dot_general=dense_dot_general,
            name="out",
        )(out)

    def _context_keys(self, dense, head_dim: int,
                      context: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        if context is None:
            if not (self.decode and self.has_variable("cache", "cached_context_key")):
                raise ValueError("cross-attention needs a context (the encoder outputs), or "
                                 "decode=True with a cache filled by an earlier call.")
            return (self.get_variable("cache", "cached_context_key"),
                    self.get_variable("cache", "cached_context_value"))
        kv = dense(features=(2, self.num_heads, head_dim), name="kv")(context)  # (B, S, 2, N, H)
        k, v = kv[:, :, 0], kv[:, :, 1]
        if self.decode:
            self.put_variable("cache", "cached_context_key", k)
            self.put_variable("cache", "cached_context_value", v)
        return k, v

    def _init_cache(self, k: jax.Array, v: jax.Array) -> None:
        self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
        self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
        self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))

    def _attend_with_cache(self, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        cached_key = self.variable("cache", "cached_key")
        cached_value = self.variable("cache", "cached_value")
        cache_index = self.variable("cache", "cache_index")
        index = cache_index.value
        num_new, cache_len = q.shape[1], cached_key.value.shape[1]
        cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, k, (0, index, 0, 0))
        cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, v, (0, index, 0, 0))
        cache_index.value = index + num_new
        # Query t (absolute position index + t) sees keys 0 .. index + t.
        query_pos = index + jnp.arange(num_new)[:, None]  # (T, 1)
        key_pos = jnp.arange(cache_len)[None, :]  # (1, S)
        mask = (key_pos <= query_pos)[None, None]  # (1, 1, T, S)
        if _zoo_cpu_form(self.implementation):
            return head_major_attention(q, cached_key.value, cached_value.value, mask)
        return jax.nn.dot_product_attention(
            q, cached_key.value, cached_value.value, mask=mask, implementation=self.implementation
        )
