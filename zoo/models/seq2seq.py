"""RNN encoder-decoder models (Sutskever et al. 2014; Bahdanau et al. 2015; Luong et al. 2015).

Source ids (B, S) -> embedding -> `num_layers` scanned recurrent layers (optionally
bidirectional) = encoder outputs (B, S, He) and a final carry, which a "bridge" turns into the
decoder's initial carry (with a bidirectional encoder, per layer and carry part:
Dense([forward; backward]), tanh on h). The decoder reads the target shifted right (BOS first):

  attention "none" (Sutskever): stacked RNN from the encoder's final state; features = h_t.
      Teacher forcing runs the whole target through one scanned `RecurrentStack`.
  "bahdanau": the query is the previous top hidden state s_{t-1}; the context c_t joins the
      embedding as the first layer's input; features = [s_t; c_t].
  "luong_dot" / "luong_general": the query is the new top hidden state h_t; features =
      attentional vector tanh(W_c [c_t; h_t]); with `input_feeding` the previous attentional
      vector joins the next embedding as the first layer's input.
  logits = Dense(V)(dropout(features)).

With attention the decoder runs one step function (`AttentionDecoder`) in an `nn.scan` over time;
`decode_step` calls the very same function for one token, so step-by-step decoding reproduces the
teacher-forced logits. The embedding's share of the first layer's input projection is one matmul
for all steps, outside the scan, and the attention's key projection is computed once per source.

Shapes: B batch, S source length, T target length (both <= max_len), E `emb_dim`,
H `hidden_size`, He = H (or 2H with a bidirectional encoder), L `num_layers`, V `vocab_size`.

State. `encode` returns `encoded = {"memory": {...}, "carry": {...}}`, batch-major throughout:
  memory: "mask" (B, S) bool; with attention also "values" (B, S, He) (the encoder outputs) and
          "keys" (B, S, A) (their projection for the score).
  carry:  "rnn" = the cell carry, a tuple ((h,) or (h, c)) of (B, L, H) arrays; with input
          feeding also "feed" (B, H), the previous attentional vector.
`encoded` with its carry replaced is the decoding state of `Seq2SeqDecoder`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.errors import ConfigError
from zoo.models.config_checks import check_choices, check_ranges
from zoo.models.inputs import check_tokens
from zoo.nn.cells import cell_params, get_cell_type, project_inputs
from zoo.nn.logical_axes import dense_axes, embed_axes
from zoo.nn.precision import dtype_of
from zoo.nn.recurrent import RecurrentStack
from zoo.nn.rnn_attention import BahdanauAttention, LuongAttention
from zoo.special_tokens import BOS_ID, PAD_ID

ATTENTIONS = ("none", "bahdanau", "luong_dot", "luong_general")


@dataclasses.dataclass(frozen=True)
class Seq2SeqConfig:
    vocab_size: int = 64  # one vocabulary for source and target (the data's CharVocab sets it)
    emb_dim: int = 64
    hidden_size: int = 256
    num_layers: int = 2  # encoder and decoder alike
    cell: str = "lstm"  # "lstm" | "gru" (also "rnn_tanh" | "rnn_relu")
    bidirectional_encoder: bool = False
    attention: str = "none"  # "none" | "bahdanau" | "luong_dot" | "luong_general"
    input_feeding: bool = False  # Luong: feed the previous attentional vector to the next step
    dropout_rate: float = 0.1
    max_len: int = 128  # longest source / target accepted
    tie_embeddings: bool = False  # output layer = target embedding^T (features width == emb_dim)
    compute_dtype: str = "float32"  # of the attention and output layers (zoo.nn.precision)
    unroll: int = 1  # time steps per scan iteration (encoder and decoder loops)

    def __post_init__(self):
        check_ranges(self)

    def validate(self) -> None:
        """ConfigError unless every string field holds an allowed value and the attention
        settings fit together (ranges: on creation; the model checks the rest on setup)."""
        check_choices(self, attention=ATTENTIONS)
        _check_config(self)


PRESETS: dict[str, dict[str, Any]] = {
    # Sized for character-level number-to-words on a 2-core CPU (~10 minutes of training).
    "seq2seq_lstm": {"cell": "lstm", "num_layers": 2, "attention": "none"},
    "seq2seq_gru": {"cell": "gru", "num_layers": 2, "attention": "none"},
    "seq2seq_lstm_bahdanau": {"cell": "lstm", "num_layers": 1, "bidirectional_encoder": True,
                              "attention": "bahdanau"},
    "seq2seq_lstm_luong": {"cell": "lstm", "num_layers": 1, "attention": "luong_general",
                           "input_feeding": True},
}


def _check_config(cfg: Seq2SeqConfig) -> None:
    if cfg.attention not in ATTENTIONS:
        raise ConfigError(f"unknown attention {cfg.attention!r}; choose one of {ATTENTIONS}.")
    get_cell_type(cfg.cell)
    if cfg.input_feeding and not cfg.attention.startswith("luong"):
        raise ConfigError(
            f"input_feeding applies to Luong attention only (attention={cfg.attention!r}); "
            f"Bahdanau attention already feeds its context to the decoder cell."
        )
    if cfg.attention == "luong_dot" and cfg.bidirectional_encoder:
        raise ConfigError(
            "luong_dot scores need encoder outputs as wide as the decoder state, but a "
            "bidirectional encoder doubles them; use luong_general or bahdanau instead."
        )
    if cfg.tie_embeddings and _feature_size(cfg) != cfg.emb_dim:
        raise ConfigError(
            f"tie_embeddings needs the decoder's output features ({_feature_size(cfg)} wide for "
            f"attention={cfg.attention!r}) to equal emb_dim={cfg.emb_dim}; set them equal or "
            f"tie_embeddings=False."
        )


def _memory_size(cfg: Seq2SeqConfig) -> int:
    return cfg.hidden_size * (2 if cfg.bidirectional_encoder else 1)


def _feature_size(cfg: Seq2SeqConfig) -> int:
    """Width of what the output layer reads."""
    if cfg.attention == "bahdanau":
        return cfg.hidden_size + _memory_size(cfg)
    return cfg.hidden_size


class _CellParams(nn.Module):
    """Declares one recurrent cell's parameters (layout of `zoo.nn.cells`) and returns them."""

    cell: str
    input_size: int
    hidden_size: int

    @nn.compact
    def __call__(self) -> dict[str, jax.Array]:
        return cell_params(self, get_cell_type(self.cell), self.input_size, self.hidden_size,
                           nn.initializers.lecun_normal(), nn.initializers.orthogonal())


