"""RNN encoder-decoder models: attention masking, step decoding == teacher forcing, overfitting."""
import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zoo
from zoo.models.seq2seq import PRESETS, Seq2Seq, Seq2SeqConfig, Seq2SeqDecoder
from zoo.nn.rnn_attention import BahdanauAttention, LuongAttention
from zoo.models import get_spec
from zoo.special_tokens import BOS_ID, EOS_ID, PAD_ID

V = 12
TINY = {"vocab_size": V, "emb_dim": 8, "hidden_size": 16, "dropout_rate": 0.0}


def _source():
    """(3, 6) source ids with lengths 6, 3 and 1 (PAD_ID after each row's real ids)."""
    src = np.random.default_rng(0).integers(4, V, (3, 6)).astype(np.int32)
    src[1, 3:] = PAD_ID
    src[2, 1:] = PAD_ID
    return src


def _decoder_inputs(batch=3, length=5):
    tokens = np.random.default_rng(1).integers(4, V, (batch, length)).astype(np.int32)
    tokens[:, 0] = BOS_ID
    return tokens


ATTENTIONS = {
    "bahdanau": lambda: BahdanauAttention(8),
    "luong_dot": lambda: LuongAttention("dot"),
    "luong_general": lambda: LuongAttention("general", query_size=6),
}


@pytest.mark.parametrize("kind", list(ATTENTIONS))
def test_attention_weights_are_a_distribution_over_valid_positions(kind):
    attention = ATTENTIONS[kind]()
    k1, k2 = jax.random.split(jax.random.key(0))
    key_width = 6
    query = jax.random.normal(k1, (3, 6))
    keys = jax.random.normal(k2, (3, 5, key_width))
    mask = jnp.arange(5)[None, :] < jnp.array([5, 2, 0])[:, None]  # the last row is empty
    variables = attention.init(jax.random.key(2), query, keys, mask)
    context, weights = attention.apply(variables, query, keys, mask)
    chex.assert_shape(context, (3, key_width))
    chex.assert_shape(weights, (3, 5))
    np.testing.assert_allclose(jnp.sum(weights, -1), [1.0, 1.0, 0.0], atol=1e-6)
    assert np.all(np.asarray(weights)[~np.asarray(mask)] == 0.0)
    assert np.all(np.asarray(weights)[np.asarray(mask)] > 0.0)
    np.testing.assert_allclose(context, jnp.einsum("bs,bsh->bh", weights, keys), atol=1e-6)
    # The key projection kept from `project_keys` gives the same result.
    projected = attention.apply(variables, keys, method="project_keys")
    again = attention.apply(variables, query, keys, mask, projected_keys=projected)
    chex.assert_trees_all_close(again, (context, weights), atol=1e-6)
    # Padding positions' contents are ignored.
    noisy = jnp.where(mask[..., None], keys, 100.0)
    _, noisy_weights = attention.apply(variables, query, noisy, mask)
    np.testing.assert_allclose(noisy_weights, weights, atol=1e-6)


def test_luong_dot_needs_equal_widths():
    attention = LuongAttention("dot")
    with pytest.raises(ValueError, match="query width"):
        attention.init(jax.random.key(0), jnp.ones((2, 4)), jnp.ones((2, 3, 5)),
                       jnp.ones((2, 3), bool))


# Every decoder kind: (cell, bidirectional encoder, attention, input feeding, layers).
VARIANTS = [
    ("lstm", False, "none", False, 2),
    ("gru", True, "none", False, 1),
    ("lstm", True, "bahdanau", False, 1),
    ("gru", False, "bahdanau", False, 2),
    ("lstm", False, "luong_general", True, 2),
    ("gru", True, "luong_general", False, 1),
    ("lstm", False, "luong_dot", True, 1),
]


