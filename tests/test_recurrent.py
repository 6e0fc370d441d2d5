"""Recurrent cells and scanned layers: NumPy references, masking, directions, carries, gradients."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from zoo.nn.cells import Cell, get_cell_type
from zoo.nn.recurrent import RecurrentLayer, RecurrentStack, reverse_valid

CELLS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_step(cell, p, carry, x):
    """Textbook equations with separate per-gate matrices sliced out of the packed params."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    x = np.asarray(x, np.float64)
    h = np.asarray(carry[0], np.float64)
    hidden = h.shape[-1]

    def gate(j):
        sl = slice(j * hidden, (j + 1) * hidden)
        return x @ p["input_kernel"][:, sl] + p["bias"][sl], h @ p["hidden_kernel"][:, sl]

    if cell.startswith("rnn"):
        xi, hi = gate(0)
        act = np.tanh if cell == "rnn_tanh" else (lambda v: np.maximum(v, 0))
        return (act(xi + hi),)
    if cell == "lstm":
        c = np.asarray(carry[1], np.float64)
        i, f, g, o = (sum(gate(j)) for j in range(4))
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        return _sigmoid(o) * np.tanh(c), c
    (xr, hr), (xz, hz), (xn, hn) = gate(0), gate(1), gate(2)
    r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
    n = np.tanh(xn + r * (hn + p["hidden_bias"]))
    return ((1 - z) * n + z * h,)


def _random_carry(cell, batch, hidden, key):
    parts = get_cell_type(cell).carry_parts
    return tuple(jax.random.normal(k, (batch, hidden)) for k in jax.random.split(key, parts))


@pytest.mark.parametrize("cell", CELLS)
def test_cell_matches_numpy_reference(cell):
    module = Cell(cell=cell, hidden_size=5)
    x = jax.random.normal(jax.random.key(0), (3, 4))
    carry = _random_carry(cell, 3, 5, jax.random.key(1))
    params = module.init(jax.random.key(2), carry, x)["params"]
    # Random biases so every parameter matters.
    params = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(3), a.shape), params)
    new_carry, h = module.apply({"params": params}, carry, x)
    expected = numpy_step(cell, params, carry, x)
    chex.assert_trees_all_close(new_carry, tuple(np.float32(e) for e in expected), atol=1e-5)
    chex.assert_trees_all_close(h, new_carry[0])


def test_lstm_forget_bias_starts_at_one():
    params = Cell(cell="lstm", hidden_size=3).init(
        jax.random.key(0), _random_carry("lstm", 1, 3, jax.random.key(1)), jnp.ones((1, 2)))
    np.testing.assert_array_equal(params["params"]["bias"], [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("unroll", [1, 3])
def test_layer_equals_cell_loop(cell, unroll):
    """The scanned layer with a hoisted input matmul equals stepping the cell module."""
    x = jax.random.normal(jax.random.key(0), (2, 7, 4))
    layer = RecurrentLayer(cell, 5, unroll=unroll)
    carry0 = _random_carry(cell, 2, 5, jax.random.key(1))
    params = layer.init(jax.random.key(2), x, None, carry0)["params"]
    ys, carry = layer.apply({"params": params}, x, None, carry0)
    step = Cell(cell=cell, hidden_size=5)
    c, expected = carry0, []
    for t in range(x.shape[1]):
        c, h = step.apply({"params": params}, c, x[:, t])
        expected.append(h)
    chex.assert_trees_all_close(ys, jnp.stack(expected, 1), atol=1e-5)
    chex.assert_trees_all_close(carry, c, atol=1e-5)


def test_reverse_valid_reverses_each_prefix():
    x = jnp.arange(10).reshape(2, 5)
    np.testing.assert_array_equal(reverse_valid(x, jnp.array([3, 5])),
                                  [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]])


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_padding_never_changes_valid_outputs_or_final_states(cell):
    """Row b padded to T equals row b run alone on its true length, in both directions."""
    stack = RecurrentStack(cell, 6, num_layers=2, bidirectional=True)
    lengths = jnp.array([5, 2, 7])
    x = jax.random.normal(jax.random.key(0), (3, 7, 4))
    params = stack.init(jax.random.key(1), x, lengths)["params"]
    ys, carry = stack.apply({"params": params}, x, lengths)
    noise = jax.random.normal(jax.random.key(2), x.shape) * 100
    pad = jnp.arange(7)[None, :, None] >= lengths[:, None, None]
    ys_noisy, carry_noisy = stack.apply({"params": params}, jnp.where(pad, noise, x), lengths)
    chex.assert_trees_all_close((ys, carry), (ys_noisy, carry_noisy), atol=1e-6)
    mask = jnp.arange(7)[None, :] < lengths[:, None]  # a (B, T) mask works like lengths
    chex.assert_trees_all_close(stack.apply({"params": params}, x, mask), (ys, carry), atol=1e-6)
    for b, n in enumerate(lengths.tolist()):
        ys_b, carry_b = stack.apply({"params": params}, x[b:b + 1, :n])
        chex.assert_trees_all_close(ys[b:b + 1, :n], ys_b, atol=1e-5)
        chex.assert_trees_all_close(tuple(p[:, b:b + 1] for p in carry), carry_b, atol=1e-5)
        np.testing.assert_array_equal(ys[b, n:], 0.0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bidirectional_equals_two_separate_passes(cell):
    x = jax.random.normal(jax.random.key(0), (2, 6, 3))
    stack = RecurrentStack(cell, 4, bidirectional=True)
    params = stack.init(jax.random.key(1), x)["params"]
    ys, carry = stack.apply({"params": params}, x)
    fwd_out, fwd_carry = RecurrentLayer(cell, 4).apply(
        {"params": params["layer0_forward"]}, x)
    rev_out, rev_carry = RecurrentLayer(cell, 4).apply(
        {"params": params["layer0_backward"]}, x[:, ::-1])
    chex.assert_trees_all_close(ys, jnp.concatenate([fwd_out, rev_out[:, ::-1]], -1), atol=1e-6)
    chex.assert_trees_all_close(carry, tuple(jnp.stack(p) for p in zip(fwd_carry, rev_carry)),
                                atol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
def test_carry_threads_through_truncated_bptt_chunks(cell):
    x = jax.random.normal(jax.random.key(0), (2, 8, 3))
    stack = RecurrentStack(cell, 4, num_layers=2)
    params = stack.init(jax.random.key(1), x)["params"]
    full, full_carry = stack.apply({"params": params}, x)
    first, carry = stack.apply({"params": params}, x[:, :5])
    second, carry = stack.apply({"params": params}, x[:, 5:], initial_carry=carry)
    chex.assert_trees_all_close(jnp.concatenate([first, second], 1), full, atol=1e-5)
    chex.assert_trees_all_close(carry, full_carry, atol=1e-5)
    assert carry[0].shape == (2, 2, 4)  # (layers * directions, B, H)


def test_inter_layer_dropout_only_in_training():
    x = jnp.ones((2, 5, 3))
    stack = RecurrentStack("lstm", 8, num_layers=2, dropout_rate=0.5)
    params = stack.init(jax.random.key(0), x)["params"]
    eval_a, _ = stack.apply({"params": params}, x)
    eval_b, _ = stack.apply({"params": params}, x)
    train_a, _ = stack.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(1)})
    train_b, _ = stack.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(2)})
    np.testing.assert_array_equal(eval_a, eval_b)
    assert not np.allclose(train_a, train_b)


