"""From logical axis names to shardings of the whole train state.

Every parameter carries logical axis names (`zoo.nn.logical_axes`: "vocab", "embed", "mlp",
"heads", "kv", "hidden", ...). Rules, pairs (logical name, mesh axis | tuple of mesh axes |
None) in order of precedence, map them onto the mesh axes ("data", "fsdp", "tensor"), the way
MaxText does:

* "batch" -> ("data", "fsdp"): every data-parallel and FSDP device gets its own rows;
* "embed" (and an RNN's "hidden") -> "fsdp": FSDP splits every weight matrix along the model
  width, so each device holds 1/fsdp of the parameters and of the Adam moments;
* "mlp", "heads", "vocab" -> "tensor": Megatron-style tensor parallelism (column-parallel
  QKV / first MLP matmul, row-parallel output projections, a vocabulary-parallel embedding);
* everything else (head width, layer axis, LayerNorm, gates, positions) is replicated.

Flax's algorithm (`nn.logical_to_mesh_axes`) uses each mesh axis at most once per array: a
kernel ("embed", "hidden") gets "fsdp" on "embed" only. A dimension that a mesh axis does not
divide evenly (GPT-2's 50,257-row vocabulary on 2 tensor devices) is left unsplit, since JAX
shards only evenly.

The optimizer state mirrors the parameters (`optax.tree_map_params`): Adam's moments get the
parameters' shardings, its step counts are replicated, as are the train state's counters.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from zoo.errors import ConfigError
from zoo.nn.logical_axes import recording_axes

MESH_AXES = ("data", "fsdp", "tensor")
Rules = tuple[tuple[str, Any], ...]

DEFAULT_RULES: Rules = (
    ("batch", ("data", "fsdp")),  # activations' batch rows
    ("length", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("hidden", "fsdp"),  # RNNs: after "embed", so an (embed, gates) kernel keeps fsdp there
    ("gates", None),
    ("norm", None),
    ("position", None),
    ("classes", None),
    ("mix", None),
    ("layers", None),
)


def axis_rules(overrides: Sequence[Sequence[Any]] = ()) -> Rules:
    """The rules in force: `overrides` (the config's `logical_axis_rules`) first, so they win,
    then DEFAULT_RULES. ConfigError if a rule is not a (name, mesh axes) pair over MESH_AXES."""
    if not isinstance(overrides, (tuple, list)) or not all(
            isinstance(rule, (tuple, list)) for rule in overrides):
        raise ConfigError(f"logical_axis_rules must be a sequence of (logical name, mesh axis) "
                          f"pairs such as (('vocab', None),); got {overrides!r}.")
    rules = tuple(tuple(rule) for rule in overrides) + DEFAULT_RULES
    for rule in rules:
        if len(rule) != 2 or not isinstance(rule[0], str):
            raise ConfigError(f"logical_axis_rules entry {rule!r} is not a pair (logical name, "
                              f"mesh axis); write e.g. ('vocab', 'tensor') or ('vocab', None).")
        targets = rule[1] if isinstance(rule[1], (tuple, list)) else (rule[1],)
        unknown = [t for t in targets if t is not None and t not in MESH_AXES]
        if unknown:
            raise ConfigError(f"logical_axis_rules entry {rule!r} names mesh axes {unknown}; "
                              f"the mesh axes are {', '.join(MESH_AXES)} (or None: replicated).")
    return tuple((name, tuple(t) if isinstance(t, list) else t) for name, t in rules)


def logical_param_specs(model: nn.Module, example_inputs: Sequence[jax.Array]) -> Any:
    """The params tree with a `PartitionSpec` of logical names per parameter, e.g.
    P("layers", "embed", "mlp") for a scanned MLP kernel. Traced with `jax.eval_shape`: no
    parameter is allocated."""
    with recording_axes():
        boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), *example_inputs))
    return nn.get_partition_spec(boxed["params"])


def _even(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """`spec` without the mesh axes that do not divide their dimension evenly."""
    dims = []
    for size, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = axes if isinstance(axes, tuple) else (axes,)
        ways = 1
        for name in names:
            ways *= mesh.shape[name] if name is not None else 1
        dims.append(axes if size % ways == 0 else None)
    return PartitionSpec(*dims)


def param_shardings(logical_specs: Any, abstract_params: Any, mesh: Mesh,
                    rules: Rules = DEFAULT_RULES) -> Any:
    """NamedShardings of the params from their logical specs (`logical_param_specs`) under
    `rules`; `abstract_params` (shapes) decides which splits are even."""
    mesh_specs = nn.logical_to_mesh(logical_specs, rules)
    return jax.tree.map(
        lambda spec, p: NamedSharding(mesh, _even(spec, p.shape, mesh)), mesh_specs,
        abstract_params, is_leaf=lambda x: isinstance(x, PartitionSpec))


def state_shardings(abstract_state: Any, params_shardings: Any, mesh: Mesh) -> Any:
    """NamedShardings for a whole `TrainState` (same pytree; `apply_fn` and `tx` kept): params
    as given, the optimizer state's parameter-shaped parts like the params, the rest
    replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_shardings = optax.tree_map_params(
        abstract_state.tx, lambda _, sharding: sharding, abstract_state.opt_state,
        params_shardings, transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, NamedSharding))
    everything_replicated = jax.tree.map(lambda _: replicated, abstract_state)
    return everything_replicated.replace(params=params_shardings, opt_state=opt_shardings)


def batch_spec(rules: Rules = DEFAULT_RULES) -> PartitionSpec:
    """The PartitionSpec of a batch leaf's leading (row) axis: the rules' "batch" entry."""
    return nn.logical_to_mesh_axes(("batch",), rules)
