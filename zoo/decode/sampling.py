"""Autoregressive sampling written once over an abstract decoder state.

A *decoder* is any object with
    start(params, prompt (B, P) int32) -> (logits (B, V), state)
    step(params, state, token (B,) int32) -> (logits (B, V), state)
where `state` is any pytree: a transformer KV cache, an RNN carry, ... The sampling loop is one
`lax.scan`, so a whole generation compiles once per (batch, prompt length, new tokens).
"""
from __future__ import annotations

import functools
from typing import Any, Protocol

import jax
import jax.numpy as jnp


class Decoder(Protocol):
    def start(self, params: Any, prompt: jax.Array) -> tuple[jax.Array, Any]: ...

    def step(self, params: Any, state: Any, token: jax.Array) -> tuple[jax.Array, Any]: ...


def filter_logits(logits: jax.Array, *, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Sets to -inf every logit outside the top-k and outside the top-p nucleus. logits: (B, V)."""
    neg_inf = jnp.finfo(logits.dtype).min
    if top_k and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # (B, 1)
        logits = jnp.where(logits < kth, neg_inf, logits)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]  # (B, V) descending
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs  # probability of strictly better tokens
        keep = mass_before < top_p  # always keeps the best token
        cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, neg_inf, logits)
    return logits


def choose_token(logits: jax.Array, rng: jax.Array, *, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Greedy when temperature == 0, otherwise samples from the filtered, tempered logits."""
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = filter_logits(logits / temperature, top_k=top_k, top_p=top_p)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def generate(decoder: Decoder, params: Any, prompt: jax.Array, rng: jax.Array, *,
             max_new_tokens: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             num_valid_tokens: int | None = None, return_logits: bool = False):
    """Continues `prompt` (B, P) by `max_new_tokens` tokens -> (B, N) int32.

    `num_valid_tokens` restricts choices to ids below it (a tokenizer smaller than the model's
    vocabulary, e.g. bytes in GPT-2's 50257 slots). With `return_logits=True` also returns the
    logits (B, N, V) each new token was chosen from.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy); got {temperature}.")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1]; got {top_p}.")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 disables it); got {top_k}.")
    return _generate(decoder, params, prompt, rng, max_new_tokens, float(temperature), int(top_k),
                     float(top_p), num_valid_tokens, return_logits)


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6, 7, 8, 9))
def _generate(decoder, params, prompt, rng, max_new_tokens, temperature, top_k, top_p,
              num_valid_tokens, return_logits):
    logits, state = decoder.start(params, prompt)

    def body(carry, step_rng):
        logits, state = carry
        if num_valid_tokens is not None:
            valid = jnp.arange(logits.shape[-1]) < num_valid_tokens
            logits = jnp.where(valid, logits, jnp.finfo(logits.dtype).min)
        token = choose_token(logits, step_rng, temperature=temperature, top_k=top_k, top_p=top_p)
        next_logits, state = decoder.step(params, state, token)
        return (next_logits, state), (token, logits)

    rngs = jax.random.split(rng, max_new_tokens)
    _, (tokens, step_logits) = jax.lax.scan(body, (logits, state), rngs)
    tokens = tokens.T  # (B, N)
    if return_logits:
        return tokens, jnp.swapaxes(step_logits, 0, 1)  # (B, N, V)
    return tokens
