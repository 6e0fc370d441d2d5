"""Scanned recurrent layers: one direction, and stacked / bidirectional stacks.

A whole sequence runs as ONE `lax.scan` whose body does only the recurrent matmul: the input
projection of all T steps is a single (B*T, D) x (D, G*H) matmul before the scan, and the
backward pass forms the recurrent weight gradient in one matmul after its reverse scan
(`zoo.nn.recurrence`).

Variable-length batches pass `lengths` (B,) (or a (B, T) mask of valid prefixes): outputs at
padded positions are 0, padded steps leave the carry unchanged (so the final carry is the one
at each sequence's true end), and the backward direction starts at each sequence's true end.

Carries. A cell's carry is a tuple of (B, H) arrays ((h,) or (h, c) for the LSTM; see
`zoo.nn.cells`). A stack's carry is the same tuple with each part stacked over layers and
directions, (L * num_directions, B, H), in PyTorch's order (layer-major, forward first): the
LSTM's is (h_n, c_n) exactly as `torch.nn.LSTM` returns it.

Precision: `dtype` is the compute dtype (matmul operands, projected inputs, outputs), and
`param_dtype` the parameters' (`zoo.nn.precision`); the carry and the gates stay float32.
`RecurrentStack(implementation="cudnn")` runs an LSTM stack through cuDNN instead of the scan,
with the same parameters (`zoo.nn.cudnn_lstm`).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.nn import cudnn_lstm
from zoo.nn.attention import current_platform
from zoo.nn.cells import (Carry, CellParams, accumulation_dtype, cell_params, get_cell_type,
                          operand_dtype, project_inputs, project_tokens)
from zoo.nn.recurrence import recurrence

IMPLEMENTATIONS = ("scan", "cudnn", "cudnn_reference")


def lengths_from_mask(mask: jax.Array) -> jax.Array:
    """(B, T) mask of valid positions (a prefix per row) -> (B,) int32 lengths."""
    return jnp.sum(mask.astype(jnp.int32), axis=-1)


def reverse_valid(x: jax.Array, lengths: jax.Array, time_axis: int = 1) -> jax.Array:
    """Reverses each row's first lengths[b] steps of x (B, T, ...) in place; padding stays put.

    With time_axis=0, x is time-major (T, B, ...).
    """
    t = jnp.arange(x.shape[time_axis])[None, :]  # (1, T)
    index = jnp.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (B, T)
    if time_axis == 0:
        index = index.T  # (T, B)
    index = index.reshape(index.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, index, axis=time_axis)


def scan_cell(cell_name: str, params: dict, xp: jax.Array, carry: Carry,
              lengths: jax.Array | None = None, unroll: int = 1,
              time_major: bool = False, dtype: Any = jnp.float32) -> tuple[jax.Array, Carry]:
    """Runs a cell over projected inputs xp (B, T, G*H) from `carry` -> (outputs (B, T, H), carry).

    With `lengths`, steps t >= lengths[b] neither change row b's carry nor emit an output (0).
    With time_major, xp is (T, B, G*H) and the outputs (T, B, H). `dtype`: the compute dtype.
    """
    cell = get_cell_type(cell_name)
    xs = xp if time_major else jnp.swapaxes(xp, 0, 1)  # (T, B, G*H): the scan's leading axis
    valid = None
    if lengths is not None:
        valid = (jnp.arange(xs.shape[0])[:, None] < lengths[None, :])[..., None]  # (T, B, 1)
    carry, ys = recurrence(cell, params["hidden_kernel"], cell.hidden_bias_full(params), xs,
                           carry, valid, unroll, dtype)
    return (ys if time_major else jnp.swapaxes(ys, 0, 1)), carry


class RecurrentLayer(nn.Module):
    """One recurrent layer in one direction: x (B, T, D) -> (outputs (B, T, H), final carry).

    With `embedding` (V, D), x holds int token ids (B, T) and the layer reads `embedding[x]`;
    the input projection then runs over the table's V rows when that is cheaper than over the
    B*T tokens (`zoo.nn.cells.project_tokens`). With `time_major`, x is (T, B, D) (or (T, B)
    ids) and the outputs (T, B, H): stacks use it to transpose once rather than per layer.
    The outputs are in the compute dtype `dtype`, the carry in float32 (see the module doc).
    """

    cell: str  # "rnn_tanh" | "rnn_relu" | "lstm" | "gru"
    hidden_size: int
    reverse: bool = False
    unroll: int = 1
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    recurrent_init: nn.initializers.Initializer = nn.initializers.orthogonal()
    dtype: Any = jnp.float32  # compute dtype
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array | None = None,
                 initial_carry: Carry | None = None, embedding: jax.Array | None = None,
                 time_major: bool = False) -> tuple[jax.Array, Carry]:
        cell = get_cell_type(self.cell)
        features = x if embedding is None else embedding  # (..., D)
        params = cell_params(self, cell, features.shape[-1], self.hidden_size, self.kernel_init,
                             self.recurrent_init, self.param_dtype)
        if lengths is not None and lengths.ndim == 2:  # a (B, T) mask of valid prefixes
            lengths = lengths_from_mask(lengths)
        t_axis = 0 if time_major else 1
        if initial_carry is None:
            dtype = accumulation_dtype(operand_dtype(self.dtype, features,
                                                     params["input_kernel"]))
            initial_carry = cell.init_carry(x.shape[1 - t_axis], self.hidden_size, dtype)
        if embedding is None:
            # (B, T, G*H), one matmul for all steps
            xp = project_inputs(params, x, self.dtype, time_major)
        else:
            xp = project_tokens(params, embedding, x, self.dtype, time_major)

        def run(xp, lengths):
            return scan_cell(self.cell, params, xp, initial_carry, lengths, self.unroll,
                             time_major, self.dtype)

        if not self.reverse:
            return run(xp, lengths)
        if lengths is None:
            ys, carry = run(jnp.flip(xp, t_axis), None)
            return jnp.flip(ys, t_axis), carry
        ys, carry = run(reverse_valid(xp, lengths, t_axis), lengths)
        return reverse_valid(ys, lengths, t_axis), carry


class RecurrentStack(nn.Module):
    """Stacked, optionally bidirectional recurrent layers with inter-layer dropout.

    __call__(x (B, T, D), lengths=None, initial_carry=None, train=False)
        -> (outputs (B, T, H * num_directions), carry)
    where `carry` parts are (num_layers * num_directions, B, H), as in `torch.nn.LSTM`.
    Bidirectional layers concatenate [forward, backward] features. Dropout (rate
    `dropout_rate`, only with train=True) applies to every layer's output except the last, as
    `torch.nn.LSTM(dropout=...)` does. With `embedding` (V, D), x holds int token ids (B, T)
    and the first layer reads `embedding[x]` (see `RecurrentLayer`).

    `implementation`: "scan" (the zoo's layers, any cell and dtype), "cudnn" (an LSTM stack in
    float32 through cuDNN, `zoo.nn.cudnn_lstm`; NVIDIA GPUs only) or "cudnn_reference" (the
    same path through `jax.experimental.rnn.lstm_ref`, any backend: for tests). All three have
    the same params tree.
    """

    cell: str
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    dropout_rate: float = 0.0
    unroll: int = 1
    dtype: Any = jnp.float32  # compute dtype
    param_dtype: Any = jnp.float32
    implementation: str = "scan"  # "scan" | "cudnn" | "cudnn_reference"

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array | None = None,
                 initial_carry: Carry | None = None, train: bool = False,
                 embedding: jax.Array | None = None) -> tuple[jax.Array, Carry]:
        self._check_implementation()
        directions = (False, True) if self.bidirectional else (False,)
        if lengths is not None and lengths.ndim == 2:  # a (B, T) mask of valid prefixes
            lengths = lengths_from_mask(lengths)
        if self.implementation != "scan":
            return self._cudnn(x, lengths, initial_carry, train, embedding)
        x = jnp.swapaxes(x, 0, 1)  # (T, B, ...): every layer runs time-major
        finals: list[Carry] = []
        for layer in range(self.num_layers):
            outs = []
            for d, reverse in enumerate(directions):
                index = layer * len(directions) + d
                carry = None if initial_carry is None else tuple(p[index] for p in initial_carry)
                name = f"layer{layer}_{'backward' if reverse else 'forward'}"
                y, final = RecurrentLayer(self.cell, self.hidden_size, reverse=reverse,
                                          unroll=self.unroll, dtype=self.dtype,
                                          param_dtype=self.param_dtype, name=name)(
                    x, lengths, carry, embedding if layer == 0 else None, time_major=True)
                outs.append(y)
                finals.append(final)
            x = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)
            if layer < self.num_layers - 1 and self.dropout_rate > 0:
                x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        carry = tuple(jnp.stack(parts) for parts in zip(*finals))
        return jnp.swapaxes(x, 0, 1), carry

    def _check_implementation(self) -> None:
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(f"unknown recurrent implementation {self.implementation!r}; "
                             f"choose one of {IMPLEMENTATIONS}.")
        if self.implementation == "scan":
            return
        if self.cell != "lstm":
            raise ValueError(f"implementation={self.implementation!r} runs only the LSTM; cell "
                             f"{self.cell!r} needs implementation='scan' "
                             "(rnn_implementation='scan' in a model config).")
        if jnp.dtype(self.dtype) != jnp.float32:
            raise ValueError(f"implementation={self.implementation!r} computes in float32 "
                             "(jax.experimental.rnn has no 16-bit LSTM); got compute dtype "
                             f"{jnp.dtype(self.dtype).name}. Use compute_dtype='float32' or "
                             "rnn_implementation='scan'.")
        platform = current_platform()
        if self.implementation == "cudnn" and platform != "cuda":
            raise ValueError(f"implementation='cudnn' needs an NVIDIA GPU, and JAX's platform "
                             f"here is {platform!r}; use rnn_implementation='scan' (any "
                             "platform), or 'cudnn_reference' for the cuDNN call's plain-JAX "
                             "reference.")

    def _cudnn(self, x: jax.Array, lengths: jax.Array | None, initial_carry: Carry | None,
               train: bool, embedding: jax.Array | None) -> tuple[jax.Array, Carry]:
        """The LSTM stack through `zoo.nn.cudnn_lstm`, on parameters declared as the scan's.

        One cuDNN call runs all layers; with inter-layer dropout in training, one call per
        layer with Flax's dropout between them, drawn (time-major) exactly as the scan draws it.
        """
        if embedding is not None:
            x = jnp.take(embedding, x, axis=0)  # (B, T, D): cuDNN projects every token itself
        names = cudnn_lstm.layer_names(self.num_layers, self.bidirectional)
        per_layer = 2 if self.bidirectional else 1
        params = {}
        for i, name in enumerate(names):
            input_size = x.shape[-1] if i < per_layer else self.hidden_size * per_layer
            params[name] = CellParams(self.cell, self.hidden_size, self.param_dtype,
                                      name=name)(input_size)

        def run(params, x, carry):
            return cudnn_lstm.lstm_stack(params, x, lengths, carry,
                                         reference=self.implementation == "cudnn_reference")

        if not (train and self.dropout_rate > 0 and self.num_layers > 1):
            return run(params, x, initial_carry)
        finals = []
        for layer in range(self.num_layers):
            rows = slice(layer * per_layer, (layer + 1) * per_layer)  # this layer's carry rows
            layer_params = dict(zip(cudnn_lstm.layer_names(1, self.bidirectional),
                                    [params[n] for n in names[rows]]))
            carry = None if initial_carry is None else tuple(p[rows] for p in initial_carry)
            x, final = run(layer_params, x, carry)  # (B, T, H * dirs)
            finals.append(final)
            if layer < self.num_layers - 1:
                x_tm = nn.Dropout(self.dropout_rate, deterministic=False)(jnp.swapaxes(x, 0, 1))
                x = jnp.swapaxes(x_tm, 0, 1)
        return x, tuple(jnp.concatenate(parts) for parts in zip(*finals))

    def initialize_carry(self, batch_size: int, dtype=jnp.float32) -> Carry:
        cell = get_cell_type(self.cell)
        count = self.num_layers * (2 if self.bidirectional else 1)
        return tuple(jnp.zeros((count, batch_size, self.hidden_size), dtype)
                     for _ in range(cell.carry_parts))


def stack_over_tokens(stack: RecurrentStack, embed: nn.Embed, tokens: jax.Array,
                      dropout_rate: float, train: bool, **kwargs) -> tuple[jax.Array, Carry]:
    """`stack(Dropout(dropout_rate)(embed(tokens)), train=train, **kwargs)` for int tokens (B, T).

    When that dropout is inactive (evaluation, or rate 0) the stack gets the ids and the table
    instead, so that its first layer may project the table's V rows rather than every token
    (`RecurrentLayer`). Call it inside the calling module's compact method.
    """
    if train and dropout_rate > 0:
        x = nn.Dropout(dropout_rate, deterministic=False)(embed(tokens))  # (B, T, E)
        return stack(x, train=train, **kwargs)
    return stack(tokens, train=train, embedding=embed.embedding, **kwargs)
