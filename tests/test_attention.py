"""The zoo's CPU forms of attention (head-major, blocked causal) equal `jax.nn`'s XLA
attention, values and gradients, with and without padding masks."""
import chex
import jax
import jax.numpy as jnp
import pytest

from zoo.nn.attention import (
    blocked_causal_attention,
    causal_attention,
    choose_implementation,
    dot_product_attention,
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


# ------------------------------------------------------------------------------------------
# Which kernel runs: `choose_implementation` is a pure function, so every case is checked here
# on CPU; tests/test_attention_gpu.py runs the chosen kernels on a GPU.

def _choose(platform="cuda", dtype=jnp.bfloat16, head_dim=64, q_len=1024, kv_len=1024,
            mask_kind="causal", requested=None):
    return choose_implementation(requested, platform=platform, dtype=dtype, head_dim=head_dim,
                                 q_len=q_len, kv_len=kv_len, mask_kind=mask_kind)


@pytest.mark.parametrize("mask_kind", ["none", "causal", "lengths", "causal_lengths",
                                       "decode_step"])
def test_cuda_picks_cudnn_for_every_mask_it_supports(mask_kind):
    q_len = 1 if mask_kind == "decode_step" else 1024
    assert _choose(mask_kind=mask_kind, q_len=q_len) == "cudnn"
    assert _choose(mask_kind=mask_kind, q_len=q_len, dtype=jnp.float16) == "cudnn"


@pytest.mark.parametrize("case,why", [
    (dict(dtype=jnp.float32), "cuDNN flash attention is bf16/fp16 only"),
    (dict(head_dim=60), "head width not a multiple of 8"),
    (dict(head_dim=256), "head width above 128"),
    (dict(mask_kind="dense"), "an arbitrary boolean mask"),
    (dict(mask_kind="causal", q_len=5, kv_len=9), "causal with T != S"),
])
def test_cuda_falls_back_to_xla(case, why):
    assert _choose(**case) == "xla", why


def test_cross_attention_with_key_lengths_uses_cudnn():
    assert _choose(mask_kind="lengths", q_len=37, kv_len=512) == "cudnn"


def test_cpu_picks_the_zoos_form_and_rocm_xla():
    for kind in ("none", "causal", "lengths", "dense", "decode_step"):
        assert _choose(platform="cpu", mask_kind=kind, dtype=jnp.float32) == "blocked"
        assert _choose(platform="rocm", mask_kind=kind) == "xla"


@pytest.mark.parametrize("case,expected", [
    (dict(mask_kind="causal"), "pallas"),
    (dict(mask_kind="lengths", dtype=jnp.float32), "pallas"),
    (dict(mask_kind="none", q_len=1000, kv_len=1000), "xla"),  # not whole 128-blocks
    (dict(mask_kind="dense"), "xla"),
    (dict(mask_kind="decode_step", q_len=1), "xla"),
])
def test_tpu_picks_pallas_flash_where_it_applies(case, expected):
    assert _choose(platform="tpu", **case) == expected


def test_requested_implementation_wins_except_for_dense_masks():
    assert _choose(requested="xla") == "xla"
    assert _choose(platform="cpu", requested="xla") == "xla"
    assert _choose(requested="blocked") == "blocked"
    assert _choose(requested="cudnn", mask_kind="dense") == "xla"
    with pytest.raises(ValueError, match="attention_implementation must be one of"):
        _choose(requested="flash")
    with pytest.raises(ValueError, match="mask_kind"):
        _choose(mask_kind="sliding")


@pytest.mark.parametrize("platform", ["cpu", "tpu", "rocm"])
def test_cudnn_off_an_nvidia_gpu_is_refused_naming_the_platform(platform):
    for kind in ("causal", "lengths", "decode_step"):
        with pytest.raises(ValueError, match=f"needs an NVIDIA GPU.*'{platform}'.*'xla'"):
            _choose(platform=platform, requested="cudnn", mask_kind=kind)
    for kind in ("dense", "segments"):  # calls cuDNN cannot take run on XLA's on any platform
        assert _choose(platform=platform, requested="cudnn", mask_kind=kind) == "xla"
    if platform == "cpu":  # what a model forced to cuDNN meets on this CPU
        q = jnp.zeros((1, 4, 1, 8), jnp.bfloat16)
        with pytest.raises(ValueError, match="needs an NVIDIA GPU"):
            dot_product_attention(q, q, q, causal=True, implementation="cudnn")


@pytest.mark.parametrize("implementation", [None, "xla", "blocked"])
def test_key_lengths_equal_a_padding_mask(implementation):
    q, k, v = jax.random.normal(jax.random.key(10), (3, 2, 40, 2, 8))
    lengths = jnp.array([40, 17], jnp.int32)
    valid = jnp.arange(40)[None, :] < lengths[:, None]
    for causal in (False, True):
        got = dot_product_attention(q, k, v, causal=causal, key_lengths=lengths,
                                    implementation=implementation)
        expected = jax.nn.dot_product_attention(q, k, v, mask=padding_mask(valid),
                                                is_causal=causal)
        rows = valid[:, :, None, None]
        chex.assert_trees_all_close(got * rows, expected * rows, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_tpu_flash_kernel_equals_jax_nn_in_interpret_mode(causal):
    """The Pallas TPU kernel, run by Pallas's TPU interpreter on CPU, with key lengths."""
    from jax.experimental.pallas import tpu as pltpu

    q, k, v = jax.random.normal(jax.random.key(11), (3, 2, 128, 2, 64))
    lengths = jnp.array([128, 70], jnp.int32)
    valid = jnp.arange(128)[None, :] < lengths[:, None]
    rows = valid[:, :, None, None]

    def flash(q, k, v):
        return dot_product_attention(q, k, v, causal=causal, key_lengths=lengths,
                                     implementation="pallas")

    def reference(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, mask=padding_mask(valid), is_causal=causal)

    with pltpu.force_tpu_interpret_mode():  # while the forward and backward kernels are traced
        _assert_same_values_and_grads(flash, reference, q, k, v, rows=valid)
        chex.assert_trees_all_close(flash(q, k, v) * rows, reference(q, k, v) * rows, atol=1e-5)


def test_bf16_scores_and_softmax_run_in_float32():
    """In bf16 the zoo's form matches jax.nn's (which upcasts the scores) to bf16 rounding."""
    q, k, v = jax.random.normal(jax.random.key(12), (3, 2, 64, 2, 16), jnp.bfloat16)
    got = dot_product_attention(q, k, v, causal=True)
    expected = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")
    assert got.dtype == jnp.bfloat16
    chex.assert_trees_all_close(got.astype(jnp.float32), expected.astype(jnp.float32),
                                atol=2e-2)
