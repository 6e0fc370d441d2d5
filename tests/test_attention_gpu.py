"""On an NVIDIA GPU: the attention the zoo chooses by itself is cuDNN's flash attention, and it
equals XLA's (values and gradients) for every mask kind the models use. Skipped elsewhere
(tests/test_attention.py checks the choice itself on CPU).

    JAX_PLATFORMS=cuda python -m pytest tests/test_attention_gpu.py
"""
import chex
import jax
import jax.numpy as jnp
import pytest

import zoo
from zoo.nn.attention import current_platform, dot_product_attention

pytestmark = pytest.mark.skipif(
    jax.default_backend() != "gpu" or current_platform() != "cuda",
    reason="needs an NVIDIA GPU (JAX_PLATFORMS=cuda)")

TOL = dict(atol=2e-2, rtol=2e-2)  # bf16 operands, two kernels with different reduction orders


def _qkv(key, batch=2, q_len=256, kv_len=256, heads=4, head_dim=64):
    kq, kk, kv = jax.random.split(key, 3)
    shape = lambda n: (batch, n, heads, head_dim)  # noqa: E731
    return (jax.random.normal(kq, shape(q_len), jnp.bfloat16),
            jax.random.normal(kk, shape(kv_len), jnp.bfloat16),
            jax.random.normal(kv, shape(kv_len), jnp.bfloat16))


def _values_and_grads(fn, q, k, v, rows):
    def loss(q, k, v):
        return jnp.sum(jnp.sin(fn(q, k, v).astype(jnp.float32)) * rows)
    out = jax.jit(fn)(q, k, v).astype(jnp.float32) * rows
    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
    return out, jax.tree.map(lambda g: g.astype(jnp.float32), grads)


@pytest.mark.parametrize("causal,with_lengths,q_len,kv_len", [
    (True, False, 256, 256),    # GPT
    (False, True, 256, 256),    # BERT, right-padded rows
    (True, True, 256, 256),     # padded decoder self-attention
    (False, True, 40, 256),     # cross-attention over padded sources
])
def test_cudnn_equals_xla(causal, with_lengths, q_len, kv_len):
    q, k, v = _qkv(jax.random.key(0), q_len=q_len, kv_len=kv_len)
    lengths = jnp.array([kv_len, kv_len // 3], jnp.int32) if with_lengths else None
    rows = jnp.ones((2, q_len, 1, 1))
    if with_lengths and q_len == kv_len:  # padded query rows are don't-cares
        rows = (jnp.arange(q_len)[None, :] < lengths[:, None])[:, :, None, None]

    def run(impl):
        return lambda q, k, v: dot_product_attention(q, k, v, causal=causal, key_lengths=lengths,
                                                     implementation=impl)

    lowered = jax.jit(run(None)).lower(q, k, v).compile().as_text()
    assert "cudnn" in lowered.lower(), "the default should lower to cuDNN's fused attention"
    chex.assert_trees_all_close(_values_and_grads(run(None), q, k, v, rows),
                                _values_and_grads(run("xla"), q, k, v, rows), **TOL)


def test_decode_step_over_a_cache_equals_xla():
    q, _, _ = _qkv(jax.random.key(1), q_len=1)
    _, k, v = _qkv(jax.random.key(2), kv_len=256)
    lengths = jnp.array([1, 100], jnp.int32)

    def run(impl):
        return dot_product_attention(q, k, v, key_lengths=lengths, decode_step=True,
                                     implementation=impl)

    chex.assert_trees_all_close(run(None).astype(jnp.float32), run("xla").astype(jnp.float32),
                                **TOL)


def test_gpt_train_step_holds_cudnn_attention_and_greedy_decoding_matches_xla():
    from zoo.decode.sampling import generate
    from zoo.models.gpt import GPTDecoder

    overrides = dict(emb_dim=256, num_heads=4, num_layers=2, mlp_dim=512, vocab_size=1000,
                     max_len=128, dropout_rate=0.0, compute_dtype="bfloat16")
    model = zoo.create_model("gpt2_small", **overrides)
    tokens = jax.random.randint(jax.random.key(3), (2, 128), 0, 1000)
    params = model.init(jax.random.key(4), tokens)["params"]
    text = jax.jit(jax.grad(lambda p: jnp.mean(model.apply({"params": p}, tokens)))).lower(
        params).compile().as_text()
    assert text.lower().count("cudnn") >= 2  # forward and backward fused attention

    outs = {}
    for impl in (None, "xla"):
        m = zoo.create_model("gpt2_small", **overrides, attention_implementation=impl)
        outs[impl] = generate(GPTDecoder(m), params, tokens[:, :8], jax.random.key(5),
                              max_new_tokens=16, temperature=0.0)
    agree = float(jnp.mean(outs[None] == outs["xla"]))
    assert agree > 0.9, agree  # bf16 ties may flip a late token, not most of them
