"""Greedy decoding and beam search, written once over the decoder protocol of `zoo.decode`.

A decoder (see `zoo.decode.sampling.Decoder`) is any hashable object with
    start(params, inputs (B, S) int32) -> (logits (B, V), state)
    step(params, state, token (B,) int32) -> (logits (B, V), state)
and optionally gather_state(state, index (B',) int32) -> state, which selects batch rows. Without
it every state leaf with ndim >= 1 is gathered along axis 0 and scalars are kept, so the state of
such a decoder must be batch-major. Both searches are one `lax.while_loop` that stops as soon as
nothing can change any more; each compiles once per (decoder, shapes, max_len, ...).

Shapes: B batch, S source length, K beam size, L `max_len`, V vocabulary.
"""
from __future__ import annotations

import functools
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp

from zoo.special_tokens import EOS_ID, PAD_ID

NEG_INF = float("-inf")


def greedy_search(decoder: Any, params: Any, inputs: jax.Array, *, max_len: int,
                  eos_id: int = EOS_ID) -> jax.Array:
    """Greedy decoding: the most likely token at every step -> tokens (B, max_len) int32.

    inputs: (B, S) int32, handed to `decoder.start`. A row ends with its first `eos_id` (kept in
    the output); every position after it is PAD_ID. Rows that emit no EOS run to `max_len`. The
    loop stops once every row has ended, so at most max_len - 1 `decoder.step` calls are made.
    """
    _check_args(inputs, max_len=max_len, eos_id=eos_id)
    tokens, _, _ = _greedy(decoder, params, inputs, int(max_len), int(eos_id))
    return tokens


def beam_search(decoder: Any, params: Any, inputs: jax.Array, *, beam_size: int, max_len: int,
                eos_id: int = EOS_ID, length_penalty: float = 0.6
                ) -> tuple[jax.Array, jax.Array]:
    """Beam search -> (tokens (B, K, max_len) int32, scores (B, K) float32), K = beam_size.

    inputs: (B, S) int32; each row is repeated K times (`jnp.repeat(inputs, K, axis=0)`) before
    `decoder.start`, so the decoder state holds B*K rows, beam k of item b at row b*K + k.
    A hypothesis of n tokens (its EOS included) with summed log-probability logp scores
    logp / ((5 + n) / 6) ** length_penalty (GNMT; length_penalty=0 ranks by logp alone).

    Returned beams, per item: the finished hypotheses (ended by EOS, PAD after it), best first;
    when fewer than K finished, the remaining slots hold the best unfinished hypotheses of length
    max_len (no EOS), best first, scored as if finished at max_len. A slot that no hypothesis can
    fill (K larger than the number of possible sequences) has score -inf and PAD tokens.

    beam_size=1 is greedy decoding (the same tokens as `greedy_search`, scored as above): the
    alive/finished formulation would otherwise keep the best non-EOS continuation alive beside an
    EOS-ended hypothesis and could return something other than the greedy path.
    """
    if not _is_int(beam_size) or beam_size < 1:
        raise ValueError(f"beam_size must be an int >= 1; got {beam_size!r}.")
    _check_args(inputs, max_len=max_len, eos_id=eos_id)
    length_penalty = float(length_penalty)
    if not math.isfinite(length_penalty):
        raise ValueError(f"length_penalty must be finite; got {length_penalty}.")
    if beam_size == 1:
        tokens, logp, lengths = _greedy(decoder, params, inputs, int(max_len), int(eos_id))
        scores = logp / _length_penalty(lengths, length_penalty)
        return tokens[:, None], scores[:, None]
    return _beam_search(decoder, params, inputs, int(beam_size), int(max_len), int(eos_id),
                        length_penalty)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_args(inputs: Any, *, max_len: Any, eos_id: Any) -> None:
    if not _is_int(max_len) or max_len < 1:
        raise ValueError(f"max_len must be an int >= 1; got {max_len!r}.")
    if not _is_int(eos_id) or eos_id < 0:
        raise ValueError(f"eos_id must be a non-negative int; got {eos_id!r}.")
    if jnp.ndim(inputs) != 2:
        raise ValueError(f"inputs must be (batch, length) token ids; got shape {jnp.shape(inputs)}.")


def _check_vocab(logits: jax.Array, eos_id: int) -> int:
    vocab = logits.shape[-1]
    if eos_id >= vocab:
        raise ValueError(f"eos_id {eos_id} is outside the decoder's vocabulary of {vocab}.")
    return vocab


