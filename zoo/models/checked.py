"""Checked mode for `model.apply`: token ids and lengths validated eagerly and under `jax.jit`.

Under `jax.jit` a model cannot look at its inputs' values: an embedding lookup clamps an id of -1
to V - 1 without a word, an id >= V gives NaN logits, and BERT clips `lengths` into [0, T]. The
functions here validate every token-id and length argument of a zoo model first and raise
`zoo.errors.InputError` with a one-line message naming the argument, the range of values found
and the range allowed:

* static properties, in Python (also while tracing): integer dtype, rank, T <= `max_len` for the
  families with a position table, batch sizes that agree;
* values: ids in [0, vocab_size) (segments in [0, type_vocab_size), BERT's MLM `positions` in
  [0, T)), `lengths` in [0, T]. Concrete arrays are checked on the host; traced ones through
  `jax.experimental.checkify.check`.

Eagerly:

    from zoo.models.checked import checked_apply, checked_jit
    logits = checked_apply(model, variables, tokens, train=False)     # InputError if invalid

Compiled: `checked_jit` jits `checkify.checkify(checked_apply)` and raises after the call
(64-bit NumPy ids and lengths, which jit would wrap into int32, are checked on the host first).
Keyword arguments that are not arrays (`train`, `method`, `mutable`, `return_carry`, ...) are
fixed when the function is made; the call takes the variables and the array arguments:

    apply = checked_jit(model, train=False)
    logits = apply(variables, tokens)                                  # InputError if invalid

Inside a jitted function of your own, functionalize the checks with checkify and turn the error
into an InputError with `throw`:

    @jax.jit
    @checkify.checkify
    def loss_fn(variables, tokens):
        return checked_apply(model, variables, tokens).mean()
    err, loss = loss_fn(variables, tokens)
    throw(err)

(Staging `checked_apply` under `jit` without `checkify.checkify` fails at trace time: "Cannot
abstractly evaluate a checkify.check which was not functionalized".)

Which arguments are checked is read from the signature of the method applied (`__call__`,
`method="encode"`, ...): `tokens`, `inputs`, `decoder_inputs` (B, T) and `token` (B,) are ids;
`lengths` (B,) are lengths of the first of `tokens` / `inputs`; BERT's `segments` (B, T) and
`positions` (B, P). The recurrent models that pass `lengths` straight to their recurrent stack
(tagger, ELMo, classifier with "last" pooling) also accept a boolean (B, T) mask there.
"""
from __future__ import annotations

import functools
import inspect
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from zoo.errors import InputError

__all__ = ["checked_apply", "checked_jit", "throw", "validate_inputs"]

# Argument names holding token ids, with the rank each must have.
_ID_RANKS = {"tokens": 2, "inputs": 2, "decoder_inputs": 2, "token": 1}
_PRIMARY = ("tokens", "inputs")  # whose length T bounds `lengths` and `positions`
# Keywords of `flax.linen.Module.apply` itself, not of the method applied.
_APPLY_ONLY = frozenset({"rngs", "method", "mutable", "capture_intermediates"})
_CHECK_SUFFIX = re.compile(r"\s*\(`check` failed\)\s*$")


