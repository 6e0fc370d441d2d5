"""Decoder-only transformer (GPT-2 style language model).

Token embedding + learned positions -> `num_layers` pre-LN `DecoderBlock`s without
cross-attention (causal self-attention, GELU MLP: the blocks the other transformer families use)
-> final LayerNorm -> logits through the transposed token embedding (tied weights).

Shapes: B batch, T length (<= max_len), D `emb_dim`, V `vocab_size`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.models.config_checks import check_choices, check_ranges
from zoo.models.inputs import check_tokens
from zoo.models.stack_settings import StackSettings
from zoo.nn.logical_axes import embed_axes, norm_axes
from zoo.nn.precision import dtype_of
from zoo.nn.transformer import (DecoderBlock, Positions, decode_start, run_layers,
                                segment_positions, token_positions)
from zoo.nn.vocab_head import OutputHead, pad_multiple, tied_head


@dataclasses.dataclass(frozen=True)
class GPTConfig(StackSettings):
    """Hyperparameters of `GPT`; names follow the Flax `lm1b` / `wmt` examples."""

    vocab_size: int = 256
    emb_dim: int = 256
    num_heads: int = 4
    num_layers: int = 4
    mlp_dim: int = 1024
    max_len: int = 256
    dropout_rate: float = 0.1
    vocab_pad_multiple: int | None = None  # output columns padded to it; None: 128 off CPU

    def __post_init__(self):
        check_ranges(self)

    def validate(self) -> None:
        """ConfigError unless every string field holds an allowed value (ranges: on creation)."""
        check_choices(self)


PRESETS: dict[str, dict[str, Any]] = {
    # Trains on a 2-core CPU in minutes (byte-level vocabulary).
    "gpt_tiny": dict(vocab_size=256, emb_dim=256, num_heads=4, num_layers=4, mlp_dim=1024,
                     max_len=256, dropout_rate=0.1),
    # GPT-2 sizes (Radford et al. 2019): 124,439,808 and 354,823,168 parameters. Unrolled: on an
    # H200 the scanned stack's step took 25.1 ms against 20.1 ms (B=8, bf16), while both
    # compiled in 11-15 s with the zoo's XLA GPU flags (benchmarks/RESULTS.md).
    "gpt2_small": dict(vocab_size=50257, emb_dim=768, num_heads=12, num_layers=12, mlp_dim=3072,
                       max_len=1024, dropout_rate=0.1),
    "gpt2_medium": dict(vocab_size=50257, emb_dim=1024, num_heads=16, num_layers=24,
                        mlp_dim=4096, max_len=1024, dropout_rate=0.1),
}


class GPT(nn.Module):
    """Decoder-only transformer language model: int tokens (B, T) -> logits (B, T, V).

    Usage:
        model = zoo.create_model("gpt_tiny")
        variables = model.init(jax.random.key(0), tokens)
        logits = model.apply(variables, tokens, train=False)
        logits = model.apply(variables, tokens, train=True, rngs={"dropout": key})
    With `decode=True` (and `mutable=["cache"]`) it runs incrementally on a KV cache; see
    `init_cache` and `zoo.decode`. With `output_head=True` it returns the
    `zoo.nn.vocab_head.OutputHead` (final features and padded output kernel) instead of logits,
    for a loss that never materialises them all (`zoo.tasks.losses`).

    Packed rows (several documents per row): `segment_ids` (B, T) int (0 = padding, 1.. = the
    document) keep attention inside each document; `position_ids` (B, T) (default: restarting
    at 0 in each segment, `segment_positions`) index the position table.
    """

    config: GPTConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, *, train: bool = False, decode: bool = False,
                 output_head: bool = False, segment_ids: jax.Array | None = None,
                 position_ids: jax.Array | None = None) -> jax.Array | OutputHead:
        cfg = self.config
        check_tokens(tokens, cfg.vocab_size, cfg.max_len)
        if decode and (segment_ids is not None or position_ids is not None):
            raise ValueError("segment_ids / position_ids are for packed training rows; decoding "
                             "on a cache takes one sequence per row: drop them.")
        if segment_ids is not None and position_ids is None:
            position_ids = segment_positions(segment_ids)
        dtype = dtype_of(cfg.compute_dtype)
        param_dtype = dtype_of(cfg.param_dtype, "param_dtype")
        batch, length = tokens.shape

        embed = nn.Embed(cfg.vocab_size, cfg.emb_dim,
                         embedding_init=embed_axes(nn.initializers.normal(0.02)),
                         param_dtype=param_dtype, name="wte")
        wpe = Positions(cfg.max_len, cfg.emb_dim, init=nn.initializers.normal(0.01),
                        param_name="wpe", param_dtype=param_dtype)
        nn.share_scope(self, wpe)  # the table stays at the top level, as GPT-2's `wpe`
        positions = token_positions(wpe, length, decode_start(self, length) if decode else 0,
                                    position_ids)  # (1 | B, T, D)
        x = embed(tokens) + positions  # (B, T, D)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not train)

        block_kwargs = dict(
            pre_ln=True,
            dropout_rate=cfg.dropout_rate,
            deterministic=not train,
            ln_epsilon=1e-5,
            dtype=dtype,
            param_dtype=param_dtype,
            num_heads=cfg.num_heads,
            mlp_dim=cfg.mlp_dim,
            activation="gelu_tanh",
            cross_attention=False,
            decode=decode,
            # GPT-2 scales the residual projections' init by 1 / sqrt(2 * num_layers).
            out_kernel_init=nn.initializers.normal(0.02 / math.sqrt(2 * cfg.num_layers)),
            attention_implementation=cfg.attention_implementation,
        )
        packed = () if segment_ids is None else (None, None, None, segment_ids)
        x = run_layers(DecoderBlock, block_kwargs, cfg.num_layers, x, *packed,
                       scan=cfg.scan_layers, remat=cfg.remat, unroll=cfg.scan_unroll)

        x = nn.LayerNorm(epsilon=1e-5, dtype=dtype, param_dtype=param_dtype, **norm_axes(),
                         name="ln_f")(x)
        # Output tied to the token embedding: features (B, T, D) @ embeddingᵀ (D, Vp).
        head = tied_head(x, embed.embedding, multiple=pad_multiple(cfg.vocab_pad_multiple),
                         dtype=dtype)
        return head if output_head else head.logits()  # (B, T, V) float32


def init_cache(model: GPT, batch_size: int, cache_len: int | None = None) -> Any:
    """An empty KV cache for `batch_size` sequences of up to `cache_len` (default max_len) tokens."""
    cache_len = cache_len or model.config.max_len
    tokens = jnp.zeros((batch_size, cache_len), jnp.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, decode=True))
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])


def stack_layers(params: dict) -> dict:
    """Unscanned params (`layers_0`, `layers_1`, ...) -> scanned params (`layers`, leading axis L)."""
    names = sorted((k for k in params if k.startswith("layers_")), key=lambda k: int(k[7:]))
    out = {k: v for k, v in params.items() if not k.startswith("layers_")}
    out["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *(params[k] for k in names))
    return out


def unstack_layers(params: dict) -> dict:
    """Scanned params (`layers` with leading axis L) -> unscanned (`layers_0`, ...)."""
    out = {k: v for k, v in params.items() if k != "layers"}
    num_layers = jax.tree.leaves(params["layers"])[0].shape[0]
    for i in range(num_layers):
        out[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], params["layers"])
    return out


class GPTDecoder:
    """Adapts `GPT` to the decoder-state protocol of `zoo.decode`.

    The decoder state is the KV cache; `start` prefills it with the prompt in one call.
    """

    def __init__(self, model: GPT, cache_len: int | None = None):
        self.model = model
        self.cache_len = cache_len or model.config.max_len

    def start(self, params, prompt: jax.Array) -> tuple[jax.Array, Any]:
        """prompt (B, P) -> (logits of the next token (B, V), cache)."""
        cache = init_cache(self.model, prompt.shape[0], self.cache_len)
        logits, mutated = self.model.apply(
            {"params": params, "cache": cache}, prompt, decode=True, mutable=["cache"]
        )
        return logits[:, -1], mutated["cache"]

    def step(self, params, cache, token: jax.Array) -> tuple[jax.Array, Any]:
        """token (B,) -> (logits (B, V), updated cache)."""
        logits, mutated = self.model.apply(
            {"params": params, "cache": cache}, token[:, None], decode=True, mutable=["cache"]
        )
        return logits[:, 0], mutated["cache"]


def train_flops(cfg: GPTConfig, task: Any, batch: int, seq_len: int) -> float:
    """Matmul FLOPs of one training step (Kaplan et al. 2020; PaLM, appendix B): 6 per weight
    and token (forward 2, backward 4), the tied output layer, attention over the full T x T."""
    L, D, F, V, T = cfg.num_layers, cfg.emb_dim, cfg.mlp_dim, cfg.vocab_size, seq_len
    weights = L * (3 * D * D + D * D + 2 * D * F)  # qkv, out, fc, proj kernels
    return (6 * weights + 6 * D * V + 12 * L * T * D) * batch * T


def _register() -> None:
    from zoo.registry import register_model

    for name, preset in PRESETS.items():
        register_model(name, GPTConfig, GPT, preset, task="causal_lm", decoder_cls=GPTDecoder,
                       train_flops=train_flops)


_register()
