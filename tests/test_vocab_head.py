"""The padded output head and the chunked cross entropy: same logits, loss and gradients as the
plain forms, parameter counts unchanged by the padding."""
import chex
import jax
import jax.numpy as jnp
import pytest

import zoo
from zoo.nn.vocab_head import dense_head, pad_multiple, padded_size, tied_head
from zoo.tasks.base import token_cross_entropy
from zoo.tasks.losses import head_cross_entropy

B, T, D, V = 3, 10, 16, 37


@pytest.fixture(scope="module")
def data():
    k = jax.random.split(jax.random.key(0), 5)
    return dict(features=jax.random.normal(k[0], (B, T, D)),
                table=jax.random.normal(k[1], (V, D)),
                bias=jax.random.normal(k[2], (V,)),
                targets=jax.random.randint(k[3], (B, T), 0, V),
                weights=(jax.random.uniform(k[4], (B, T)) > 0.3).astype(jnp.float32))


def test_padded_size_and_platform_default():
    assert padded_size(50257, 128) == 50304 and padded_size(256, 128) == 256
    assert pad_multiple(None) == 1  # the tests run on CPU: no padding there
    assert pad_multiple(64) == 64
    with pytest.raises(ValueError, match="vocab_pad_multiple"):
        pad_multiple(0)


@pytest.mark.parametrize("multiple", [1, 16, 128])
def test_padded_head_logits_equal_plain_logits(data, multiple):
    head = tied_head(data["features"], data["table"], bias=data["bias"], multiple=multiple)
    assert head.kernel.shape == (D, padded_size(V, multiple))
    expected = data["features"] @ data["table"].T + data["bias"][None, None]
    chex.assert_trees_all_close(head.logits(), expected, atol=1e-5)
    padded = head.padded_logits()
    assert bool(jnp.all(jnp.argmax(padded, -1) < V))  # padding columns never win
    untied = dense_head(data["features"], data["table"].T, data["bias"], multiple=multiple)
    chex.assert_trees_all_close(untied.logits(), expected, atol=1e-5)


@pytest.mark.parametrize("multiple,chunk", [(1, 100), (128, 7), (16, 30), (1, 1)])
def test_chunked_cross_entropy_equals_plain_loss_and_gradients(data, multiple, chunk):
    def plain(features, table, bias):
        logits = features @ table.T + bias[None, None]
        return token_cross_entropy(logits, data["targets"], data["weights"])

    def fused(features, table, bias):
        head = tied_head(features, table, bias=bias, multiple=multiple)
        return head_cross_entropy(head, data["targets"], data["weights"], chunk)

    args = (data["features"], data["table"], data["bias"])
    chex.assert_trees_all_close(jax.jit(fused)(*args), plain(*args), atol=1e-4)
    grad = lambda f: jax.jit(jax.grad(lambda *a: 2.5 * f(*a)[0], argnums=(0, 1, 2)))  # noqa: E731
    chex.assert_trees_all_close(grad(fused)(*args), grad(plain)(*args), atol=1e-4)


def test_bf16_head_keeps_float32_logits_and_gradient_dtypes(data):
    head = tied_head(data["features"], data["table"], multiple=128, dtype=jnp.bfloat16)
    assert head.kernel.dtype == jnp.bfloat16 and head.logits().dtype == jnp.float32

    def loss(features, table):
        h = tied_head(features, table, multiple=128, dtype=jnp.bfloat16)
        return head_cross_entropy(h, data["targets"], data["weights"], 8)[0]

    g_features, g_table = jax.grad(loss, argnums=(0, 1))(data["features"], data["table"])
    assert g_features.dtype == jnp.float32 and g_table.dtype == jnp.float32
    exact = jax.grad(lambda f, t: token_cross_entropy(f @ t.T, data["targets"],
                                                      data["weights"])[0], argnums=(0, 1))
    chex.assert_trees_all_close((g_features, g_table), exact(data["features"], data["table"]),
                                atol=0.05, rtol=0.05)


@pytest.mark.parametrize("name,overrides", [
    ("gpt_tiny", dict(vocab_size=300, emb_dim=32, num_heads=2, num_layers=1, mlp_dim=64)),
    ("bert_tiny", dict(vocab_size=300, emb_dim=32, num_heads=2, num_layers=1, mlp_dim=64)),
])
def test_vocab_padding_changes_no_parameter_and_no_logit(name, overrides):
    tokens = jax.random.randint(jax.random.key(1), (2, 12), 1, 300)
    plain = zoo.create_model(name, **overrides, vocab_pad_multiple=1)
    padded = zoo.create_model(name, **overrides, vocab_pad_multiple=128)
    params = plain.init(jax.random.key(2), tokens)["params"]
    chex.assert_trees_all_equal_shapes(params, padded.init(jax.random.key(2), tokens)["params"])
    logits = plain.apply({"params": params}, tokens)
    assert logits.shape[-1] == 300
    chex.assert_trees_all_close(padded.apply({"params": params}, tokens), logits, atol=1e-5)
    head = padded.apply({"params": params}, tokens, output_head=True)
    assert head.kernel.shape[-1] == 384 and head.vocab_size == 300
