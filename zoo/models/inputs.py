"""Checks on model inputs shared by the model families (errors that name the fix)."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def check_tokens(tokens: Any, vocab_size: int, max_len: int | None = None) -> None:
    """Raises a ValueError naming the problem if `tokens` is not valid (B, T) input.

    Shapes are always checked. Values are checked when they are concrete (outside `jit`):
    JAX gathers clamp out-of-range ids silently, so the data pipeline checks every batch too.
    """
    shape = np.shape(tokens)
    if len(shape) != 2:
        raise ValueError(f"tokens must have shape (batch, length); got shape {shape}.")
    dtype = tokens.dtype if hasattr(tokens, "dtype") else np.asarray(tokens).dtype
    if not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(f"tokens must be integer ids; got dtype {dtype}. Cast them to int32.")
    if max_len is not None and shape[1] > max_len:
        raise ValueError(
            f"sequence length {shape[1]} exceeds the model's max_len={max_len}; truncate the "
            f"input to {max_len} tokens or create the model with max_len >= {shape[1]}."
        )
    if not isinstance(tokens, jax.core.Tracer) and np.size(tokens):
        values = np.asarray(tokens)  # host copy: jnp reductions would be staged inside a jit
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"token id {bad} is outside [0, vocab_size={vocab_size}); check the tokenizer "
                f"or create the model with a vocab_size that covers it."
            )
