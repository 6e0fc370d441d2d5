"""Logical axis names on parameters ("embed", "vocab", "mlp", "heads", ...), for sharding.

Every parameter initializer of the zoo is wrapped as `axes(init, *names)`, one name (or None)
per dimension of the parameter it creates:

    nn.Dense(mlp_dim, kernel_init=axes(init, "embed", "mlp"), bias_init=axes(zeros, "mlp"))

The wrapper draws exactly what `init` draws. Ordinarily it returns that plain array, so
`model.init` gives the same parameter tree (and values) as an unannotated model. Inside
`recording_axes()` it returns an `nn.LogicallyPartitioned` box carrying the names instead; a
scanned stack adds its "layers" name in front (`SCAN_METADATA`), and `nn.get_partition_spec`
of the boxed tree is the logical spec of every parameter (`zoo.train.partitioning` maps those
to mesh axes). Recording is meant for `jax.eval_shape` of an init: no array is allocated.

Names used (shapes: D model width, F mlp width, N heads, H head or hidden width, V vocabulary):
"vocab" V, "embed" D (and an RNN's input width), "mlp" F, "heads" N, "kv" H per head,
"hidden" an RNN's H, "gates" G*H, "norm" LayerNorm parameters, "position" max_len,
"classes" output classes, "mix" ELMo's mixed layers, "layers" the scan axis, None: unnamed.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp

_RECORDING = contextvars.ContextVar("zoo_recording_axes", default=False)

NAMES = ("vocab", "embed", "mlp", "heads", "kv", "hidden", "gates", "norm", "position",
         "classes", "mix", "layers")
# nn.scan(..., metadata_params=SCAN_METADATA): boxed params of a scanned stack get "layers".
SCAN_METADATA = {nn.PARTITION_NAME: "layers"}


@contextlib.contextmanager
def recording_axes() -> Iterator[None]:
    """Within it, `axes` initializers return `nn.LogicallyPartitioned` boxes."""
    token = _RECORDING.set(True)
    try:
        yield
    finally:
        _RECORDING.reset(token)


def on_mesh() -> bool:
    """True while logical axis rules are in force: inside the mesh path's step."""
    return bool(nn.get_logical_axis_rules())


def constrain_batch(x: jax.Array, axis: int = 0) -> jax.Array:
    """x pinned to its rows (dimension `axis`) split over the "batch" mesh axes and every
    other dimension whole: (B, T, D) activations, (B, H) carries, time-major (T, B, H) with
    axis=1.

    Without it XLA's partitioner may keep FSDP weights split along "embed" / "hidden" and
    split the activations along their width instead, all-gathering the batch (and, in a
    recurrence, exchanging data at every time step). A no-op outside `nn.logical_axis_rules`
    (pmap, plain jit)."""
    names = [None] * x.ndim
    names[axis] = "batch"
    return nn.with_logical_constraint(x, tuple(names))


def axes(init: nn.initializers.Initializer, *names: str | None) -> nn.initializers.Initializer:
    """`init`, with logical axis `names` (one per dimension) recorded under `recording_axes`."""

    def initializer(key, shape, dtype=jnp.float32):
        value = init(key, shape, dtype)
        if not _RECORDING.get():
            return value
        # No check of len(names) against `shape`: DenseGeneral draws a flattened kernel and
        # reshapes the box afterwards.
        return nn.LogicallyPartitioned(value, names)

    return initializer


def dense_axes(in_name: str | None, out_name: str | None, *,
               kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal(),
               bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()) -> dict:
    """kernel_init / bias_init keyword arguments of an `nn.Dense` (D_in, D_out), named; the
    defaults are Dense's own initializers."""
    return dict(kernel_init=axes(kernel_init, in_name, out_name),
                bias_init=axes(bias_init, out_name))


def norm_axes() -> dict:
    """scale_init / bias_init keyword arguments of an `nn.LayerNorm` (Flax's defaults), named."""
    return dict(scale_init=axes(nn.initializers.ones_init(), "norm"),
                bias_init=axes(nn.initializers.zeros_init(), "norm"))


def embed_axes(init: nn.initializers.Initializer = nn.linear.default_embed_init,
               vocab: str = "vocab", embed: str = "embed") -> nn.initializers.Initializer:
    """`embedding_init` of an `nn.Embed` (V, D) (Flax's default initializer unless given)."""
    return axes(init, vocab, embed)
