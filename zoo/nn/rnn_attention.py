"""Attention of an RNN decoder over encoder outputs (Bahdanau et al. 2015; Luong et al. 2015).

Every module is called as

    context (B, Hk), weights (B, S) = attention(query (B, Hq), keys (B, S, Hk), mask (B, S),
                                                projected_keys=None)

where `keys` are the encoder outputs (they are also the values the context averages) and
`mask` is True on real source positions. The weights sum to 1 over the valid positions and are
exactly 0 on padding (a row with no valid position gets all-zero weights and a zero context).

The part of the score that depends only on the source is computed once per source by
`project_keys(keys)`; a decoder keeps its result and passes it back as `projected_keys`, so a
decoding step only projects the query and forms the scores.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.nn.logical_axes import axes, dense_axes


def masked_softmax(scores: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax over the last axis of `scores` (B, S) restricted to `mask` (B, S); 0 elsewhere."""
    scores = scores.astype(jnp.float32)
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    return jnp.where(mask, jax.nn.softmax(scores, axis=-1), 0.0)


def _check(query: jax.Array, keys: jax.Array, mask: jax.Array) -> None:
    if query.ndim != 2 or keys.ndim != 3 or mask.shape != keys.shape[:2]:
        raise ValueError(
            f"attention expects query (B, Hq), keys (B, S, Hk) and mask (B, S); got shapes "
            f"{query.shape}, {keys.shape} and {mask.shape}."
        )
    if query.shape[0] != keys.shape[0]:
        raise ValueError(f"query batch {query.shape[0]} != keys batch {keys.shape[0]}.")


def _projected_keys(module: Any, query: jax.Array, keys: jax.Array, mask: jax.Array,
                    projected_keys: jax.Array | None) -> jax.Array:
    """Checks the shapes; the keys' projection, computed here unless the caller kept one."""
    _check(query, keys, mask)
    return module.project_keys(keys) if projected_keys is None else projected_keys


def _context(weights: jax.Array, keys: jax.Array) -> jax.Array:
    """(B, S) x (B, S, Hk) -> (B, Hk)."""
    return jnp.einsum("bs,bsh->bh", weights.astype(keys.dtype), keys)


class BahdanauAttention(nn.Module):
    """Additive attention: score(q, k_s) = v^T tanh(W_q q + W_k k_s + b)."""

    attention_size: int
    dtype: Any = jnp.float32

    def setup(self):
        self.query_proj = nn.Dense(self.attention_size, use_bias=False, dtype=self.dtype,
                                   **dense_axes("hidden", "kv"))
        self.key_proj = nn.Dense(self.attention_size, use_bias=True, dtype=self.dtype,
                                 **dense_axes("hidden", "kv"))
        self.v = self.param("v", axes(nn.initializers.lecun_normal(), "kv", None),
                            (self.attention_size, 1))

    def project_keys(self, keys: jax.Array) -> jax.Array:
        """keys (B, S, Hk) -> W_k k + b (B, S, A): once per source."""
        return self.key_proj(keys)

    def __call__(self, query: jax.Array, keys: jax.Array, mask: jax.Array,
                 projected_keys: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        projected_keys = _projected_keys(self, query, keys, mask, projected_keys)
        hidden = jnp.tanh(projected_keys + self.query_proj(query)[:, None, :])  # (B, S, A)
        scores = (hidden @ self.v.astype(hidden.dtype))[..., 0]  # (B, S)
        weights = masked_softmax(scores, mask)
        return _context(weights, keys), weights


class LuongAttention(nn.Module):
    """Multiplicative attention: score "dot" q^T k_s, or "general" q^T W k_s.

    "general" needs `query_size` (the width Hq of the query, W maps Hk -> Hq); "dot" needs
    Hq == Hk and has no parameters.
    """

    score: str = "general"  # "dot" | "general"
    query_size: int | None = None
    dtype: Any = jnp.float32

    def setup(self):
        if self.score not in ("dot", "general"):
            raise ValueError(f"unknown Luong score {self.score!r}; choose 'dot' or 'general'.")
        if self.score == "general":
            if self.query_size is None:
                raise ValueError("LuongAttention(score='general') needs query_size.")
            self.key_proj = nn.Dense(self.query_size, use_bias=False, dtype=self.dtype,
                                     **dense_axes("hidden", "kv"))

    def project_keys(self, keys: jax.Array) -> jax.Array:
        """keys (B, S, Hk) -> W k (B, S, Hq) for "general"; the keys themselves for "dot"."""
        if self.score == "dot":
            return keys
        return self.key_proj(keys)

    def __call__(self, query: jax.Array, keys: jax.Array, mask: jax.Array,
                 projected_keys: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        projected_keys = _projected_keys(self, query, keys, mask, projected_keys)
        if projected_keys.shape[-1] != query.shape[-1]:
            raise ValueError(
                f"Luong '{self.score}' attention needs the query width ({query.shape[-1]}) to "
                f"equal the (projected) key width ({projected_keys.shape[-1]}); use the "
                f"'general' score (or Bahdanau attention) when the widths differ."
            )
        scores = jnp.einsum("bh,bsh->bs", query.astype(projected_keys.dtype), projected_keys)
        weights = masked_softmax(scores, mask)
        return _context(weights, keys), weights


__all__ = ["BahdanauAttention", "LuongAttention", "masked_softmax"]
