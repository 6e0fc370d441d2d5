"""Transformer blocks shared by the model families.

Shapes: B batch, T length, D model width (`emb_dim`), F feed-forward width (`mlp_dim`).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.nn.attention import CausalSelfAttention, Implementation


class MlpBlock(nn.Module):
    """Position-wise feed-forward: Dense(F) -> GELU -> Dense(D) -> dropout."""

    mlp_dim: int
    dropout_rate: float = 0.0
    deterministic: bool = True
    dtype: jnp.dtype = jnp.float32
    out_kernel_init: nn.initializers.Initializer = nn.initializers.normal(0.02)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, T, D) -> (B, T, D)."""
        d_model = x.shape[-1]
        h = nn.Dense(self.mlp_dim, kernel_init=nn.initializers.normal(0.02), dtype=self.dtype,
                     name="fc")(x)  # (B, T, F)
        h = nn.gelu(h, approximate=True)
        h = nn.Dense(d_model, kernel_init=self.out_kernel_init, dtype=self.dtype, name="proj")(h)
        return nn.Dropout(self.dropout_rate)(h, deterministic=self.deterministic)


class PreLNDecoderBlock(nn.Module):
    """GPT-2 block: x + Drop(Attn(LN(x))), then x + Drop(MLP(LN(x))).

    The call signature `(x, _) -> (x, None)` lets the same block run unrolled or under
    `nn.scan` over layers.
    """

    num_heads: int
    mlp_dim: int
    num_layers: int  # only used to scale the residual projections' init, as GPT-2 does
    dropout_rate: float = 0.0
    deterministic: bool = True
    decode: bool = False
    dtype: jnp.dtype = jnp.float32
    attention_implementation: Implementation = None

    @nn.compact
    def __call__(self, x: jax.Array, _=None) -> tuple[jax.Array, None]:
        """x: (B, T, D) -> ((B, T, D), None)."""
        residual_init = nn.initializers.normal(0.02 / math.sqrt(2 * self.num_layers))
        h = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="ln_attn")(x)
        h = CausalSelfAttention(
            num_heads=self.num_heads,
            dtype=self.dtype,
            out_kernel_init=residual_init,
            implementation=self.attention_implementation,
            decode=self.decode,
            name="attn",
        )(h)
        x = x + nn.Dropout(self.dropout_rate)(h, deterministic=self.deterministic)
        h = nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, name="ln_mlp")(x)
        x = x + MlpBlock(
            mlp_dim=self.mlp_dim,
            dropout_rate=self.dropout_rate,
            deterministic=self.deterministic,
            dtype=self.dtype,
            out_kernel_init=residual_init,
            name="mlp",
        )(h)
        return x, None