def _length_penalty(length: jax.Array | int, alpha: float) -> jax.Array:
    """GNMT length penalty ((5 + length) / 6) ** alpha (1 when alpha == 0)."""
    if alpha == 0.0:
        return jnp.ones(jnp.shape(length), jnp.float32)
    return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def gather_state(decoder: Any, state: Any, index: jax.Array) -> Any:
    """The rows `index` (B',) of a decoder state: `decoder.gather_state` when defined, else axis 0
    of every leaf with ndim >= 1 (scalars such as a cache position are kept as they are)."""
    custom = getattr(decoder, "gather_state", None)
    if custom is not None:
        return custom(state, index)
    return jax.tree.map(lambda x: jnp.take(x, index, axis=0) if jnp.ndim(x) >= 1 else x, state)


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _greedy(decoder, params, inputs, max_len, eos_id):
    """-> tokens (B, L), summed log-probs of the emitted tokens (B,), lengths incl. EOS (B,)."""
    logits, state = decoder.start(params, inputs)
    _check_vocab(logits, eos_id)
    batch = inputs.shape[0]

    def choose(logits, ended):
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        token = jnp.argmax(logp, axis=-1).astype(jnp.int32)
        token_logp = jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0]
        return jnp.where(ended, PAD_ID, token), jnp.where(ended, 0.0, token_logp)

    token, logp = choose(logits, jnp.zeros((batch,), bool))
    tokens = jnp.full((batch, max_len), PAD_ID, jnp.int32).at[:, 0].set(token)
    lengths = jnp.ones((batch,), jnp.int32)

    def cond(carry):
        t, _, _, _, ended, _, _ = carry
        return (t < max_len) & ~jnp.all(ended)

    def body(carry):
        t, tokens, token, state, ended, logp, lengths = carry
        logits, state = decoder.step(params, state, token)
        lengths = lengths + (~ended).astype(jnp.int32)
        token, token_logp = choose(logits, ended)
        tokens = tokens.at[:, t].set(token)
        ended = ended | (token == eos_id)
        return t + 1, tokens, token, state, ended, logp + token_logp, lengths

    carry = (jnp.array(1, jnp.int32), tokens, token, state, token == eos_id, logp, lengths)
    _, tokens, _, _, _, logp, lengths = jax.lax.while_loop(cond, body, carry)
    return tokens, logp, lengths


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5, 6))
def _beam_search(decoder, params, inputs, beam_size, max_len, eos_id, alpha):
    """Alive/finished beam search (as in the Flax WMT example and t5x); see `beam_search`."""
    batch, k = inputs.shape[0], beam_size
    logits, state = decoder.start(params, jnp.repeat(inputs, k, axis=0))
    vocab = _check_vocab(logits, eos_id)
    num_candidates = min(2 * k, k * vocab)  # >= k non-EOS among them: each beam has one EOS

    def expand(t, logits, alive_seqs, alive_logp, fin_seqs, fin_scores):
        """Extends the alive beams by the token at position t (0-based) from their logits."""
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(batch, k, vocab)
        cand_logp = (alive_logp[:, :, None] + logp).reshape(batch, k * vocab)
        top_logp, top_index = jax.lax.top_k(cand_logp, num_candidates)  # (B, C), best first
        parent = top_index // vocab
        token = (top_index % vocab).astype(jnp.int32)
        seqs = jnp.take_along_axis(alive_seqs, parent[:, :, None], axis=1)  # (B, C, L)
        seqs = seqs.at[:, :, t].set(token)
        is_eos = token == eos_id

        # Alive: the best K candidates that did not end.
        alive_logp, pick = jax.lax.top_k(jnp.where(is_eos, NEG_INF, top_logp), k)
        alive_seqs = jnp.take_along_axis(seqs, pick[:, :, None], axis=1)
        parent = jnp.take_along_axis(parent, pick, axis=1)
        token = jnp.take_along_axis(token, pick, axis=1)

        # Finished: the best K of the old finished and the candidates that just ended.
        new_scores = jnp.where(is_eos, top_logp / _length_penalty(t + 1, alpha), NEG_INF)
        fin_scores, pick = jax.lax.top_k(jnp.concatenate([fin_scores, new_scores], axis=1), k)
        fin_seqs = jnp.take_along_axis(jnp.concatenate([fin_seqs, seqs], axis=1),
                                       pick[:, :, None], axis=1)
        return alive_seqs, alive_logp, fin_seqs, fin_scores, parent, token

    empty_seqs = jnp.full((batch, k, max_len), PAD_ID, jnp.int32)
    alive_logp = jnp.full((batch, k), NEG_INF, jnp.float32).at[:, 0].set(0.0)  # no duplicates
    fin_scores = jnp.full((batch, k), NEG_INF, jnp.float32)
    beams = expand(0, logits, empty_seqs, alive_logp, empty_seqs, fin_scores)

    def cond(carry):
        t, (_, alive_logp, _, fin_scores, _, _), _ = carry
        # Best score any alive beam can still reach: logp only falls, so with alpha >= 0 the
        # bound is its logp under the largest penalty, lp(max_len) (lp(t + 1) when alpha < 0).
        bound_lp = jnp.maximum(_length_penalty(t + 1, alpha), _length_penalty(max_len, alpha))
        can_improve = alive_logp[:, 0] / bound_lp > fin_scores[:, -1]
        return (t < max_len) & jnp.any(can_improve)

    def body(carry):
        t, (alive_seqs, alive_logp, fin_seqs, fin_scores, parent, token), state = carry
        rows = (jnp.arange(batch, dtype=jnp.int32)[:, None] * k + parent).reshape(batch * k)
        state = gather_state(decoder, state, rows)
        logits, state = decoder.step(params, state, token.reshape(batch * k))
        beams = expand(t, logits, alive_seqs, alive_logp, fin_seqs, fin_scores)
        return t + 1, beams, state

    t, beams, _ = jax.lax.while_loop(cond, body, (jnp.array(1, jnp.int32), beams, state))
    alive_seqs, alive_logp, fin_seqs, fin_scores, _, _ = beams

    # Too few finished: fill the empty slots with the best alive beams, finished at length t.
    # (An early stop leaves a slot empty only when no alive beam is left: their logp is -inf.)
    num_finished = jnp.sum(fin_scores > NEG_INF, axis=1, keepdims=True)  # (B, 1)
    slot = jnp.arange(k, dtype=jnp.int32)[None, :]
    use_alive = slot >= num_finished  # (B, K)
    pick = jnp.clip(slot - num_finished, 0, k - 1)
    alive_scores = alive_logp / _length_penalty(t, alpha)
    scores = jnp.where(use_alive, jnp.take_along_axis(alive_scores, pick, axis=1), fin_scores)
    seqs = jnp.where(use_alive[:, :, None],
                     jnp.take_along_axis(alive_seqs, pick[:, :, None], axis=1), fin_seqs)
    seqs = jnp.where((scores > NEG_INF)[:, :, None], seqs, PAD_ID)
    return seqs, scores
