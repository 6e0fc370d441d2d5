"""Initialising a model from another run's checkpoint (e.g. a classifier from an MLM run)."""
from __future__ import annotations

from typing import Any

import jax


def _same_shapes(a: Any, b: Any) -> bool:
    if jax.tree.structure(a) != jax.tree.structure(b):
        return False
    return all(x.shape == y.shape for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def warm_start(params: dict[str, Any], source: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(params with every top-level subtree of `source` that matches in structure and shapes
    copied in, the names copied). Heads that differ (an MLM head vs a classifier) keep their
    fresh initialisation. A subtree present in both but with other shapes is a ValueError."""
    out, copied = dict(params), []
    for name, subtree in source.items():
        if name not in params:
            continue
        if not _same_shapes(params[name], subtree):
            raise ValueError(f"checkpoint subtree {name!r} does not match the model's (other "
                             "sizes or layers); warm-start from a run of the same architecture.")
        out[name] = subtree
        copied.append(name)
    return out, copied
