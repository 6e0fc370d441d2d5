"""The output layer onto a vocabulary, padded for the accelerators' matmul tiles.

Language models end in `features (..., D) @ kernel (D, V)`. With V = 50,257 (GPT-2) that matmul
and its two gradients run on ragged tiles: on an H200 the gpt2_small step took 28.7 ms at
V = 50,257 and 23.3 ms with the columns padded to 50,304 (a multiple of 128). The zoo pads
in the forward pass, not in the parameters: the embedding table keeps its V rows, so parameter
counts, checkpoints and Hugging Face import/export are unaffected, and the padded logits are
masked (never predicted, never part of the loss).

A model called with `output_head=True` returns an `OutputHead` instead of logits: the features
and the (padded) kernel, so that a loss can project onto the vocabulary a chunk of tokens at a
time (`zoo.tasks.losses.head_cross_entropy`) and never hold the full (B, T, V) float32 logits
(6.6 GB for gpt2_small at B=32, T=1024). `head.logits()` gives the ordinary (..., V) logits.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from zoo.nn.dense import dense_dot_general

PAD_MULTIPLE = 128  # columns of the padded output kernel on GPU / TPU


def pad_multiple(requested: int | None) -> int:
    """The `vocab_pad_multiple` config field -> the multiple used: None is 128 on GPU / TPU
    and 1 (no padding) on CPU, where padding only adds work."""
    if requested is None:
        return 1 if jax.default_backend() == "cpu" else PAD_MULTIPLE
    if requested < 1:
        raise ValueError(f"vocab_pad_multiple must be >= 1 (1 = no padding); got {requested}.")
    return requested


def padded_size(vocab_size: int, multiple: int) -> int:
    return -(-vocab_size // multiple) * multiple


class OutputHead(struct.PyTreeNode):
    """features (..., D) and kernel (D, Vp) (Vp >= vocab_size, in the compute dtype), bias
    (Vp,) or None; columns >= vocab_size are padding."""

    features: jax.Array
    kernel: jax.Array
    bias: jax.Array | None
    vocab_size: int = struct.field(pytree_node=False)

    def padded_logits(self, features: jax.Array | None = None) -> jax.Array:
        """(..., Vp) float32 logits of `features` (default: all of them); padding columns hold
        a large negative value, so softmax, argmax and top-k never pick them."""
        x = self.features if features is None else features
        logits = dense_dot_general(x, self.kernel, (((x.ndim - 1,), (0,)), ((), ())),
                                   preferred_element_type=jnp.float32)  # (..., Vp)
        if self.bias is not None:
            logits = logits + self.bias.astype(jnp.float32).reshape((1,) * (x.ndim - 1) + (-1,))
        if self.kernel.shape[-1] == self.vocab_size:
            return logits
        column = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
        return jnp.where(column < self.vocab_size, logits, jnp.finfo(jnp.float32).min / 2)

    def logits(self) -> jax.Array:
        """(..., V) float32 logits (the padding columns cut off)."""
        return self.padded_logits()[..., :self.vocab_size]


def tied_head(features: jax.Array, table: jax.Array, *, bias: jax.Array | None = None,
              multiple: int = 1, dtype=None) -> OutputHead:
    """The head of an output layer tied to an embedding table (V, D): kernel = tableᵀ, its
    columns padded to a multiple of `multiple`; operands in `dtype` (default the features')."""
    dtype = dtype or features.dtype
    vocab_size = table.shape[0]
    extra = padded_size(vocab_size, multiple) - vocab_size
    kernel = jnp.pad(table.astype(dtype), ((0, extra), (0, 0))).T  # (D, Vp)
    if bias is not None:
        bias = jnp.pad(bias, (0, extra))
    return OutputHead(features.astype(dtype), kernel, bias, vocab_size)


def dense_head(features: jax.Array, kernel: jax.Array, bias: jax.Array | None = None, *,
               multiple: int = 1, dtype=None) -> OutputHead:
    """The head of an untied output layer, kernel (D, V), bias (V,) or None."""
    dtype = dtype or features.dtype
    vocab_size = kernel.shape[1]
    extra = padded_size(vocab_size, multiple) - vocab_size
    kernel = jnp.pad(kernel.astype(dtype), ((0, 0), (0, extra)))
    if bias is not None:
        bias = jnp.pad(bias, (0, extra))
    return OutputHead(features.astype(dtype), kernel, bias, vocab_size)
