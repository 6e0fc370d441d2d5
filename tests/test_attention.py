"""The blocked causal attention used on CPU equals the full masked form, values and gradients."""
import chex
import jax
import jax.numpy as jnp
import pytest

from zoo.nn.attention import blocked_causal_attention, causal_attention


@pytest.mark.parametrize("seq_len,block_size", [(100, 32), (64, 64), (7, 64)])
def test_blocked_equals_full_causal_attention(seq_len, block_size):
    q, k, v = jax.random.normal(jax.random.key(0), (3, 2, seq_len, 4, 8))

    def full(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, is_causal=True)

    def blocked(q, k, v):
        return blocked_causal_attention(q, k, v, block_size)

    chex.assert_trees_all_close(blocked(q, k, v), full(q, k, v), atol=1e-5)
    loss = lambda f: lambda *a: jnp.sum(jnp.sin(f(*a)))  # noqa: E731
    chex.assert_trees_all_close(
        jax.grad(loss(blocked), argnums=(0, 1, 2))(q, k, v),
        jax.grad(loss(full), argnums=(0, 1, 2))(q, k, v),
        atol=1e-5,
    )


@pytest.mark.parametrize("implementation", [None, "xla", "blocked"])
def test_causal_attention_implementations_agree(implementation):
    q, k, v = jax.random.normal(jax.random.key(1), (3, 2, 130, 2, 8))
    expected = jax.nn.dot_product_attention(q, k, v, is_causal=True)
    chex.assert_trees_all_close(causal_attention(q, k, v, implementation), expected, atol=1e-5)