@pytest.mark.parametrize("padded", [True, False])
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_finite_differences(cell, padded):
    with jax.enable_x64(True):
        _check_cell_grads(cell, jnp.array([4, 2]) if padded else None)


def _check_cell_grads(cell, lengths):
    layer = RecurrentLayer(cell, 3)
    x = jax.random.normal(jax.random.key(0), (2, 4, 2), jnp.float64)
    params = jax.tree.map(lambda a: a.astype(jnp.float64),
                          layer.init(jax.random.key(1), x, lengths)["params"])

    carry0 = tuple(c.astype(jnp.float64) for c in _random_carry(cell, 2, 3, jax.random.key(2)))

    def loss(params, x, carry0):
        ys, carry = layer.apply({"params": params}, x, lengths, carry0)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(c ** 2) for c in carry)

    check_grads(loss, (params, x, carry0), order=1, modes=["rev"], atol=1e-6, rtol=1e-6,
                eps=1e-6)


@pytest.mark.parametrize("vocab", [5, 64])  # fewer / more table rows than the 2 * 7 tokens
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_stack_reading_token_ids_equals_embedded_inputs(cell, vocab):
    """stack(tokens, embedding=E) == stack(E[tokens]): values and gradients."""
    tokens = jax.random.randint(jax.random.key(0), (2, 7), 0, vocab)
    embedding = jax.random.normal(jax.random.key(1), (vocab, 4))
    stack = RecurrentStack(cell, 6, num_layers=2, bidirectional=True)
    params = stack.init(jax.random.key(2), embedding[tokens])["params"]
    chex.assert_trees_all_equal_shapes(
        params, stack.init(jax.random.key(2), tokens, embedding=embedding)["params"])

    def loss(params, embedding, by_ids):
        if by_ids:
            ys, carry = stack.apply({"params": params}, tokens, embedding=embedding)
        else:
            ys, carry = stack.apply({"params": params}, jnp.take(embedding, tokens, axis=0))
        return jnp.sum(jnp.sin(ys)) + jnp.sum(carry[0] ** 2), ys

    grads_ids, ys_ids = jax.grad(loss, (0, 1), has_aux=True)(params, embedding, True)
    grads, ys = jax.grad(loss, (0, 1), has_aux=True)(params, embedding, False)
    chex.assert_trees_all_close(ys_ids, ys, atol=1e-6)
    chex.assert_trees_all_close(grads_ids, grads, atol=1e-5, rtol=1e-5)
