"""Recurrent language models: `rnn_lm` (Elman), `lstm_lm`, `gru_lm`.

Token embedding -> dropout -> `num_layers` scanned recurrent layers (inter-layer dropout) ->
dropout -> output projection to the vocabulary (optionally tied to the embedding).

Mixed precision follows `zoo.nn.precision` (`compute_dtype`, `param_dtype`): the embedding,
the recurrent matmuls and the output projection take compute-dtype operands, while the
recurrent carry and the logits are float32. `rnn_implementation="cudnn"` runs an LSTM through
cuDNN on an NVIDIA GPU (float32 only; `zoo.nn.cudnn_lstm`) with the same parameters.

Shapes: B batch, T length (any: a recurrent model has no maximum), E `emb_dim`,
H `hidden_size`, V `vocab_size`. Generation carries the recurrent state (`RNNLMDecoder`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.errors import ConfigError
from zoo.models.config_checks import check_choices, check_ranges
from zoo.models.inputs import check_tokens
from zoo.nn.cells import Carry
from zoo.nn.logical_axes import axes, embed_axes
from zoo.nn.precision import dtype_of
from zoo.nn.recurrent import RecurrentStack, stack_over_tokens
from zoo.nn.vocab_head import OutputHead, dense_head, tied_head


@dataclasses.dataclass(frozen=True)
class RNNLMConfig:
    max_len: ClassVar[None] = None  # any length: no position table
    vocab_size: int = 256
    emb_dim: int = 256
    hidden_size: int = 512
    num_layers: int = 2
    dropout_rate: float = 0.1
    cell: str = "lstm"  # "lstm" | "gru" | "rnn_tanh" | "rnn_relu"
    unroll: int = 1  # time steps per scan iteration (lax.scan unroll)
    tie_embeddings: bool = False  # output projection = embedding^T (needs emb_dim == hidden_size)
    compute_dtype: str = "float32"  # mixed precision (zoo.nn.precision): "bfloat16" on GPU/TPU
    param_dtype: str = "float32"
    rnn_implementation: str = "scan"  # "scan" | "cudnn" (LSTM, float32, NVIDIA GPU)

    def __post_init__(self):
        check_ranges(self)
        if self.tie_embeddings and self.emb_dim != self.hidden_size:
            raise ConfigError(f"tie_embeddings needs emb_dim == hidden_size; got emb_dim="
                              f"{self.emb_dim} and hidden_size={self.hidden_size}. Set them equal "
                              "or tie_embeddings=False.")

    def validate(self) -> None:
        """ConfigError unless every string field holds an allowed value (ranges: on creation)."""
        check_choices(self)


PRESETS: dict[str, dict[str, Any]] = {
    "rnn_lm": {"cell": "rnn_tanh"},
    "lstm_lm": {"cell": "lstm"},
    "gru_lm": {"cell": "gru"},
}


class OutputProjection(nn.Module):
    """The parameters of `nn.Dense(features)` (kernel (D, V), bias (V,), Dense's initializers)
    as an output head: x (..., D) -> `zoo.nn.vocab_head.OutputHead` (float32 logits)."""

    features: int
    dtype: Any = jnp.float32  # the matmul operands' dtype
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> OutputHead:
        kernel = self.param("kernel", axes(nn.initializers.lecun_normal(), "hidden", "vocab"),
                            (x.shape[-1], self.features), self.param_dtype)  # (D, V)
        bias = self.param("bias", axes(nn.initializers.zeros_init(), "vocab"), (self.features,),
                          self.param_dtype)  # (V,)
        return dense_head(x, kernel, bias, dtype=self.dtype)


class RNNLM(nn.Module):
    """Recurrent language model: int tokens (B, T) -> logits (B, T, V).

        model = zoo.create_model("lstm_lm", hidden_size=512)
        variables = model.init(jax.random.key(0), tokens)
        logits = model.apply(variables, tokens)
        logits, carry = model.apply(variables, tokens, initial_carry=carry, return_carry=True)

    `carry` parts are (num_layers, B, H) ((h, c) for the LSTM), as `torch.nn.LSTM` returns;
    passing the final carry of one chunk as the initial carry of the next is truncated BPTT.
    With `output_head=True` it returns the `zoo.nn.vocab_head.OutputHead` (final features and
    output kernel) instead of the logits, for a loss that projects a chunk at a time
    (`zoo.tasks.losses`). Logits are float32 whatever the compute dtype.
    """

    config: RNNLMConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, *, train: bool = False,
                 initial_carry: Carry | None = None, return_carry: bool = False,
                 output_head: bool = False) -> Any:
        cfg = self.config
        check_tokens(tokens, cfg.vocab_size)
        if cfg.tie_embeddings and cfg.emb_dim != cfg.hidden_size:
            raise ValueError(f"tie_embeddings needs emb_dim == hidden_size; got {cfg.emb_dim} "
                             f"and {cfg.hidden_size}. Set them equal or tie_embeddings=False.")
        dtype = dtype_of(cfg.compute_dtype)
        param_dtype = dtype_of(cfg.param_dtype, "param_dtype")
        embed = nn.Embed(cfg.vocab_size, cfg.emb_dim, dtype=dtype, param_dtype=param_dtype,
                         embedding_init=embed_axes(), name="embed")
        stack = RecurrentStack(cfg.cell, cfg.hidden_size, cfg.num_layers,
                               dropout_rate=cfg.dropout_rate, unroll=cfg.unroll, dtype=dtype,
                               param_dtype=param_dtype, implementation=cfg.rnn_implementation,
                               name="rnn")
        x, carry = stack_over_tokens(stack, embed, tokens, cfg.dropout_rate, train,
                                     initial_carry=initial_carry)  # (B, T, H) compute dtype
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not train)  # (B, T, H)
        if cfg.tie_embeddings:  # features (B, T, H) @ embeddingᵀ (H, V)
            head = tied_head(x, embed.embedding, dtype=dtype)
        else:
            head = OutputProjection(cfg.vocab_size, dtype, param_dtype, name="logits")(x)
        out = head if output_head else head.logits()  # logits (B, T, V) float32
        return (out, carry) if return_carry else out


class RNNLMDecoder:
    """Adapts `RNNLM` to the decoder-state protocol of `zoo.decode`: the state is the carry."""

    def __init__(self, model: RNNLM, cache_len: int | None = None):
        self.model = model  # cache_len is accepted for interface parity; an RNN needs none

    def start(self, params, prompt: jax.Array) -> tuple[jax.Array, Carry]:
        """prompt (B, P) -> (logits of the next token (B, V), carry)."""
        logits, carry = self.model.apply({"params": params}, prompt, return_carry=True)
        return logits[:, -1], carry

    def step(self, params, carry: Carry, token: jax.Array) -> tuple[jax.Array, Carry]:
        """token (B,) -> (logits (B, V), carry)."""
        logits, carry = self.model.apply({"params": params}, token[:, None],
                                         initial_carry=carry, return_carry=True)
        return logits[:, 0], carry


GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}  # gate blocks per cell


def train_flops(cfg: RNNLMConfig, task: Any, batch: int, seq_len: int) -> float:
    """Matmul FLOPs of one training step: per token and layer the input and recurrent
    projections to the cell's gate blocks, then the output layer; 6 per weight and token."""
    E, H, L, V = cfg.emb_dim, cfg.hidden_size, cfg.num_layers, cfg.vocab_size
    weights = GATES[cfg.cell] * H * (E + H + (L - 1) * 2 * H) + H * V
    return 6 * weights * batch * seq_len


def _register() -> None:
    from zoo.registry import register_model

    for name, preset in PRESETS.items():
        register_model(name, RNNLMConfig, RNNLM, preset, task="causal_lm",
                       decoder_cls=RNNLMDecoder, train_flops=train_flops)


_register()

__all__ = ["PRESETS", "RNNLM", "RNNLMConfig", "RNNLMDecoder"]
