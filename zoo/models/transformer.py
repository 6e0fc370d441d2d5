"""Encoder-decoder transformer (Vaswani et al. 2017, "Attention Is All You Need").

Source tokens -> embedding * sqrt(D) + sinusoidal positions -> `num_encoder_layers` post-LN
`EncoderBlock`s (padding mask). Target tokens (shifted right, BOS first) -> the same embedding
-> `num_decoder_layers` post-LN `DecoderBlock`s (causal self-attention, cross-attention over
the encoder outputs) -> logits through the shared embedding (source, target and output
embeddings are one matrix when `share_embeddings`, as in the paper). `pre_ln=True` gives the
pre-LN variant (final LayerNorms added). Trained by the "seq2seq" task with label smoothing;
decoded by `zoo.decode.search` through `TransformerDecoder` (cached self-attention keys/values
and cached projected encoder keys/values).

Shapes: B batch, S source length, T target length (both <= max_len), D `emb_dim`,
V `vocab_size`. Token 0 is padding (`zoo.special_tokens.PAD_ID`).
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
from zoo.nn.logical_axes import dense_axes, embed_axes, norm_axes
from zoo.nn.attention import check_implementation, padding_mask
from zoo.nn.precision import dtype_of
from zoo.nn.transformer import (DecoderBlock, EncoderBlock, Positions, decode_start, run_layers,
                                segment_positions, token_positions)
from zoo.special_tokens import BOS_ID, PAD_ID


@dataclasses.dataclass(frozen=True)
class TransformerConfig(StackSettings):
    vocab_size: int = 64  # one vocabulary for source and target
    emb_dim: int = 512
    num_heads: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    mlp_dim: int = 2048
    max_len: int = 256  # longest source or target sequence
    dropout_rate: float = 0.1
    pre_ln: bool = False  # False: the paper's post-LN, LayerNorm(x + Sublayer(x))
    positions: str = "sinusoidal"  # or "learned"
    activation: str = "relu"
    share_embeddings: bool = True  # source, target and output embeddings are one matrix

    def __post_init__(self):
        check_ranges(self)

    def validate(self) -> None:
        """ConfigError unless every string field holds an allowed value (ranges: on creation)."""
        check_choices(self)


PRESETS: dict[str, dict[str, Any]] = {
    # Character-level translation on a 2-core CPU.
    "transformer_tiny": dict(vocab_size=64, emb_dim=128, num_heads=4, num_encoder_layers=2,
                             num_decoder_layers=2, mlp_dim=512, max_len=128, dropout_rate=0.1),
    # The paper's base and big models (Table 3); vocab_size is the shared BPE vocabulary.
    "transformer_base": dict(vocab_size=37000, emb_dim=512, num_heads=8, num_encoder_layers=6,
                             num_decoder_layers=6, mlp_dim=2048, max_len=256, dropout_rate=0.1),
    "transformer_big": dict(vocab_size=37000, emb_dim=1024, num_heads=16, num_encoder_layers=6,
                            num_decoder_layers=6, mlp_dim=4096, max_len=256, dropout_rate=0.3),
}


def _block_kwargs(cfg: TransformerConfig, train: bool) -> dict[str, Any]:
    return dict(pre_ln=cfg.pre_ln, dropout_rate=cfg.dropout_rate, deterministic=not train,
                ln_epsilon=1e-5, dtype=dtype_of(cfg.compute_dtype),
                param_dtype=dtype_of(cfg.param_dtype, "param_dtype"), num_heads=cfg.num_heads,
                mlp_dim=cfg.mlp_dim, activation=cfg.activation,
                kernel_init=nn.initializers.xavier_uniform(),
                out_kernel_init=nn.initializers.xavier_uniform(),
                attention_implementation=cfg.attention_implementation)


def _positions(cfg: TransformerConfig) -> Positions:
    return Positions(cfg.max_len, cfg.emb_dim, cfg.positions,
                     param_dtype=dtype_of(cfg.param_dtype, "param_dtype"), name="positions")


class Encoder(nn.Module):
    config: TransformerConfig
    embed: nn.Embed

    @nn.compact
    def __call__(self, inputs: jax.Array, *, train: bool = False,
                 segment_ids: jax.Array | None = None,
                 position_ids: jax.Array | None = None) -> jax.Array:
        """inputs (B, S), segment_ids / position_ids (B, S) of packed rows or None
        -> encoded (B, S, D)."""
        cfg = self.config
        x = self.embed(inputs) * math.sqrt(cfg.emb_dim)
        x = x + token_positions(_positions(cfg), inputs.shape[1], ids=position_ids)  # (B, S, D)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not train)
        masks = ((padding_mask(inputs != PAD_ID),) if segment_ids is None
                 else (None, None, segment_ids))
        x = run_layers(EncoderBlock, _block_kwargs(cfg, train), cfg.num_encoder_layers, x,
                       *masks, scan=cfg.scan_layers, remat=cfg.remat, unroll=cfg.scan_unroll)
        if cfg.pre_ln:
            x = nn.LayerNorm(epsilon=1e-5, dtype=dtype_of(cfg.compute_dtype),
                             param_dtype=dtype_of(cfg.param_dtype, "param_dtype"), **norm_axes(),
                             name="ln_f")(x)
        return x


class Decoder(nn.Module):
    config: TransformerConfig
    embed: nn.Embed

    @nn.compact
    def __call__(self, encoded: jax.Array | None, source_valid: jax.Array,
                 decoder_inputs: jax.Array, *, train: bool = False,
                 decode: bool = False, segment_ids: jax.Array | None = None,
                 position_ids: jax.Array | None = None,
                 source_segment_ids: jax.Array | None = None) -> jax.Array:
        """encoded (B, S, D) (None in a decoding step), source_valid (B, S) bool,
        decoder_inputs (B, T) -> logits (B, T, V). Packed rows: segment_ids / position_ids
        (B, T) of the targets and source_segment_ids (B, S): target segment k attends to source
        segment k only."""
        cfg = self.config
        length = decoder_inputs.shape[1]
        start = decode_start(self, length) if decode else 0
        y = self.embed(decoder_inputs) * math.sqrt(cfg.emb_dim)
        y = y + token_positions(_positions(cfg), length, start, position_ids)  # (B, T, D)
        y = nn.Dropout(cfg.dropout_rate)(y, deterministic=not train)
        kwargs = dict(_block_kwargs(cfg, train), cross_attention=True, decode=decode)
        masks = ((padding_mask(source_valid),) if segment_ids is None
                 else (None, None, segment_ids, source_segment_ids))
        y = run_layers(DecoderBlock, kwargs, cfg.num_decoder_layers, y, encoded, *masks,
                       scan=cfg.scan_layers, remat=cfg.remat, unroll=cfg.scan_unroll)
        if cfg.pre_ln:
            y = nn.LayerNorm(epsilon=1e-5, dtype=dtype_of(cfg.compute_dtype),
                             param_dtype=dtype_of(cfg.param_dtype, "param_dtype"), **norm_axes(),
                             name="ln_f")(y)
        y = y.astype(jnp.float32)
        if cfg.share_embeddings:
            return self.embed.attend(y)
        return nn.Dense(cfg.vocab_size,
                        **dense_axes("embed", "vocab",
                                     kernel_init=nn.initializers.xavier_uniform()),
                        param_dtype=dtype_of(cfg.param_dtype, "param_dtype"), name="logits")(y)


class Transformer(nn.Module):
    """Encoder-decoder transformer: (inputs (B, S), decoder_inputs (B, T)) -> logits (B, T, V).

    Usage:
        model = zoo.create_model("transformer_tiny")
        variables = model.init(key, inputs, decoder_inputs)
        logits = model.apply(variables, inputs, decoder_inputs, train=False)
        encoded = model.apply(variables, inputs, method="encode")
        logits = model.apply(variables, encoded, inputs != 0, decoder_inputs, method="decode")
    Packed rows (several pairs per row): `segment_ids` / `position_ids` (B, S) of the sources
    and `decoder_segment_ids` / `decoder_position_ids` (B, T) of the targets (0 = padding,
    pair k of a row has segment k in both; positions default to restarting per segment).
    """

    config: TransformerConfig

    def setup(self):
        cfg = self.config
        check_implementation(cfg.attention_implementation)
        embed_init = embed_axes(nn.initializers.normal(cfg.emb_dim**-0.5))
        param_dtype = dtype_of(cfg.param_dtype, "param_dtype")
        self.embed = nn.Embed(cfg.vocab_size, cfg.emb_dim, embedding_init=embed_init,
                              param_dtype=param_dtype, name="embedding")
        target_embed = self.embed
        if not cfg.share_embeddings:
            target_embed = nn.Embed(cfg.vocab_size, cfg.emb_dim, embedding_init=embed_init,
                                    param_dtype=param_dtype, name="target_embedding")
        self.encoder = Encoder(cfg, self.embed, name="encoder")
        self.decoder = Decoder(cfg, target_embed, name="decoder")

    def encode(self, inputs: jax.Array, *, train: bool = False,
               segment_ids: jax.Array | None = None,
               position_ids: jax.Array | None = None) -> jax.Array:
        """inputs (B, S) -> encoded (B, S, D)."""
        check_tokens(inputs, self.config.vocab_size, self.config.max_len)
        if segment_ids is not None and position_ids is None:
            position_ids = segment_positions(segment_ids)
        return self.encoder(inputs, train=train, segment_ids=segment_ids,
                            position_ids=position_ids)

    def decode(self, encoded: jax.Array | None, source_valid: jax.Array,
               decoder_inputs: jax.Array, *, train: bool = False,
               decode: bool = False, segment_ids: jax.Array | None = None,
               position_ids: jax.Array | None = None,
               source_segment_ids: jax.Array | None = None) -> jax.Array:
        """Teacher-forced (or, with decode=True, cached incremental) decoding -> (B, T, V)."""
        check_tokens(decoder_inputs, self.config.vocab_size, self.config.max_len)
        if (segment_ids is None) != (source_segment_ids is None):
            raise ValueError("packed decoding needs both segment_ids (targets) and "
                             "source_segment_ids, or neither.")
        if segment_ids is not None and decode:
            raise ValueError("segment_ids are for packed training rows; cached decoding takes "
                             "one pair per row: drop them.")
        if segment_ids is not None and position_ids is None:
            position_ids = segment_positions(segment_ids)
        return self.decoder(encoded, source_valid, decoder_inputs, train=train, decode=decode,
                            segment_ids=segment_ids, position_ids=position_ids,
                            source_segment_ids=source_segment_ids)

    def __call__(self, inputs: jax.Array, decoder_inputs: jax.Array, *,
                 train: bool = False, segment_ids: jax.Array | None = None,
                 position_ids: jax.Array | None = None,
                 decoder_segment_ids: jax.Array | None = None,
                 decoder_position_ids: jax.Array | None = None) -> jax.Array:
        if (segment_ids is None) != (decoder_segment_ids is None):
            raise ValueError("packed rows need both segment_ids (sources) and "
                             "decoder_segment_ids (targets), or neither.")
        encoded = self.encode(inputs, train=train, segment_ids=segment_ids,
                              position_ids=position_ids)
        return self.decode(encoded, inputs != PAD_ID, decoder_inputs, train=train,
                           segment_ids=decoder_segment_ids, position_ids=decoder_position_ids,
                           source_segment_ids=segment_ids)


def init_cache(model: Transformer, inputs: jax.Array, cache_len: int) -> Any:
    """An empty decoding cache for source `inputs` (B, S) and up to `cache_len` target tokens."""
    batch = inputs.shape[0]

    def init():
        encoded = jnp.zeros((*inputs.shape, model.config.emb_dim), jnp.float32)
        targets = jnp.zeros((batch, cache_len), jnp.int32)
        return model.init(jax.random.key(0), encoded, inputs != PAD_ID, targets, decode=True,
                          method="decode")

    shapes = jax.eval_shape(init)["cache"]
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


class TransformerDecoder:
    """Adapts `Transformer` to the decoder protocol of `zoo.decode` (see `zoo.decode.search`).

    State: {"cache": self-attention KV caches, projected encoder keys/values and the position,
    "source_valid": (B, S) bool}. `start` encodes the source once and feeds BOS.
    """

    def __init__(self, model: Transformer, cache_len: int | None = None):
        self.model = model
        self.cache_len = cache_len or model.config.max_len

    def start(self, params, inputs: jax.Array) -> tuple[jax.Array, Any]:
        """inputs (B, S) -> (logits of the first target token (B, V), state)."""
        encoded = self.model.apply({"params": params}, inputs, method="encode")
        source_valid = inputs != PAD_ID
        cache = init_cache(self.model, inputs, self.cache_len)
        bos = jnp.full((inputs.shape[0], 1), BOS_ID, jnp.int32)
        logits, mutated = self.model.apply({"params": params, "cache": cache}, encoded,
                                           source_valid, bos, decode=True, method="decode",
                                           mutable=["cache"])
        return logits[:, 0], {"cache": mutated["cache"], "source_valid": source_valid}

    def step(self, params, state: Any, token: jax.Array) -> tuple[jax.Array, Any]:
        """token (B,) -> (logits of the next token (B, V), state)."""
        logits, mutated = self.model.apply(
            {"params": params, "cache": state["cache"]}, None, state["source_valid"],
            token[:, None], decode=True, method="decode", mutable=["cache"])
        return logits[:, 0], {"cache": mutated["cache"], "source_valid": state["source_valid"]}

    def gather_state(self, state: Any, index: jax.Array) -> Any:
        """Selects batch rows `index` (B',) of every cache entry; counters stay as they are.

        Batch is axis 0, or axis 1 under `scan_layers` (a leading layer axis L)."""
        batch_axis = 1 if self.model.config.scan_layers else 0

        def take(x):
            return x if x.ndim <= batch_axis else jnp.take(x, index, axis=batch_axis)

        return {"cache": jax.tree.map(take, state["cache"]),
                "source_valid": jnp.take(state["source_valid"], index, axis=0)}


def train_flops(cfg: TransformerConfig, task: Any, batch: int, seq_len: int) -> float:
    """Matmul FLOPs of one training step (6 per weight and token, attention over the full
    length), sources and targets both `seq_len` long, logits through the embedding."""
    Le, Ld, D, F = cfg.num_encoder_layers, cfg.num_decoder_layers, cfg.emb_dim, cfg.mlp_dim
    V, S = cfg.vocab_size, seq_len
    # encoder qkv, out, fc, proj; its self-attention; the decoders' cross-attention k, v
    per_source = 6 * Le * (4 * D * D + 2 * D * F) + 12 * Le * S * D + 6 * Ld * 2 * D * D
    # self qkv, out; cross q, out; FFN; self- and cross-attention; logits
    per_target = (6 * Ld * (3 * D * D + D * D + 2 * D * D + 2 * D * F)
                  + 12 * Ld * S * D + 12 * Ld * S * D + 6 * D * V)
    return batch * S * (per_source + per_target)


def _register() -> None:
    from zoo.registry import register_model

    for name, preset in PRESETS.items():
        register_model(name, TransformerConfig, Transformer, preset, task="seq2seq",
                       decoder_cls=TransformerDecoder, task_settings={"label_smoothing": 0.1},
                       train_flops=train_flops)


_register()
