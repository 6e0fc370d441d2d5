"""Recurrent language models: `rnn_lm` (Elman), `lstm_lm`, `gru_lm`.

Token embedding -> dropout -> `num_layers` scanned recurrent layers (inter-layer dropout) ->
dropout -> output projection to the vocabulary (optionally tied to the embedding).

Shapes: B batch, T length (any: a recurrent model has no maximum), E `emb_dim`,
H `hidden_size`, V `vocab_size`. Generation carries the recurrent state (`RNNLMDecoder`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax

from zoo.models.inputs import check_tokens
from zoo.nn.cells import Carry
from zoo.nn.dense import dense_dot_general, dense_matmul
from zoo.nn.recurrent import RecurrentStack, stack_over_tokens


@dataclasses.dataclass(frozen=True)
class RNNLMConfig:
    vocab_size: int = 256
    emb_dim: int = 256
    hidden_size: int = 512
    num_layers: int = 2
    dropout_rate: float = 0.1
    cell: str = "lstm"  # "lstm" | "gru" | "rnn_tanh" | "rnn_relu"
    unroll: int = 1  # time steps per scan iteration (lax.scan unroll)
    tie_embeddings: bool = False  # output projection = embedding^T (needs emb_dim == hidden_size)


PRESETS: dict[str, dict[str, Any]] = {
    "rnn_lm": {"cell": "rnn_tanh"},
    "lstm_lm": {"cell": "lstm"},
    "gru_lm": {"cell": "gru"},
}


class RNNLM(nn.Module):
    """Recurrent language model: int tokens (B, T) -> logits (B, T, V).

        model = zoo.create_model("lstm_lm", hidden_size=512)
        variables = model.init(jax.random.key(0), tokens)
        logits = model.apply(variables, tokens)
        logits, carry = model.apply(variables, tokens, initial_carry=carry, return_carry=True)

    `carry` parts are (num_layers, B, H) ((h, c) for the LSTM), as `torch.nn.LSTM` returns;
    passing the final carry of one chunk as the initial carry of the next is truncated BPTT.
    """

    config: RNNLMConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, *, train: bool = False,
                 initial_carry: Carry | None = None,
                 return_carry: bool = False) -> jax.Array | tuple[jax.Array, Carry]:
        cfg = self.config
        check_tokens(tokens, cfg.vocab_size)
        if cfg.tie_embeddings and cfg.emb_dim != cfg.hidden_size:
            raise ValueError(f"tie_embeddings needs emb_dim == hidden_size; got {cfg.emb_dim} "
                             f"and {cfg.hidden_size}. Set them equal or tie_embeddings=False.")
        embed = nn.Embed(cfg.vocab_size, cfg.emb_dim, name="embed")
        stack = RecurrentStack(cfg.cell, cfg.hidden_size, cfg.num_layers,
                               dropout_rate=cfg.dropout_rate, unroll=cfg.unroll, name="rnn")
        x, carry = stack_over_tokens(stack, embed, tokens, cfg.dropout_rate, train,
                                     initial_carry=initial_carry)  # (B, T, H)
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not train)  # (B, T, H)
        if cfg.tie_embeddings:
            logits = dense_matmul(x, embed.embedding.T)  # embed.attend, as one 2-D matmul
        else:
            logits = nn.Dense(cfg.vocab_size, dot_general=dense_dot_general,
                              name="logits")(x)  # (B, T, V)
        return (logits, carry) if return_carry else logits


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


def _register() -> None:
    from zoo.registry import register_model

    for name, preset in PRESETS.items():
        register_model(name, RNNLMConfig, RNNLM, preset, task="causal_lm",
                       decoder_cls=RNNLMDecoder)


_register()

__all__ = ["PRESETS", "RNNLM", "RNNLMConfig", "RNNLMDecoder"]
