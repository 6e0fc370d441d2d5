"""ELMo-style bidirectional language model (`elmo_bilm`) and its contextual embedder.

Peters et al. 2018: a forward and a backward LSTM language model that share the token
embedding and the output softmax, trained on the sum of both losses. Each layer's
representation is [forward h; backward h] (2H); layer 0 is [x; x] (so `emb_dim` must equal
`hidden_size`). `ELMoEmbedder` turns a trained biLM into a reusable layer that returns the
learned weighted sum (`zoo.nn.scalar_mix.ScalarMix`) of those L + 1 representations.
Mixed precision follows `zoo.nn.precision`: the layers' representations are in the compute
dtype, the logits float32.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.errors import ConfigError
from zoo.models.config_checks import check_choices, check_ranges
from zoo.models.inputs import check_tokens
from zoo.nn.cells import accumulating_dot_general
from zoo.nn.logical_axes import dense_axes, embed_axes
from zoo.nn.precision import dtype_of
from zoo.nn.recurrent import RecurrentLayer
from zoo.nn.scalar_mix import ScalarMix


@dataclasses.dataclass(frozen=True)
class ELMoConfig:
    max_len: ClassVar[None] = None  # any length: no position table
    vocab_size: int = 256
    emb_dim: int = 256
    hidden_size: int = 256
    num_layers: int = 2
    dropout_rate: float = 0.1
    cell: str = "lstm"
    unroll: int = 1
    compute_dtype: str = "float32"  # mixed precision (zoo.nn.precision)
    param_dtype: str = "float32"

    def __post_init__(self):
        check_ranges(self)
        if self.emb_dim != self.hidden_size:
            raise ConfigError(f"elmo_bilm needs emb_dim == hidden_size (layer 0 is [x; x]); got "
                              f"emb_dim={self.emb_dim} and hidden_size={self.hidden_size}.")

    def validate(self) -> None:
        """ConfigError unless every string field holds an allowed value (ranges: on creation)."""
        check_choices(self)


class ELMoBiLM(nn.Module):
    """tokens (B, T) -> (forward logits, backward logits), each (B, T, V).

    Forward logits at t predict token t + 1; backward logits at t predict token t - 1.
    With `return_layers=True` it returns the representations (L + 1, B, T, 2H) instead.
    """

    config: ELMoConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, lengths: jax.Array | None = None, *,
                 train: bool = False, return_layers: bool = False):
        cfg = self.config
        check_tokens(tokens, cfg.vocab_size)
        if cfg.emb_dim != cfg.hidden_size:
            raise ValueError(f"elmo_bilm needs emb_dim == hidden_size (layer 0 is [x; x]); got "
                             f"{cfg.emb_dim} and {cfg.hidden_size}.")
        dtype = dtype_of(cfg.compute_dtype)
        param_dtype = dtype_of(cfg.param_dtype, "param_dtype")
        dtypes = dict(dtype=dtype, param_dtype=param_dtype)
        dropout = nn.Dropout(cfg.dropout_rate, deterministic=not train)
        x = nn.Embed(cfg.vocab_size, cfg.emb_dim, **dtypes, embedding_init=embed_axes(),
                     name="embed")(tokens)  # (B, T, E)
        layers = [jnp.concatenate([x, x], axis=-1)]
        fwd, bwd = dropout(x), dropout(x)
        for layer in range(cfg.num_layers):
            fwd, _ = RecurrentLayer(cfg.cell, cfg.hidden_size, unroll=cfg.unroll, **dtypes,
                                    name=f"forward_{layer}")(fwd, lengths)
            bwd, _ = RecurrentLayer(cfg.cell, cfg.hidden_size, reverse=True, unroll=cfg.unroll,
                                    **dtypes, name=f"backward_{layer}")(bwd, lengths)
            layers.append(jnp.concatenate([fwd, bwd], axis=-1))  # (B, T, 2H)
            fwd, bwd = dropout(fwd), dropout(bwd)
        if return_layers:
            return jnp.stack(layers)  # (L + 1, B, T, 2H) compute dtype
        # shared by both directions; float32 logits
        softmax = nn.Dense(cfg.vocab_size, **dtypes, dot_general=accumulating_dot_general,
                           **dense_axes("hidden", "vocab"), name="softmax")
        return softmax(fwd), softmax(bwd)


class ELMoEmbedder(nn.Module):
    """Contextual embeddings (B, T, 2H) = ScalarMix over a biLM's layers.

    Load a trained `elmo_bilm`'s params under "bilm"; with `freeze_bilm` (the paper's usage)
    no gradient reaches them.
    """

    config: ELMoConfig
    freeze_bilm: bool = True

    @nn.compact
    def __call__(self, tokens: jax.Array, lengths: jax.Array | None = None, *,
                 train: bool = False) -> jax.Array:
        layers = ELMoBiLM(self.config, name="bilm")(tokens, lengths, train=train,
                                                    return_layers=True)
        if self.freeze_bilm:
            layers = jax.lax.stop_gradient(layers)
        return ScalarMix(name="mix")(layers)


def _register() -> None:
    from zoo.registry import register_model

    register_model("elmo_bilm", ELMoConfig, ELMoBiLM, {}, task="bidirectional_lm")


_register()
