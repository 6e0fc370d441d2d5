"""Recurrent sequence classifiers (`lstm_classifier`, `gru_classifier`) and the `bilstm_tagger`.

Both read int tokens (B, T) with optional `lengths` (B,) (padding never changes the result):
the classifier returns one logit vector per sequence (B, C), the tagger one per token (B, T, C).
Mixed precision follows `zoo.nn.precision` (`compute_dtype`, `param_dtype`; pooling and the
logits are float32), and `rnn_implementation="cudnn"` runs an LSTM through cuDNN
(`zoo.nn.cudnn_lstm`), as in `zoo.models.rnn_lm`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.errors import InputError
from zoo.models.config_checks import check_choices, check_ranges
from zoo.models.inputs import check_tokens
from zoo.nn.cells import accumulating_dot_general, accumulation_dtype, cast
from zoo.nn.logical_axes import dense_axes, embed_axes
from zoo.nn.precision import dtype_of
from zoo.nn.recurrent import RecurrentStack, stack_over_tokens


@dataclasses.dataclass(frozen=True)
class RecurrentEncoderConfig:
    """The fields the classifier and the tagger share (defaults: the classifier's)."""

    max_len: ClassVar[None] = None  # any length: no position table
    vocab_size: int = 256
    num_classes: int = 2
    emb_dim: int = 128
    hidden_size: int = 256
    num_layers: int = 1
    dropout_rate: float = 0.1
    cell: str = "lstm"  # "lstm" | "gru" | "rnn_tanh" | "rnn_relu"
    bidirectional: bool = True
    unroll: int = 1
    compute_dtype: str = "float32"  # mixed precision (zoo.nn.precision)
    param_dtype: str = "float32"
    rnn_implementation: str = "scan"  # "scan" | "cudnn" (LSTM, float32, NVIDIA GPU)

    def __post_init__(self):
        check_ranges(self)

    def validate(self) -> None:
        """ConfigError unless every string field holds an allowed value (ranges: on creation)."""
        check_choices(self)


@dataclasses.dataclass(frozen=True)
class RNNClassifierConfig(RecurrentEncoderConfig):
    pooling: str = "last"  # "last" (final states) | "mean" | "max" over valid positions

    def validate(self) -> None:
        check_choices(self, pooling=POOLINGS)


POOLINGS = ("last", "mean", "max")


def _encode(cfg: Any, tokens: jax.Array, lengths: jax.Array | None, train: bool):
    """Embedding + recurrent stack -> (outputs (B, T, H * dirs) in the compute dtype, carry)."""
    check_tokens(tokens, cfg.vocab_size)
    dtype = dtype_of(cfg.compute_dtype)
    param_dtype = dtype_of(cfg.param_dtype, "param_dtype")
    embed = nn.Embed(cfg.vocab_size, cfg.emb_dim, dtype=dtype, param_dtype=param_dtype,
                     embedding_init=embed_axes(), name="embed")
    stack = RecurrentStack(cfg.cell, cfg.hidden_size, cfg.num_layers, cfg.bidirectional,
                           cfg.dropout_rate, cfg.unroll, dtype=dtype, param_dtype=param_dtype,
                           implementation=cfg.rnn_implementation, name="rnn")
    return stack_over_tokens(stack, embed, tokens, cfg.dropout_rate, train, lengths=lengths)


def _logits(cfg: Any, features: jax.Array, name: str) -> jax.Array:
    """Dense onto the classes: compute-dtype operands, float32 logits (..., C)."""
    return nn.Dense(cfg.num_classes, **dense_axes("hidden", "classes"),
                    dtype=dtype_of(cfg.compute_dtype),
                    param_dtype=dtype_of(cfg.param_dtype, "param_dtype"),
                    dot_general=accumulating_dot_general, name=name)(features)


def pool(outputs: jax.Array, final_h: jax.Array, lengths: jax.Array | None, how: str,
         num_directions: int) -> jax.Array:
    """Sequence features (B, F) from outputs (B, T, F) and the stack's h (L*dirs, B, H).

    Sums and maxima run in (at least) float32 whatever the outputs' dtype.
    """
    outputs = cast(outputs, accumulation_dtype(outputs.dtype))
    if how == "last":  # last layer's final h per direction: forward at the true end, backward at 0
        return jnp.concatenate(list(final_h[-num_directions:]), axis=-1)
    if lengths is None:
        lengths = jnp.full(outputs.shape[:1], outputs.shape[1], jnp.int32)
    if lengths.ndim != 1:
        raise InputError(f"pooling={how!r} needs lengths (B,) (valid tokens per row); got shape "
                         f"{lengths.shape}. A (B, T) mask works with pooling='last' only.")
    valid = (jnp.arange(outputs.shape[1])[None, :] < lengths[:, None])[..., None]  # (B, T, 1)
    if how == "mean":
        total = jnp.sum(jnp.where(valid, outputs, 0.0), axis=1)
        return total / jnp.maximum(lengths, 1)[:, None].astype(outputs.dtype)
    # A row without valid positions (length 0, or T = 0) pools to zeros, as with "mean".
    pooled = jnp.max(jnp.where(valid, outputs, -jnp.inf), axis=1, initial=-jnp.inf)
    return jnp.where(jnp.any(valid, axis=1), pooled, 0.0)


class RNNClassifier(nn.Module):
    """tokens (B, T), lengths (B,) or None -> class logits (B, num_classes)."""

    config: RNNClassifierConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, lengths: jax.Array | None = None, *,
                 train: bool = False) -> jax.Array:
        cfg = self.config
        if cfg.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {cfg.pooling!r}; choose one of {POOLINGS}.")
        outputs, carry = _encode(cfg, tokens, lengths, train)
        features = pool(outputs, carry[0], lengths, cfg.pooling, 2 if cfg.bidirectional else 1)
        features = nn.Dropout(cfg.dropout_rate)(features, deterministic=not train)
        return _logits(cfg, features, "classifier")  # (B, C) float32


@dataclasses.dataclass(frozen=True)
class RNNTaggerConfig(RecurrentEncoderConfig):
    num_classes: int = 8  # number of tags
    emb_dim: int = 64
    hidden_size: int = 128
    num_layers: int = 2


class RNNTagger(nn.Module):
    """tokens (B, T), lengths (B,) or None -> tag logits (B, T, num_classes)."""

    config: RNNTaggerConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, lengths: jax.Array | None = None, *,
                 train: bool = False) -> jax.Array:
        outputs, _ = _encode(self.config, tokens, lengths, train)
        outputs = nn.Dropout(self.config.dropout_rate)(outputs, deterministic=not train)
        return _logits(self.config, outputs, "tagger")  # (B, T, C) float32


def _register() -> None:
    from zoo.registry import register_model

    register_model("lstm_classifier", RNNClassifierConfig, RNNClassifier, {"cell": "lstm"},
                   task="classification")
    register_model("gru_classifier", RNNClassifierConfig, RNNClassifier, {"cell": "gru"},
                   task="classification")
    register_model("bilstm_tagger", RNNTaggerConfig, RNNTagger,
                   {"cell": "lstm", "bidirectional": True}, task="tagging")


_register()