def _init(model, src, dec, seed=0):
    """Random parameters of the right shapes without compiling `model.init` (its orthogonal
    initialiser's QR decomposition is slow to compile): N(0, 1 / fan_in) kernels, zero biases."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), src, dec))["params"]
    rng = np.random.default_rng(seed)

    def draw(shape):
        if len(shape.shape) < 2:
            return jnp.zeros(shape.shape, shape.dtype)
        return jnp.asarray(rng.normal(size=shape.shape) / np.sqrt(shape.shape[0]), shape.dtype)

    return jax.tree.map(draw, shapes)


def _greedy(decoder, params, src, steps):
    """Greedy decoding through start / step, one compiled program -> tokens (B, steps)."""
    def run(params, src):
        logits, state = decoder.start(params, src)

        def body(carry, _):
            logits, state = carry
            token = jnp.argmax(logits, -1).astype(jnp.int32)
            return decoder.step(params, state, token), token

        _, tokens = jax.lax.scan(body, (logits, state), None, length=steps)
        return tokens.T

    return jax.jit(run)(params, src)


@pytest.mark.parametrize("cell,bidirectional,attention,input_feeding,layers", VARIANTS)
def test_step_decoding_equals_teacher_forcing(cell, bidirectional, attention, input_feeding,
                                              layers):
    model = Seq2Seq(Seq2SeqConfig(**TINY, cell=cell, bidirectional_encoder=bidirectional,
                                  attention=attention, input_feeding=input_feeding,
                                  num_layers=layers))
    src, dec = _source(), _decoder_inputs()
    padded = np.pad(src, ((0, 0), (0, 3)), constant_values=PAD_ID)
    params = _init(model, src, dec)
    decoder = Seq2SeqDecoder(model)

    @jax.jit
    def run(params, src, padded, dec):
        forward = model.apply({"params": params}, src, dec, return_attention=True)
        padded_forward = model.apply({"params": params}, padded, dec, return_attention=True)
        first, state = decoder.start(params, src)

        def body(state, token):
            logits, state = decoder.step(params, state, token)
            return state, logits

        _, rest = jax.lax.scan(body, state, dec[:, 1:].T)
        stepped = jnp.concatenate([first[:, None], jnp.swapaxes(rest, 0, 1)], axis=1)
        return forward, padded_forward, stepped

    (logits, weights), (padded_logits, padded_weights), stepped = run(params, src, padded, dec)
    chex.assert_shape(logits, (3, 5, V))
    np.testing.assert_allclose(stepped, logits, atol=1e-5)
    # More padding on the source changes nothing.
    np.testing.assert_allclose(padded_logits, logits, atol=1e-5)
    if attention == "none":
        assert weights is None and padded_weights is None
        return
    chex.assert_shape(weights, (3, 5, 6))
    mask = src != PAD_ID
    np.testing.assert_allclose(jnp.sum(weights, -1), 1.0, atol=1e-5)
    assert np.all(np.asarray(weights)[np.broadcast_to(~mask[:, None], weights.shape)] == 0.0)
    np.testing.assert_allclose(padded_weights[..., :6], weights, atol=1e-5)
    np.testing.assert_array_equal(padded_weights[..., 6:], 0.0)


def test_decoder_state_is_batch_major_and_gathers_rows():
    model = Seq2Seq(Seq2SeqConfig(**TINY, num_layers=2, attention="luong_general",
                                  input_feeding=True))
    src, dec = _source(), _decoder_inputs()
    params = _init(model, src, dec)
    decoder = Seq2SeqDecoder(model)
    start, step = jax.jit(decoder.start), jax.jit(decoder.step)
    index = jnp.array([2, 0, 1])
    _, state = start(params, src)
    for leaf in jax.tree.leaves(state):
        assert leaf.shape[0] == 3, leaf.shape
    gathered, _ = step(params, decoder.gather_state(state, index), dec[index, 1])
    expected, _ = step(params, start(params, src[index])[1], dec[index, 1])
    np.testing.assert_allclose(gathered, expected, atol=1e-5)


def _reverse_pairs(count=8, length=4):
    """Sources of `length` real symbols; targets = the reversed symbols then EOS."""
    rng = np.random.default_rng(0)
    src = rng.integers(4, V, (count, length)).astype(np.int32)
    targets = np.concatenate([src[:, ::-1], np.full((count, 1), EOS_ID, np.int32)], 1)
    dec = np.concatenate([np.full((count, 1), BOS_ID, np.int32), targets[:, :-1]], 1)
    return src, dec, targets


def test_tiny_model_learns_to_reverse_strings():
    model = Seq2Seq(Seq2SeqConfig(vocab_size=V, emb_dim=16, hidden_size=32, num_layers=1,
                                  attention="luong_general", input_feeding=True,
                                  dropout_rate=0.0))
    src, dec, targets = _reverse_pairs()
    params = _init(model, src, dec)
    tx = optax.adam(2e-2)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state):
        def loss_fn(p):
            logits = model.apply({"params": p}, src, dec)
            return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    for _ in range(100):
        params, opt_state, loss = train_step(params, opt_state)
    assert float(loss) < 0.05, float(loss)
    # Greedy decoding through the decoder protocol reproduces the targets.
    tokens = _greedy(Seq2SeqDecoder(model), params, src, targets.shape[1])
    np.testing.assert_array_equal(tokens, targets)


def test_invalid_inputs_raise_clear_errors():
    model = Seq2Seq(Seq2SeqConfig(**TINY, attention="bahdanau", max_len=8))
    src, dec = _source(), _decoder_inputs()
    params = _init(model, src, dec)

    def apply(*args, **kwargs):
        return model.apply({"params": params}, *args, **kwargs)

    bad = src.copy()
    bad[0, 0] = V
    with pytest.raises(ValueError, match="outside"):
        apply(bad, dec)
    with pytest.raises(ValueError, match="outside"):
        apply(src, np.full_like(dec, V + 3))
    with pytest.raises(ValueError, match=r"shape \(batch, length\)"):
        apply(src[0], dec)
    with pytest.raises(ValueError, match="integer"):
        apply(src.astype(np.float32), dec)
    with pytest.raises(ValueError, match="max_len=8"):
        apply(np.pad(src, ((0, 0), (0, 3))), dec)
    with pytest.raises(ValueError, match="batch size"):
        apply(src, dec[:2])
    encoded = jax.jit(lambda p, s: model.apply({"params": p}, s, method="encode"))(params, src)
    with pytest.raises(ValueError, match=r"shape \(B,\)"):
        apply(encoded, dec[:, :1], method="decode_step")
    with pytest.raises(ValueError, match="outside"):
        apply(encoded, np.full((3,), V, np.int32), method="decode_step")


@pytest.mark.parametrize("overrides,match", [
    ({"attention": "transformer"}, "unknown attention"),
    ({"cell": "lstmx"}, "unknown cell"),
    ({"attention": "bahdanau", "input_feeding": True}, "input_feeding"),
    ({"attention": "none", "input_feeding": True}, "input_feeding"),
    ({"attention": "luong_dot", "bidirectional_encoder": True}, "luong_general"),
    ({"attention": "bahdanau", "tie_embeddings": True}, "tie_embeddings"),
])
def test_invalid_configs_raise_clear_errors(overrides, match):
    model = Seq2Seq(Seq2SeqConfig(**{**TINY, **overrides}))
    src, dec = _source(), _decoder_inputs()
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(lambda: model.init(jax.random.key(0), src, dec))


def test_tied_embeddings_share_the_target_embedding():
    model = Seq2Seq(Seq2SeqConfig(**{**TINY, "emb_dim": 16}, attention="luong_general",
                                  tie_embeddings=True))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), _source(),
                                               _decoder_inputs()))["params"]
    assert "output" not in shapes


def _param_count(name, **overrides):
    model = zoo.create_model(name, **overrides)
    src = jnp.zeros((1, 4), jnp.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), src, src))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))


def test_registry_presets_and_parameter_counts():
    assert set(zoo.list_models("seq2seq*")) >= set(PRESETS)
    for name in PRESETS:
        spec = get_spec(name)
        assert spec.task == "seq2seq" and spec.decoder_cls is Seq2SeqDecoder
        assert isinstance(zoo.create_model(name), Seq2Seq)

    cfg = zoo.get_config("seq2seq_lstm")
    v, e, h, layers = cfg.vocab_size, cfg.emb_dim, cfg.hidden_size, cfg.num_layers

    def lstm(d):  # input kernel, hidden kernel, bias
        return d * 4 * h + h * 4 * h + 4 * h

    stack = lstm(e) + (layers - 1) * lstm(h)
    expected = 2 * v * e + 2 * stack + h * v + v  # embeddings, encoder, decoder, output
    assert _param_count("seq2seq_lstm") == expected

    counts = {name: _param_count(name) for name in PRESETS}
    for name, count in counts.items():
        assert 3e5 < count < 5e6, (name, count)
    assert counts["seq2seq_gru"] < counts["seq2seq_lstm"]
    # The vocabulary size only changes the embeddings and the output layer.
    assert _param_count("seq2seq_lstm", vocab_size=v + 1) == expected + 2 * e + h + 1


def test_config_dataclass_is_frozen_and_has_no_data_options():
    fields = {f.name for f in dataclasses.fields(Seq2SeqConfig)}
    assert "reverse_source" not in fields
    with pytest.raises(dataclasses.FrozenInstanceError):
        Seq2SeqConfig().hidden_size = 3  # type: ignore[misc]