def _is_traced(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def _dtype(x: Any) -> np.dtype:
    return x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype


def _check_integer(name: str, x: Any, what: str) -> None:
    dtype = _dtype(x)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise InputError(f"{name}: dtype {dtype}; {what} must be integers (cast them to int32).")


def _check_rank(name: str, x: Any, rank: int, layout: str) -> tuple[int, ...]:
    shape = tuple(np.shape(x))
    if len(shape) != rank:
        raise InputError(f"{name}: shape {shape} has rank {len(shape)}; expected rank {rank}, "
                         f"{layout}.")
    return shape


def _check_range(name: str, x: Any, lo: int, hi: int, allowed: str, fix: str,
                 noun: str = "values") -> None:
    """Values of `x` must lie in [lo, hi] (inclusive); `allowed` spells the range out."""
    if np.size(x) == 0:
        return
    message = f"{name}: {noun} found in [{{lo}}, {{hi}}]; allowed {allowed}. {fix}"
    if _is_traced(x):
        x = jnp.asarray(x)
        if x.dtype.itemsize < 4:  # a bound such as 255 must not overflow the comparison
            x = x.astype(jnp.int32)
        found_lo, found_hi = jnp.min(x), jnp.max(x)
        checkify.check((found_lo >= lo) & (found_hi <= hi), message, lo=found_lo, hi=found_hi)
        return
    values = np.asarray(x)  # on the host: a jnp reduction would be staged inside a trace
    found_lo, found_hi = int(values.min()), int(values.max())
    if found_lo < lo or found_hi > hi:
        raise InputError(message.format(lo=found_lo, hi=found_hi))


def _check_ids(name: str, x: Any, rank: int, cfg: Any) -> tuple[int, ...]:
    layout = "(batch,) one token per row" if rank == 1 else "(batch, length)"
    shape = _check_rank(name, x, rank, layout)
    _check_integer(name, x, "token ids")
    max_len = getattr(cfg, "max_len", None)
    if rank == 2 and max_len is not None and shape[1] > max_len:
        raise InputError(f"{name}: length {shape[1]} exceeds the model's max_len={max_len}; "
                         f"allowed lengths [0, {max_len}]. Truncate the input or create the model "
                         f"with a larger max_len.")
    vocab = cfg.vocab_size
    _check_range(name, x, 0, vocab - 1, f"[0, vocab_size={vocab})",
                 "Check the tokenizer or create the model with a vocab_size that covers them.",
                 noun="ids")
    return shape


def _accepts_mask(model: Any) -> bool:
    """Whether `lengths` goes unchanged to a recurrent stack, which also reads a (B, T) mask."""
    from zoo.models.elmo import ELMoBiLM, ELMoEmbedder
    from zoo.models.rnn_classifier import RNNClassifier, RNNTagger

    if isinstance(model, RNNClassifier):
        return model.config.pooling == "last"
    return isinstance(model, (RNNTagger, ELMoBiLM, ELMoEmbedder))


def _check_lengths(model: Any, x: Any, batch: int | None, length: int | None,
                   primary: str | None) -> None:
    shape = tuple(np.shape(x))
    layout = "(batch,) one length per row"
    if _accepts_mask(model):
        if len(shape) == 2:
            expected = (batch, length)
            if _dtype(x) != np.bool_ or (batch is not None and shape != expected):
                raise InputError(f"lengths: a mask must be boolean with shape {expected} (that "
                                 f"of {primary}); got dtype {_dtype(x)}, shape {shape}.")
            return
        layout += " (or a boolean (batch, length) mask)"
    _check_rank("lengths", x, 1, layout)
    _check_integer("lengths", x, "lengths")
    if batch is not None and shape[0] != batch:
        raise InputError(f"lengths: {shape[0]} rows but {primary} has {batch}; give one length "
                         f"per row.")
    if length is not None:
        _check_range("lengths", x, 0, length, f"[0, T={length}] (the length of {primary})",
                     "Lengths count the valid tokens at the start of each row.")


def validate_inputs(model: Any, *args: Any, method: str | Callable | None = None,
                    **kwargs: Any) -> None:
    """Checks the token-id and length arguments that `model.apply(variables, *args,
    method=method, **kwargs)` would receive; raises InputError (see the module docstring).

    Static checks raise at once; value checks raise at once for concrete arrays and are
    `checkify.check`s for traced ones."""
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(cfg, "vocab_size"):
        raise TypeError(f"checked mode needs a zoo model with a config that has vocab_size; got "
                        f"{type(model).__name__}.")
    if method is None:
        fn = type(model).__call__
    elif isinstance(method, str):
        fn = getattr(type(model), method)
    else:
        fn = method
    try:
        bound = inspect.signature(fn).bind(model, *args, **kwargs)
    except TypeError as e:
        raise InputError(f"arguments do not match {type(model).__name__}."
                         f"{getattr(fn, '__name__', method)}: {e}.") from None
    arguments = bound.arguments

    shapes: dict[str, tuple[int, ...]] = {}
    for name, rank in _ID_RANKS.items():
        if arguments.get(name) is not None:
            shapes[name] = _check_ids(name, arguments[name], rank, cfg)
    primary = next((n for n in _PRIMARY if n in shapes), None)
    batch, length = shapes[primary] if primary else (None, None)

    for name in ("segments", "positions"):
        x = arguments.get(name)
        if x is None:
            continue
        shape = _check_rank(name, x, 2, "(batch, length)" if name == "segments" else
                            "(batch, number of positions)")
        _check_integer(name, x, "token type ids" if name == "segments" else "positions")
        if batch is not None and shape[0] != batch:
            raise InputError(f"{name}: {shape[0]} rows but {primary} has {batch}.")
        if name == "segments":
            if primary is not None and shape != shapes[primary]:
                raise InputError(f"segments: shape {shape} differs from {primary}'s "
                                 f"{shapes[primary]}; give one token type per token.")
            types = getattr(cfg, "type_vocab_size", None)
            if types is not None:
                _check_range(name, x, 0, types - 1, f"[0, type_vocab_size={types})",
                             "Segments are the sentence A / B ids.")
        elif length is not None:
            _check_range(name, x, 0, length - 1, f"[0, T={length}) (the positions of {primary})",
                         "Positions index the tokens the MLM head predicts.")

    if arguments.get("lengths") is not None:
        _check_lengths(model, arguments["lengths"], batch, length, primary)


def checked_apply(model: Any, variables: Any, *args: Any, **kwargs: Any) -> Any:
    """`model.apply(variables, *args, **kwargs)` after `validate_inputs`; the same outputs.

    Eagerly it raises InputError for invalid inputs. Traced, it needs `checkify.checkify`
    around it (or use `checked_jit`); see the module docstring."""
    validate_inputs(model, *args, method=kwargs.get("method"),
                    **{k: v for k, v in kwargs.items() if k not in _APPLY_ONLY})
    return model.apply(variables, *args, **kwargs)



def throw(err: checkify.Error) -> None:
    """Raises the failed check of a `checkify.checkify`-ed function as an InputError."""
    message = err.get()
    if message is not None:
        raise InputError(_CHECK_SUFFIX.sub("", message))


def _wraps_under_jit(tree: Any) -> bool:
    """Whether `tree` holds a host array of 64-bit integers that `jax.jit` converts to 32 bits
    (without jax_enable_x64), wrapping values outside the int32 / uint32 range: those are
    checked on the host before the call."""
    if jax.config.jax_enable_x64:
        return False
    return any(isinstance(x, (np.ndarray, np.generic)) and x.dtype.kind in "iu"
               and x.dtype.itemsize == 8 for x in jax.tree.leaves(tree))


def checked_jit(model: Any, **static_kwargs: Any) -> Callable[..., Any]:
    """A jitted `checked_apply(model, variables, *args, **static_kwargs, **kwargs)` that raises
    InputError after the call when a value check failed.

    `static_kwargs` are the non-array keywords (`train`, `method`, `mutable`, `return_carry`,
    ...), fixed here; the returned function takes the variables, the positional arrays and
    array (or None) keywords (`lengths`, `rngs`, `initial_carry`, ...). Static problems (dtype,
    rank, length) raise while tracing, before anything runs."""

    def run(variables, *args, **kwargs):
        return checked_apply(model, variables, *args, **static_kwargs, **kwargs)

    compiled = jax.jit(checkify.checkify(run))

    @functools.wraps(run)
    def call(variables, *args, **kwargs):
        if _wraps_under_jit((args, kwargs)):  # jit would wrap 2^32 + 1 to the valid id 1
            validate_inputs(model, *args, method=static_kwargs.get("method"),
                            **{k: v for k, v in {**static_kwargs, **kwargs}.items()
                               if k not in _APPLY_ONLY})
        err, out = compiled(variables, *args, **kwargs)
        throw(err)
        return out

    return call
