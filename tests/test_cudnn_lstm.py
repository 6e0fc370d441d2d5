"""The cuDNN LSTM path (zoo.nn.cudnn_lstm): the zoo's params packed into cuDNN's flat layout.

On CPU the packed weights run through `jax.experimental.rnn.lstm_ref` (the pure-JAX reference of
the cuDNN call) and must equal the zoo's scan: outputs, final carries and gradients. The last
test runs cuDNN itself and needs an NVIDIA GPU:

    JAX_PLATFORMS=cuda python -m pytest tests/test_cudnn_lstm.py
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn

import zoo
from zoo.nn import cudnn_lstm
from zoo.nn.recurrent import RecurrentStack

LAYOUTS = [(1, False), (1, True), (2, False), (2, True)]  # (num_layers, bidirectional)
B, T, D, H = 3, 7, 4, 6


def _inputs(num_layers, bidirectional):
    x = jax.random.normal(jax.random.key(0), (B, T, D))
    rows = num_layers * (2 if bidirectional else 1)
    carry = tuple(jax.random.normal(k, (rows, B, H)) for k in jax.random.split(jax.random.key(1)))
    stack = RecurrentStack("lstm", H, num_layers, bidirectional)
    params = stack.init(jax.random.key(2), x)["params"]
    # Random biases, so that a bias packed into the wrong place would show.
    params = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(3), a.shape),
                          params)
    return stack, params, x, carry


@pytest.mark.parametrize("num_layers,bidirectional", LAYOUTS)
def test_packing_follows_cudnn_layout(num_layers, bidirectional):
    _, params, _, _ = _inputs(num_layers, bidirectional)
    weights = cudnn_lstm.pack_weights(params)
    assert weights.shape == (rnn.get_num_params_in_lstm(D, H, num_layers, bidirectional),)
    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(weights, D, H, num_layers, bidirectional)
    for i, name in enumerate(cudnn_lstm.layer_names(num_layers, bidirectional)):
        np.testing.assert_array_equal(w_ih[i], params[name]["input_kernel"].T)  # (4H, D_in)
        np.testing.assert_array_equal(w_hh[i], params[name]["hidden_kernel"].T)  # (4H, H)
        np.testing.assert_array_equal(b_ih[i], params[name]["bias"])
        np.testing.assert_array_equal(b_hh[i], 0.0)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("num_layers,bidirectional", LAYOUTS)
def test_reference_path_equals_the_scan(num_layers, bidirectional, padded):
    """Outputs, final carry and gradients w.r.t. params, inputs and initial carry."""
    stack, params, x, carry0 = _inputs(num_layers, bidirectional)
    lengths = jnp.array([5, 2, 7]) if padded else None

    def loss(run, params, x, carry0):
        ys, carry = run(params, x, carry0)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(c)) for c in carry), (ys, carry)

    def scan(params, x, carry0):
        return stack.apply({"params": params}, x, lengths, carry0)

    def reference(params, x, carry0):
        return cudnn_lstm.lstm_stack(params, x, lengths, carry0, reference=True)

    grad = jax.grad(loss, (1, 2, 3), has_aux=True)
    grads, (ys, carry) = grad(scan, params, x, carry0)
    grads_ref, (ys_ref, carry_ref) = grad(reference, params, x, carry0)
    chex.assert_trees_all_close((ys_ref, carry_ref), (ys, carry), atol=1e-5)
    chex.assert_trees_all_close(grads_ref, grads, atol=1e-5, rtol=1e-5)


def test_stack_module_keeps_the_scan_params_and_numbers():
    """implementation="cudnn_reference": the same params tree (names, shapes, initial values),
    token ids with an embedding table, a (B, T) mask, and dropout masks equal to the scan's."""
    tokens = jax.random.randint(jax.random.key(0), (B, T), 0, 11)
    table = jax.random.normal(jax.random.key(1), (11, D))
    mask = jnp.arange(T)[None, :] < jnp.array([7, 3, 5])[:, None]  # (B, T)
    kwargs = dict(num_layers=3, bidirectional=True, dropout_rate=0.5)
    scan = RecurrentStack("lstm", H, **kwargs)
    ref = RecurrentStack("lstm", H, **kwargs, implementation="cudnn_reference")
    params = scan.init(jax.random.key(2), tokens, mask, embedding=table)["params"]
    chex.assert_trees_all_equal(ref.init(jax.random.key(2), tokens, mask,
                                         embedding=table)["params"], params)
    for train in (False, True):
        run = dict(train=train, embedding=table, rngs={"dropout": jax.random.key(3)})
        chex.assert_trees_all_close(ref.apply({"params": params}, tokens, mask, **run),
                                    scan.apply({"params": params}, tokens, mask, **run),
                                    atol=1e-5)