class AttentionDecoder(nn.Module):
    """One decoding step of the attention decoder (Bahdanau or Luong), used by a scan over time.

    `layers_0`'s input kernel has E + X rows: the embedding's E rows (applied to all steps at
    once by `project_embeddings`) and X rows for the context (Bahdanau, X = He) or the previous
    attentional vector (Luong with input feeding, X = H).
    """

    config: Seq2SeqConfig

    def setup(self):
        cfg = self.config
        hidden = cfg.hidden_size
        dtype = dtype_of(cfg.compute_dtype)
        extra = 0
        if cfg.attention == "bahdanau":
            extra = _memory_size(cfg)
        elif cfg.input_feeding:
            extra = hidden
        self.layers = [
            _CellParams(cfg.cell, cfg.emb_dim + extra if layer == 0 else hidden, hidden)
            for layer in range(cfg.num_layers)
        ]
        if cfg.attention == "bahdanau":
            self.attention = BahdanauAttention(hidden, dtype=dtype)
        else:
            self.attention = LuongAttention(cfg.attention.removeprefix("luong_"), hidden,
                                            dtype=dtype)
            self.combine = nn.Dense(hidden, use_bias=False, dtype=dtype,
                                    **dense_axes("embed", "hidden"))  # W_c
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def project_keys(self, values: jax.Array) -> jax.Array:
        return self.attention.project_keys(values)

    def project_embeddings(self, emb: jax.Array) -> jax.Array:
        """emb (..., E) -> its share of the first layer's gate inputs (..., G*H), bias included."""
        params = self.layers[0]()
        kernel = params["input_kernel"][:self.config.emb_dim]
        return project_inputs({"input_kernel": kernel, "bias": params["bias"]}, emb)

    def __call__(self, carry: dict, xp_emb: jax.Array, memory: dict, train: bool = False
                 ) -> tuple[dict, tuple[jax.Array, jax.Array]]:
        """One step: (carry, projected embedding (B, G*H), memory) -> (carry, (features, weights))."""
        cfg = self.config
        cell = get_cell_type(cfg.cell)
        values, keys, mask = memory["values"], memory["keys"], memory["mask"]
        prev = [tuple(part[:, layer] for part in carry["rnn"]) for layer in range(cfg.num_layers)]
        params0 = self.layers[0]()
        extra_kernel = params0["input_kernel"][cfg.emb_dim:]
        xp = xp_emb
        if cfg.attention == "bahdanau":  # query: the previous top hidden state s_{t-1}
            context, weights = self.attention(prev[-1][0], values, mask, projected_keys=keys)
            xp = xp + context.astype(xp.dtype) @ extra_kernel
        elif cfg.input_feeding:
            xp = xp + carry["feed"] @ extra_kernel
        new = [cell.step(params0, prev[0], xp)]
        for layer in range(1, cfg.num_layers):
            x = self.dropout(new[-1][0], deterministic=not train)
            params = self.layers[layer]()
            new.append(cell.step(params, prev[layer], project_inputs(params, x)))
        h = new[-1][0]
        out = {"rnn": tuple(jnp.stack(parts, axis=1) for parts in zip(*new))}
        if cfg.attention == "bahdanau":
            features = jnp.concatenate([h, context.astype(h.dtype)], axis=-1)
        else:  # Luong: the query is the new top hidden state h_t
            context, weights = self.attention(h, values, mask, projected_keys=keys)
            combined = jnp.concatenate([context.astype(h.dtype), h], axis=-1)
            features = jnp.tanh(self.combine(combined)).astype(h.dtype)
            if cfg.input_feeding:
                out["feed"] = features
        return out, (features, weights)


