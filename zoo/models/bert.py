"""Encoder-only transformer (BERT, Devlin et al. 2019) with its three heads.

Token + learned position + segment embeddings -> LayerNorm -> dropout -> `num_layers` post-LN
`EncoderBlock`s (exact GELU, LayerNorm epsilon 1e-12) -> sequence output; the pooler is
tanh(Dense(first token)) (or of the masked mean, `pooling="mean"`, for data without [CLS]).
`BertEncoder` is Hugging Face's `BertModel` (same parameter count: bert_base 109,482,240).

Heads (`head`):
* "mlm": Dense -> GELU -> LayerNorm -> logits through the transposed word embedding + bias
  (task "masked_lm");
* "classification": dropout -> Dense(num_classes) on the pooled output (task "classification");
* "tagging": dropout -> Dense(num_classes) on every position (task "tagging").

Shapes: B batch, T length (<= max_len), D `emb_dim`, V `vocab_size`, C `num_classes`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.models.config_checks import check_choices, check_ranges
from zoo.models.inputs import check_tokens
from zoo.models.stack_settings import StackSettings
from zoo.nn.attention import check_implementation, padding_mask
from zoo.nn.dense import dense_dot_general
from zoo.nn.logical_axes import axes, dense_axes, embed_axes, norm_axes
from zoo.nn.precision import dtype_of
from zoo.nn.transformer import (ACTIVATIONS, EncoderBlock, Positions, run_layers,
                                segment_positions, token_positions)
from zoo.nn.vocab_head import pad_multiple, tied_head

HEADS = ("mlm", "classification", "tagging")
POOLINGS = ("cls", "mean")


@dataclasses.dataclass(frozen=True)
class BertConfig(StackSettings):
    vocab_size: int = 30522
    emb_dim: int = 768
    num_heads: int = 12
    num_layers: int = 12
    mlp_dim: int = 3072
    max_len: int = 512
    type_vocab_size: int = 2
    dropout_rate: float = 0.1
    ln_epsilon: float = 1e-12
    activation: str = "gelu"
    head: str = "mlm"  # "mlm" | "classification" | "tagging"
    num_classes: int = 2  # classification / tagging heads
    pooling: str = "cls"  # "cls" (first token, as BERT) | "mean" (over real tokens)
    pad_token_id: int = 0  # padding when no lengths are given
    mask_token_id: int = 103  # [MASK] of the uncased WordPiece vocabulary (masked_lm reads it)
    vocab_pad_multiple: int | None = None  # MLM output columns padded to it; None: 128 off CPU

    def __post_init__(self):
        check_ranges(self)

    def validate(self) -> None:
        """ConfigError unless every string field holds an allowed value (ranges: on creation)."""
        check_choices(self, head=HEADS, pooling=POOLINGS)


_BYTE_TINY = dict(vocab_size=264, emb_dim=128, num_heads=2, num_layers=2, mlp_dim=512,
                  max_len=256, mask_token_id=256, pooling="mean")  # bytes 0-255, [MASK] = 256
_BASE = dict(vocab_size=30522, emb_dim=768, num_heads=12, num_layers=12, mlp_dim=3072, max_len=512,
             scan_layers=True)
_LARGE = dict(vocab_size=30522, emb_dim=1024, num_heads=16, num_layers=24, mlp_dim=4096,
              max_len=512, scan_layers=True)
PRESETS: dict[str, tuple[dict[str, Any], str]] = {
    # name: (preset, task). bert_tiny has BERT-Tiny's shape (L=2, H=128, A=2) over bytes.
    "bert_tiny": (_BYTE_TINY, "masked_lm"),
    "bert_base": (_BASE, "masked_lm"),
    "bert_large": (_LARGE, "masked_lm"),
    "bert_tiny_classifier": (dict(_BYTE_TINY, head="classification"), "classification"),
    "bert_base_classifier": (dict(_BASE, head="classification"), "classification"),
    "bert_tiny_tagger": (dict(_BYTE_TINY, head="tagging"), "tagging"),
    "bert_base_tagger": (dict(_BASE, head="tagging"), "tagging"),
}


class BertEncoder(nn.Module):
    """Embeddings + encoder + pooler: (B, T) ids -> (sequence (B, T, D), pooled (B, D))."""

    config: BertConfig

    @nn.compact
    def __call__(self, inputs: jax.Array, valid: jax.Array, segments: jax.Array | None = None,
                 *, lengths: jax.Array | None = None, segment_ids: jax.Array | None = None,
                 position_ids: jax.Array | None = None,
                 train: bool = False) -> tuple[jax.Array, jax.Array]:
        """inputs (B, T), valid (B, T) bool, segments (B, T) or None (all 0); `lengths` (B,)
        when `valid` is a prefix per row (right padding): attention then takes key lengths,
        which cuDNN's and the TPU's flash kernels accept, instead of a boolean mask.
        Packed rows: `segment_ids` (B, T) (0 = padding; attention stays within a segment,
        lengths and valid are then not used for it) and `position_ids` (B, T)."""
        cfg = self.config
        init = nn.initializers.normal(0.02)
        dtype = dtype_of(cfg.compute_dtype)
        param_dtype = dtype_of(cfg.param_dtype, "param_dtype")
        if segments is None:
            segments = jnp.zeros_like(inputs)
        length = inputs.shape[1]
        x = nn.Embed(cfg.vocab_size, cfg.emb_dim, embedding_init=embed_axes(init),
                     param_dtype=param_dtype, name="word_embeddings")(inputs)
        positions = Positions(cfg.max_len, cfg.emb_dim, init=init,
                              param_name="position_embeddings", param_dtype=param_dtype)
        nn.share_scope(self, positions)  # the table stays where BERT checkpoints keep it
        x = x + token_positions(positions, length, ids=position_ids)  # (B, T, D)
        x = x + nn.Embed(cfg.type_vocab_size, cfg.emb_dim,
                         embedding_init=embed_axes(init, vocab=None),
                         param_dtype=param_dtype, name="segment_embeddings")(segments)
        x = nn.LayerNorm(epsilon=cfg.ln_epsilon, dtype=dtype, param_dtype=param_dtype,
                         **norm_axes(), name="ln_embeddings")(x)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not train)
        block_kwargs = dict(pre_ln=False, dropout_rate=cfg.dropout_rate, deterministic=not train,
                            ln_epsilon=cfg.ln_epsilon, dtype=dtype, param_dtype=param_dtype,
                            num_heads=cfg.num_heads,
                            mlp_dim=cfg.mlp_dim, activation=cfg.activation, kernel_init=init,
                            out_kernel_init=init,
                            attention_implementation=cfg.attention_implementation)
        mask = None if lengths is not None else padding_mask(valid)
        packed = ()
        if segment_ids is not None:
            mask, lengths, packed = None, None, (segment_ids,)
        x = run_layers(EncoderBlock, block_kwargs, cfg.num_layers, x, mask, lengths, *packed,
                       scan=cfg.scan_layers, remat=cfg.remat,
                       unroll=cfg.scan_unroll)  # (B, T, D)
        if cfg.pooling == "cls":
            first = x[:, 0]
        elif cfg.pooling == "mean":
            weights = valid[..., None].astype(x.dtype)
            first = jnp.sum(x * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
        else:
            raise ValueError(f"pooling must be 'cls' or 'mean'; got {cfg.pooling!r}.")
        pooled = jnp.tanh(nn.Dense(cfg.emb_dim, **dense_axes("embed", "mlp", kernel_init=init),
                                   dtype=dtype, param_dtype=param_dtype,
                                   name="pooler")(first))  # (B, D)
        return x, pooled


class Bert(nn.Module):
    """BERT with the head named by `config.head`.

    Usage:
        model = zoo.create_model("bert_tiny")
        variables = model.init(key, tokens)
        logits = model.apply(variables, tokens, lengths, train=False)  # lengths (B,) optional
    Without `lengths`, positions holding `pad_token_id` are padding. `segments` (B, T) are the
    token type ids (sentence A / B); `return_hidden=True` returns (sequence, pooled) instead.
    Head "mlm" with `positions` (B, P) int runs the head at those positions only -> logits
    (B, P, V), as the original BERT's pretraining does (zoo.tasks.masked_lm);
    `output_head=True` returns that head's `zoo.nn.vocab_head.OutputHead` instead of logits.
    Packed rows (several documents per row, masked-LM pretraining): `segment_ids` (B, T) int
    (0 = padding, 1.. = the document; `lengths` is then ignored) keep attention inside each
    document, and `position_ids` (B, T) (default: restarting at 0 in each segment) index the
    position table. (`segments` are BERT's token types, `positions` the MLM slots.)
    """

    config: BertConfig

    @nn.compact
    def __call__(self, inputs: jax.Array, lengths: jax.Array | None = None, *,
                 segments: jax.Array | None = None, positions: jax.Array | None = None,
                 train: bool = False, return_hidden: bool = False, output_head: bool = False,
                 segment_ids: jax.Array | None = None, position_ids: jax.Array | None = None):
        cfg = self.config
        check_tokens(inputs, cfg.vocab_size, cfg.max_len)
        check_implementation(cfg.attention_implementation)
        if cfg.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}; got {cfg.head!r}.")
        if positions is not None and cfg.head != "mlm":
            raise ValueError(f"positions select the tokens the MLM head predicts; head "
                             f"{cfg.head!r} has none. Drop positions or use head='mlm'.")
        if segment_ids is not None:
            valid, lengths = segment_ids > 0, None
            if position_ids is None:
                position_ids = segment_positions(segment_ids)
        elif lengths is None:
            valid = inputs != cfg.pad_token_id
        else:
            lengths = jnp.clip(lengths, 0, inputs.shape[1]).astype(jnp.int32)
            valid = jnp.arange(inputs.shape[1])[None, :] < lengths[:, None]  # (B, T)
        encoder = BertEncoder(cfg, name="bert")
        sequence, pooled = encoder(inputs, valid, segments, lengths=lengths,
                                   segment_ids=segment_ids, position_ids=position_ids,
                                   train=train)
        if return_hidden:
            return sequence, pooled
        init = nn.initializers.normal(0.02)
        if cfg.head == "mlm":
            if positions is not None:
                sequence = jnp.take_along_axis(sequence, positions[..., None], axis=1)  # B,P,D
            dtype = dtype_of(cfg.compute_dtype)
            param_dtype = dtype_of(cfg.param_dtype, "param_dtype")
            h = nn.Dense(cfg.emb_dim, **dense_axes("embed", "mlp", kernel_init=init),
                         dtype=dtype, param_dtype=param_dtype,
                         dot_general=dense_dot_general, name="mlm_dense")(sequence)
            h = ACTIVATIONS[cfg.activation](h)
            h = nn.LayerNorm(epsilon=cfg.ln_epsilon, dtype=dtype, param_dtype=param_dtype,
                             **norm_axes(), name="mlm_ln")(h)
            # (V, D), tied; unboxed, as it is a box while logical axes are recorded
            table = nn.unbox(encoder.variables["params"]["word_embeddings"]["embedding"])
            bias = self.param("mlm_bias", axes(nn.initializers.zeros, "vocab"),
                              (cfg.vocab_size,), param_dtype)
            head = tied_head(h, table, bias=bias, dtype=dtype,
                             multiple=pad_multiple(cfg.vocab_pad_multiple))
            return head if output_head else head.logits()  # (B, T|P, V) float32
        drop = nn.Dropout(cfg.dropout_rate)
        features = pooled if cfg.head == "classification" else sequence
        features = drop(features, deterministic=not train)
        return nn.Dense(cfg.num_classes, **dense_axes("embed", "classes", kernel_init=init),
                        param_dtype=dtype_of(cfg.param_dtype, "param_dtype"), name="classifier")(
            features.astype(jnp.float32))  # (B, C) or (B, T, C) float32


def train_flops(cfg: BertConfig, task: Any, batch: int, seq_len: int) -> float:
    """Matmul FLOPs of one training step (6 per weight and token, attention over the full
    T x T): the encoder at every position, then the head: MLM (dense, tied decoder) at the
    max(1, round(T * task.mask_rate)) positions per row the task chooses, the pooler and
    classifier once per row, or the tagger at every position."""
    L, D, F, V, C, T = (cfg.num_layers, cfg.emb_dim, cfg.mlp_dim, cfg.vocab_size,
                        cfg.num_classes, seq_len)
    encoder = T * (6 * L * (4 * D * D + 2 * D * F) + 12 * L * T * D)
    head = {"mlm": lambda: max(1, round(T * task.mask_rate)) * (6 * D * D + 6 * D * V),
            "classification": lambda: 6 * D * D + 6 * D * C,
            "tagging": lambda: T * 6 * D * C}[cfg.head]()
    return batch * (encoder + head)


def _register() -> None:
    from zoo.registry import register_model

    for name, (preset, task) in PRESETS.items():
        register_model(name, BertConfig, Bert, preset, task=task, train_flops=train_flops)


_register()