def test_models_pass_the_implementation_through():
    tokens = jax.random.randint(jax.random.key(0), (2, 9), 0, 16)
    for name, kwargs in [("lstm_lm", {}), ("lstm_classifier", {"num_classes": 3}),
                         ("bilstm_tagger", {"num_classes": 3})]:
        scan = zoo.create_model(name, vocab_size=16, emb_dim=8, hidden_size=8, **kwargs)
        ref = zoo.create_model(name, vocab_size=16, emb_dim=8, hidden_size=8,
                               rnn_implementation="cudnn_reference", **kwargs)
        params = scan.init(jax.random.key(1), tokens)["params"]
        chex.assert_trees_all_close(ref.apply({"params": params}, tokens),
                                    scan.apply({"params": params}, tokens), atol=1e-5)


@pytest.mark.parametrize("overrides,message", [
    (dict(cell="gru"), "runs only the LSTM"),
    (dict(compute_dtype="bfloat16"), "computes in float32"),
    (dict(rnn_implementation="fast"), "unknown recurrent implementation"),
])
def test_unsupported_settings_are_refused(overrides, message):
    config = {"rnn_implementation": "cudnn", **overrides}
    model = zoo.create_model("lstm_lm", vocab_size=16, emb_dim=8, hidden_size=8, **config)
    with pytest.raises(ValueError, match=message):
        model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="runs where cuDNN is absent")
def test_cudnn_off_an_nvidia_gpu_is_refused_naming_the_fix():
    model = zoo.create_model("lstm_lm", vocab_size=16, emb_dim=8, hidden_size=8,
                             rnn_implementation="cudnn")
    with pytest.raises(ValueError, match="needs an NVIDIA GPU.*rnn_implementation='scan'"):
        model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))


@pytest.mark.skipif(jax.default_backend() != "gpu",
                    reason="needs an NVIDIA GPU (JAX_PLATFORMS=cuda)")
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
def test_cudnn_equals_the_scan_on_gpu(num_layers, bidirectional):
    """The real cuDNN kernel, forward and backward, against the scan (float32, no TF32)."""
    x = jax.random.normal(jax.random.key(0), (4, 33, 16))
    lengths = jnp.array([33, 1, 20, 7])
    scan = RecurrentStack("lstm", 32, num_layers, bidirectional)
    cudnn = RecurrentStack("lstm", 32, num_layers, bidirectional, implementation="cudnn")
    params = scan.init(jax.random.key(1), x)["params"]
    rows = num_layers * (2 if bidirectional else 1)
    carry0 = tuple(jax.random.normal(k, (rows, 4, 32)) for k in jax.random.split(jax.random.key(2)))

    def loss(stack, params, x, carry0):
        ys, carry = stack.apply({"params": params}, x, lengths, carry0)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(jnp.cos(c)) for c in carry), (ys, carry)

    with jax.default_matmul_precision("highest"):
        grad = jax.jit(jax.grad(loss, (1, 2, 3), has_aux=True), static_argnums=0)
        grads, out = grad(scan, params, x, carry0)
        grads_cudnn, out_cudnn = grad(cudnn, params, x, carry0)
    chex.assert_trees_all_close(out_cudnn, out, atol=1e-4)
    chex.assert_trees_all_close(grads_cudnn, grads, atol=1e-4, rtol=1e-4)