def _scan_body(decoder: AttentionDecoder, carry, xp_emb, memory, train):
    return decoder(carry, xp_emb, memory, train)


class Seq2Seq(nn.Module):
    """RNN encoder-decoder: source ids (B, S), decoder inputs (B, T) -> logits (B, T, V).

        model = zoo.create_model("seq2seq_lstm_luong", vocab_size=40)
        variables = model.init(jax.random.key(0), inputs, decoder_inputs)
        logits = model.apply(variables, inputs, decoder_inputs)
        logits, weights = model.apply(variables, inputs, decoder_inputs, return_attention=True)
        encoded = model.apply(variables, inputs, method="encode")
        logits, carry = model.apply(variables, encoded, token, method="decode_step")

    The source mask is `inputs != PAD_ID`: padding must follow each row's real ids.
    `weights` (B, T, S) is None for attention "none".
    """

    config: Seq2SeqConfig

    def setup(self):
        cfg = self.config
        _check_config(cfg)
        dtype = dtype_of(cfg.compute_dtype)
        # the recurrences run in float32
        self.src_embed = nn.Embed(cfg.vocab_size, cfg.emb_dim, embedding_init=embed_axes())
        self.tgt_embed = nn.Embed(cfg.vocab_size, cfg.emb_dim, embedding_init=embed_axes())
        self.encoder = RecurrentStack(cfg.cell, cfg.hidden_size, cfg.num_layers,
                                      bidirectional=cfg.bidirectional_encoder,
                                      dropout_rate=cfg.dropout_rate, unroll=cfg.unroll)
        if cfg.bidirectional_encoder:  # one Dense per carry part, shared by the layers
            parts = get_cell_type(cfg.cell).carry_parts
            self.bridge = [nn.Dense(cfg.hidden_size, **dense_axes("embed", "hidden"))
                           for _ in range(parts)]
        if cfg.attention == "none":
            self.decoder = RecurrentStack(cfg.cell, cfg.hidden_size, cfg.num_layers,
                                          dropout_rate=cfg.dropout_rate, unroll=cfg.unroll)
        else:
            self.decoder = AttentionDecoder(cfg)
        self.dropout = nn.Dropout(cfg.dropout_rate)
        if not cfg.tie_embeddings:
            self.output = nn.Dense(cfg.vocab_size, dtype=dtype, **dense_axes("hidden", "vocab"))

    # -- encoder ---------------------------------------------------------------------------

    def encode(self, inputs: jax.Array, train: bool = False) -> dict:
        """Source ids (B, S) -> `encoded` (memory + the decoder's initial carry; see the module
        docstring)."""
        cfg = self.config
        check_tokens(inputs, cfg.vocab_size, cfg.max_len)
        mask = inputs != PAD_ID
        lengths = jnp.sum(mask.astype(jnp.int32), axis=-1)
        x = self.dropout(self.src_embed(inputs), deterministic=not train)
        outputs, final = self.encoder(x, lengths, train=train)  # (B, S, He), parts (L*D, B, H)
        carry = {"rnn": self._bridge(final)}
        if cfg.input_feeding:
            carry["feed"] = jnp.zeros((inputs.shape[0], cfg.hidden_size), outputs.dtype)
        memory = {"mask": mask}
        if cfg.attention != "none":
            values = self.dropout(outputs, deterministic=not train)
            memory["values"] = values
            memory["keys"] = self.decoder.project_keys(values)
        return {"memory": memory, "carry": carry}

    def _bridge(self, final: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
        """Encoder final carry, parts (L * dirs, B, H) -> decoder carry, parts (B, L, H)."""
        cfg = self.config
        if cfg.bidirectional_encoder:
            combined = []
            for i, part in enumerate(final):
                _, batch, hidden = part.shape
                both = part.reshape(cfg.num_layers, 2, batch, hidden)  # forward, backward
                y = self.bridge[i](jnp.concatenate([both[:, 0], both[:, 1]], axis=-1))
                combined.append(jnp.tanh(y) if i == 0 else y)  # h in (-1, 1); the LSTM's c free
            final = tuple(combined)
        return tuple(jnp.swapaxes(part, 0, 1) for part in final)

    # -- decoder ---------------------------------------------------------------------------

    def _logits(self, features: jax.Array, train: bool) -> jax.Array:
        features = self.dropout(features, deterministic=not train)
        if self.config.tie_embeddings:
            logits = self.tgt_embed.attend(features)
        else:
            logits = self.output(features)
        return logits.astype(jnp.float32)

    def _check_decoder_inputs(self, encoded: dict, tokens: jax.Array) -> None:
        cfg = self.config
        check_tokens(tokens, cfg.vocab_size, cfg.max_len)
        batch = encoded["memory"]["mask"].shape[0]
        if tokens.shape[0] != batch:
            raise ValueError(f"decoder inputs have batch size {tokens.shape[0]} but the encoded "
                             f"source has {batch}.")

    def decode(self, encoded: dict, decoder_inputs: jax.Array, train: bool = False,
               return_attention: bool = False):
        """Teacher forcing: decoder inputs (B, T) (BOS, y_1, ..., y_{T-1}) -> logits (B, T, V)
        [, attention weights (B, T, S) or None]."""
        cfg = self.config
        self._check_decoder_inputs(encoded, decoder_inputs)
        emb = self.dropout(self.tgt_embed(decoder_inputs), deterministic=not train)
        carry = encoded["carry"]
        weights = None
        if cfg.attention == "none":
            initial = tuple(jnp.swapaxes(part, 0, 1) for part in carry["rnn"])
            features, _ = self.decoder(emb, initial_carry=initial, train=train)
        else:
            xp = jnp.swapaxes(self.decoder.project_embeddings(emb), 0, 1)  # (T, B, G*H)
            scan = nn.scan(_scan_body, variable_broadcast="params",
                           split_rngs={"params": False, "dropout": True},
                           in_axes=(0, nn.broadcast, nn.broadcast), unroll=cfg.unroll)
            _, (features, weights) = scan(self.decoder, carry, xp, encoded["memory"], train)
            features, weights = jnp.swapaxes(features, 0, 1), jnp.swapaxes(weights, 0, 1)
        logits = self._logits(features, train)
        return (logits, weights) if return_attention else logits

    def decode_step(self, encoded: dict, token: jax.Array, carry: dict | None = None,
                    train: bool = False, return_attention: bool = False):
        """One decoder step, the same function the teacher-forced scan runs:
        token (B,) -> (logits (B, V), new carry [, attention weights (B, S) or None]).

        `carry` defaults to `encoded["carry"]` (the first step, token = BOS)."""
        cfg = self.config
        if getattr(token, "ndim", None) != 1:
            raise ValueError(f"decode_step takes one token per row, shape (B,); got shape "
                             f"{getattr(token, 'shape', None)}.")
        self._check_decoder_inputs(encoded, token[:, None])
        if carry is None:
            carry = encoded["carry"]
        emb = self.dropout(self.tgt_embed(token), deterministic=not train)
        weights = None
        if cfg.attention == "none":
            initial = tuple(jnp.swapaxes(part, 0, 1) for part in carry["rnn"])
            features, final = self.decoder(emb[:, None], initial_carry=initial, train=train)
            features = features[:, 0]
            carry = {"rnn": tuple(jnp.swapaxes(part, 0, 1) for part in final)}
        else:
            xp = self.decoder.project_embeddings(emb)
            carry, (features, weights) = self.decoder(carry, xp, encoded["memory"], train)
        logits = self._logits(features, train)
        return (logits, carry, weights) if return_attention else (logits, carry)

    def __call__(self, inputs: jax.Array, decoder_inputs: jax.Array, *, train: bool = False,
                 return_attention: bool = False):
        """inputs (B, S), decoder_inputs (B, T) -> logits (B, T, V) [, weights (B, T, S)]."""
        return self.decode(self.encode(inputs, train), decoder_inputs, train, return_attention)


def _start(model: Seq2Seq, inputs: jax.Array) -> tuple[jax.Array, dict]:
    encoded = model.encode(inputs)
    bos = jnp.full((inputs.shape[0],), BOS_ID, jnp.int32)
    logits, carry = model.decode_step(encoded, bos)
    return logits, {**encoded, "carry": carry}


class Seq2SeqDecoder:
    """Adapts `Seq2Seq` to the decoder-state protocol of `zoo.decode`.

    The state is `encoded` (encoder memory + decoder carry), every leaf batch-major.
    """

    def __init__(self, model: Seq2Seq, cache_len: int | None = None):
        self.model = model  # cache_len is accepted for interface parity; an RNN needs none

    def start(self, params, inputs: jax.Array) -> tuple[jax.Array, dict]:
        """Source ids (B, S) -> (logits of the first target token (B, V), state)."""
        return self.model.apply({"params": params}, inputs, method=_start)

    def step(self, params, state: dict, token: jax.Array) -> tuple[jax.Array, dict]:
        """token (B,) -> (logits of the next token (B, V), state)."""
        logits, carry = self.model.apply({"params": params}, state, token, state["carry"],
                                         method="decode_step")
        return logits, {**state, "carry": carry}

    def gather_state(self, state: dict, index: jax.Array) -> dict:
        """Selects batch rows `index` (B',) of every state leaf (beam search)."""
        return jax.tree.map(lambda x: jnp.take(x, index, axis=0), state)


def _register() -> None:
    from zoo.registry import register_model

    for name, preset in PRESETS.items():
        register_model(name, Seq2SeqConfig, Seq2Seq, preset, task="seq2seq",
                       decoder_cls=Seq2SeqDecoder)


_register()

__all__ = ["PRESETS", "AttentionDecoder", "Seq2Seq", "Seq2SeqConfig", "Seq2SeqDecoder"]
