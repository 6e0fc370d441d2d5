"""ELMo's scalar mix (Peters et al. 2018, eq. 1): gamma * sum_j softmax(s)_j * h_j."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.nn.logical_axes import axes


class ScalarMix(nn.Module):
    """Learned weighted sum of layer representations: (L, ..., F) -> (..., F).

    Parameters: `scalars` (L,) (softmax-normalised, initialised equal) and `gamma` ().
    """

    @nn.compact
    def __call__(self, layers: jax.Array) -> jax.Array:
        scalars = self.param("scalars", axes(nn.initializers.zeros, "mix"), (layers.shape[0],))
        gamma = self.param("gamma", axes(nn.initializers.ones), ())
        weights = jax.nn.softmax(scalars).reshape((-1,) + (1,) * (layers.ndim - 1))
        return gamma * jnp.sum(weights * layers, axis=0)
