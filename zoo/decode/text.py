"""Text in, text out: prompt continuations through any decoder (`zoo.decode.sampling`).

A tokenizer here is anything with `encode(str) -> list[int]`, `decode(ids) -> str` and
`vocab_size` (the zoo's byte / character vocabularies, a Hugging Face tokenizer wrapper).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from zoo.decode.sampling import generate


def sample_texts(decoder, params, tokenizer, prompt: str, *, num_samples: int,
                 max_new_tokens: int, max_len: int | None, temperature: float, top_k: int,
                 top_p: float, seed: int) -> list[str]:
    """`num_samples` continuations of `prompt` (text), through the model's decoder.

    Generation stops at the model's `max_len`; a prompt that leaves no room is an error.
    """
    prompt_ids = tokenizer.encode(prompt)
    if len(prompt_ids) == 0:
        raise ValueError("the prompt is empty; give at least one character to continue.")
    if max_len is not None:
        if len(prompt_ids) >= max_len:
            raise ValueError(f"the prompt has {len(prompt_ids)} tokens; the model's max_len is "
                             f"{max_len}. Shorten the prompt.")
        max_new_tokens = min(max_new_tokens, max_len - len(prompt_ids))
    tokens = generate(decoder, params,
                      jnp.tile(jnp.asarray(prompt_ids, jnp.int32)[None], (num_samples, 1)),
                      jax.random.key(seed), max_new_tokens=max_new_tokens,
                      temperature=temperature, top_k=top_k, top_p=top_p,
                      num_valid_tokens=tokenizer.vocab_size)
    return [prompt + tokenizer.decode(np.asarray(t)) for t in tokens]
