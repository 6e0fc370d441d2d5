"""The zoo's CPU forms of attention (head-major, blocked causal) equal `jax.nn`'s XLA
attention, values and gradients, with and without padding masks."""
import chex
import jax
import jax.numpy as jnp
import pytest

from zoo.nn.attention import (
    blocked_causal_attention,
    causal_attention,
    head_major_attention,
    masked_attention,
    padding_mask,
)


@pytest.mark.parametrize("seq_len,block_size", [(100, 32), (64, 64), (7, 64)])
def test_blocked_equals_full_causal_attention(seq_len, block_size):
    q, k, v = jax.random.normal(jax.random.key(0), (3, 2, seq_len, 4, 8))

    def full(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, is_causal=True)

    def blocked(q, k, v):
        return blocked_causal_attention(q, k, v, block_size)

    _assert_same_values_and_grads(blocked, full, q, k, v)


@pytest.mark.parametrize("implementation", [None, "xla", "blocked"])
def test_causal_attention_implementations_agree(implementation):
    q, k, v = jax.random.normal(jax.random.key(1), (3, 2, 130, 2, 8))
    expected = jax.nn.dot_product_attention(q, k, v, is_causal=True)
    chex.assert_trees_all_close(causal_attention(q, k, v, implementation), expected, atol=1e-5)


def _assert_same_values_and_grads(ours, reference, q, k, v, rows=None):
    """`ours` and `reference` agree (at query positions `rows` (B, T) bool, default all)."""
    weight = 1.0 if rows is None else rows[:, :, None, None]
    loss = lambda f: lambda *a: jnp.sum(jnp.sin(f(*a)) * weight)  # noqa: E731
    outputs_and_grads = lambda f: jax.jit(lambda *a: (  # noqa: E731
        f(*a) * weight, jax.grad(loss(f), argnums=(0, 1, 2))(*a)))
    chex.assert_trees_all_close(outputs_and_grads(ours)(q, k, v),
                                outputs_and_grads(reference)(q, k, v), atol=1e-5)


def _padded(key, batch, seq_len):
    lengths = jax.random.randint(key, (batch,), 1, seq_len + 1).at[0].set(seq_len)
    return jnp.arange(seq_len)[None, :] < lengths[:, None]  # (B, T) bool, row 0 unpadded


def test_head_major_attention_equals_jax_nn():
    """Cross-attention shapes (T != S), a key-padding mask and a full (B, N, T, S) mask."""
    kv_len = 37
    q = jax.random.normal(jax.random.key(2), (3, 21, 2, 8))
    k, v = jax.random.normal(jax.random.key(3), (2, 3, kv_len, 2, 8))
    masks = [None, padding_mask(_padded(jax.random.key(4), 3, kv_len)),
             jax.random.bernoulli(jax.random.key(5), 0.7, (3, 2, 21, kv_len)).at[..., 0].set(True)]
    for mask in masks:
        _assert_same_values_and_grads(
            lambda q, k, v: head_major_attention(q, k, v, mask),
            lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=mask), q, k, v)


@pytest.mark.parametrize("seq_len,block_size", [(100, 32), (9, 64)])
def test_blocked_causal_attention_with_padding_equals_jax_nn(seq_len, block_size):
    """Causal + key padding (a decoder's self-attention): equal at every real query."""
    q, k, v = jax.random.normal(jax.random.key(6), (3, 3, seq_len, 2, 8))
    valid = _padded(jax.random.key(7), 3, seq_len)
    mask = padding_mask(valid)
    _assert_same_values_and_grads(
        lambda q, k, v: blocked_causal_attention(q, k, v, block_size, mask=mask),
        lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True),
        q, k, v, rows=valid)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("implementation", [None, "xla", "blocked"])
def test_masked_attention_implementations_agree(implementation, causal):
    q, k, v = jax.random.normal(jax.random.key(8), (3, 2, 70, 2, 8))
    valid = _padded(jax.random.key(9), 2, 70)
    mask = padding_mask(valid)
    expected = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal)
    out = masked_attention(q, k, v, mask, causal=causal, implementation=implementation)
    rows = valid[:, :, None, None]
    chex.assert_trees_all_close(out * rows, expected * rows, atol=1e-5)
