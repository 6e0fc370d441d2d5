"""Multi-head attention with an optional key/value cache for autoregressive decoding.

The attention math goes through `jax.nn.dot_product_attention`, so the same module runs the
XLA kernel on CPU and cuDNN flash attention on GPU (`implementation="cudnn"`). On CPU the
training / full-sequence path instead runs `blocked_causal_attention` (implementation
"blocked", the default there): XLA's kernel computes the whole T x T score matrix and masks
half of it away, while the blocked form skips the key blocks above the diagonal.

Shapes: B batch, T query length, S key length, D model width, N heads, H head width (D = N * H).
"""
from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

Implementation = Literal["xla", "cudnn", "blocked"] | None

CAUSAL_BLOCK_SIZE = 64  # measured on a 2-core CPU: 32 and 128 are about as fast, 256 is no gain


def blocked_causal_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, block_size: int = CAUSAL_BLOCK_SIZE
) -> jax.Array:
    """Causal attention that skips the key blocks no query of a block can see.

    q, k, v: (B, T, N, H) -> (B, T, N, H). Queries [lo, hi) attend to keys [0, hi) only, so
    about half of the score FLOPs of the full T x T form are never computed. Equal to
    `jax.nn.dot_product_attention(q, k, v, is_causal=True)` up to float rounding; the loop over
    blocks is static (T / block_size blocks of one fused XLA attention each).
    """
    seq_len, head_dim = q.shape[1], q.shape[-1]
    scale = jnp.asarray(head_dim**-0.5, q.dtype)
    masked = jnp.asarray(-0.7 * float(jnp.finfo(q.dtype).max), q.dtype)  # as jax.nn masks
    outs = []
    for lo in range(0, seq_len, block_size):
        hi = min(lo + block_size, seq_len)
        # Written out rather than through jax.nn.dot_product_attention(mask=...), which measured
        # no faster than the unblocked form here (its layout transposes cost what blocks save).
        scores = jnp.einsum("btnh,bsnh->bnts", q[:, lo:hi], k[:, :hi]) * scale  # (B, N, t, s)
        visible = jnp.arange(lo, hi)[:, None] >= jnp.arange(hi)[None, :]  # (t, s)
        probs = jax.nn.softmax(jnp.where(visible, scores, masked), axis=-1)
        outs.append(jnp.einsum("bnts,bsnh->btnh", probs, v[:, :hi]))  # (B, t, N, H)
    return jnp.concatenate(outs, axis=1)


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                     implementation: Implementation = None) -> jax.Array:
    """Causal self-attention over a whole sequence, q, k, v: (B, T, N, H) -> (B, T, N, H).

    `implementation=None` picks "blocked" on CPU and lets `jax.nn.dot_product_attention`
    choose (cuDNN where it applies, else XLA) on GPU and TPU.
    """
    if implementation is None and jax.default_backend() == "cpu":
        implementation = "blocked"
    if implementation == "blocked":
        return blocked_causal_attention(q, k, v)
    return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=implementation)


class CausalSelfAttention(nn.Module):
    """Causal multi-head self-attention with a fused QKV projection.

    With `decode=True` the module keeps `cached_key` / `cached_value` (B, S, N, H) and
    `cache_index` in the "cache" collection: each call writes its T new keys at `cache_index`
    and attends over every cached position up to its own. The cache length S is the length of
    the tokens the cache was initialised with (see `zoo.models.gpt.init_cache`). A call may
    write several tokens at once (prompt prefill) or one (a decoding step).
    """

    num_heads: int
    dtype: jnp.dtype = jnp.float32
    kernel_init: nn.initializers.Initializer = nn.initializers.normal(0.02)
    out_kernel_init: nn.initializers.Initializer = nn.initializers.normal(0.02)
    implementation: Implementation = None
    decode: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, T, D) -> (B, T, D)."""
        d_model = x.shape[-1]
        if d_model % self.num_heads:
            raise ValueError(
                f"emb_dim={d_model} is not divisible by num_heads={self.num_heads}; "
                "choose num_heads that divides emb_dim."
            )
        head_dim = d_model // self.num_heads
        qkv = nn.DenseGeneral(
            features=(3, self.num_heads, head_dim),
            kernel_init=self.kernel_init,
            dtype=self.dtype,
            name="qkv",
        )(x)  # (B, T, 3, N, H)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each (B, T, N, H)

        if self.decode and self.has_variable("cache", "cached_key"):
            out = self._attend_with_cache(q, k, v)
        else:
            if self.decode:  # initialisation: create an empty cache of this length
                self._init_cache(k, v)
            out = causal_attention(q, k, v, self.implementation)  # (B, T, N, H)

        return nn.DenseGeneral(
            features=d_model,
            axis=(-2, -1),
            kernel_init=self.out_kernel_init,
            dtype=self.dtype,
            name="out",
        )(out)

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
        implementation = None if self.implementation == "blocked" else self.implementation
        return jax.nn.dot_product_attention(
            q, cached_key.value, cached_value.value, mask=mask, implementation=implementation
        )
