"""zoo.nn.dense.dense_dot_general: same values and gradients as lax.dot_general in Flax layers."""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.nn.dense import dense_dot_general, matmul_2d
from zoo.nn.logical_axes import on_mesh
from zoo.train.partitioning import DEFAULT_RULES

LAYERS = {
    "dense": (lambda dg: nn.Dense(6, dot_general=dg), (2, 5, 4)),  # K < N: plain matmul
    "narrowing": (lambda dg: nn.Dense(3, dot_general=dg), (2, 5, 8)),  # K >= N: kernelᵀ form
    "qkv": (lambda dg: nn.DenseGeneral((3, 2, 4), dot_general=dg), (2, 5, 8)),
    "out": (lambda dg: nn.DenseGeneral(8, axis=(-2, -1), dot_general=dg), (2, 5, 2, 4)),
    "batch_dims": (lambda dg: nn.DenseGeneral(3, axis=-1, batch_dims=(0,), dot_general=dg),
                   (2, 5, 4)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_values_and_gradients_equal_lax_dot_general(name):
    make, shape = LAYERS[name]
    x = jax.random.normal(jax.random.key(0), shape)
    params = make(None).init(jax.random.key(1), x)

    def loss(layer, p, x):
        return jnp.sum(jnp.sin(layer.apply(p, x)))

    ref = jax.value_and_grad(loss, argnums=(1, 2))(make(None), params, x)
    got = jax.value_and_grad(loss, argnums=(1, 2))(make(dense_dot_general), params, x)
    for r, g in zip(jax.tree.leaves(ref), jax.tree.leaves(got), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-5, atol=1e-6)


def test_second_order_and_vmap():
    w = jax.random.normal(jax.random.key(0), (4, 3))
    x = jax.random.normal(jax.random.key(1), (7, 4))
    dims = (((1,), (0,)), ((), ()))

    def f(w, dot):
        return jnp.sum(jnp.tanh(dot(x, w, dims)) ** 2)

    np.testing.assert_allclose(jax.jvp(jax.grad(lambda w: f(w, dense_dot_general)), (w,), (w,))[1],
                               jax.jvp(jax.grad(lambda w: f(w, jax.lax.dot_general)), (w,), (w,))[1],
                               rtol=1e-5)
    batched = jax.vmap(lambda xi: dense_dot_general(xi, w, dims))(x[:, None])
    np.testing.assert_allclose(batched[:, 0], x @ w, rtol=1e-6)


@pytest.mark.parametrize("shape, dtype, accumulate", [
    ((16, 8), jnp.float32, None), ((8, 16), jnp.float32, None),
    ((8, 16), jnp.bfloat16, jnp.float32),  # bf16 operands, f32 result (the vocab head's form)
])
def test_matmul_on_a_mesh_has_autodiffs_gradients(shape, dtype, accumulate):
    """Under the mesh path's axis rules the 2-D matmul uses its own VJP (the weight gradient
    from one dot, no transpose); values and gradients (in the operands' dtypes) are autodiff's."""
    x = jax.random.normal(jax.random.key(0), (5, shape[0])).astype(dtype)
    w = jax.random.normal(jax.random.key(1), shape).astype(dtype)

    def loss(x, w):
        return jnp.sum(jnp.sin(matmul_2d(x, w, preferred_element_type=accumulate)))

    expected = jax.value_and_grad(loss, argnums=(0, 1))(x, w)
    with nn.logical_axis_rules(DEFAULT_RULES):
        assert on_mesh()
        got = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, w)
    assert [g.dtype for g in got[1]] == [dtype, dtype]
    tolerance = 1e-5 if dtype == jnp.float32 else 2e-2
    chex.assert_trees_all_close(got, expected, rtol=tolerance, atol=tolerance)
