"""Shared transformer blocks, the encoder-decoder and BERT: masking, wiring, caches, sizes, losses."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo.models.transformer import TransformerDecoder
from zoo.nn.attention import MultiHeadAttention, padding_mask
from zoo.nn.transformer import EncoderBlock, MlpBlock, sinusoidal_positions
from zoo.tasks.masked_lm import mask_tokens
from zoo.tasks.seq2seq import shift_right, smoothed_cross_entropy

TINY = dict(vocab_size=23, emb_dim=32, num_heads=4, num_encoder_layers=2, num_decoder_layers=2,
            mlp_dim=48, max_len=24, dropout_rate=0.0)
BERT_TINY = dict(vocab_size=40, emb_dim=32, num_heads=4, num_layers=2, mlp_dim=48, max_len=24,
                 mask_token_id=39)


def _tokens(seed, shape, vocab):
    return jnp.asarray(np.random.default_rng(seed).integers(4, vocab, shape), jnp.int32)


@pytest.fixture(scope="module")
def seq2seq_batch():
    source = _tokens(0, (3, 9), TINY["vocab_size"]).at[0, 6:].set(0).at[2, 3:].set(0)
    targets = _tokens(1, (3, 7), TINY["vocab_size"])
    return source, targets


@pytest.mark.parametrize("scan_layers,pre_ln", [(False, False), (True, True)])
def test_cached_decoding_equals_full_forward(seq2seq_batch, scan_layers, pre_ln):
    source, targets = seq2seq_batch
    model = zoo.create_model("transformer_tiny", **TINY, scan_layers=scan_layers, pre_ln=pre_ln)
    decoder_inputs = shift_right(targets)
    params = model.init(jax.random.key(0), source, decoder_inputs)["params"]
    full = model.apply({"params": params}, source, decoder_inputs)  # (B, T, V)
    decoder = TransformerDecoder(model)
    logits, state = jax.jit(decoder.start)(params, source)
    steps, step = [logits], jax.jit(decoder.step)  # one compile for every step
    for t in range(targets.shape[1] - 1):
        logits, state = step(params, state, targets[:, t])
        steps.append(logits)
    np.testing.assert_allclose(jnp.stack(steps, 1), full, atol=2e-5)
    # beam search reorders the cache rows through gather_state
    swapped = decoder.gather_state(state, jnp.array([2, 1, 0]))
    for before, after in zip(jax.tree.leaves(state["cache"]), jax.tree.leaves(swapped["cache"])):
        if before.ndim >= 3:  # keys / values; counters are shared by every row
            expected = jnp.take(before, jnp.array([2, 1, 0]), axis=1 if scan_layers else 0)
            np.testing.assert_array_equal(after, expected)


def test_padding_is_never_attended_and_decoder_is_causal(seq2seq_batch):
    source, targets = seq2seq_batch
    model = zoo.create_model("transformer_tiny", **TINY)
    decoder_inputs = shift_right(targets)
    params = model.init(jax.random.key(0), source, decoder_inputs)["params"]
    logits = model.apply({"params": params}, source, decoder_inputs)
    # Extra padding, or different ids under an explicit padding mask, change nothing.
    longer = jnp.pad(source, ((0, 0), (0, 4)))
    np.testing.assert_allclose(model.apply({"params": params}, longer, decoder_inputs), logits,
                               atol=2e-5)
    encoded = model.apply({"params": params}, source, method="encode")  # (B, S, D)
    noise = jax.random.normal(jax.random.key(1), encoded.shape)
    noisy = jnp.where((source == 0)[..., None], noise, encoded)  # garbage at padding only
    logits_noisy = model.apply({"params": params}, noisy, source != 0, decoder_inputs,
                               method="decode")
    np.testing.assert_allclose(logits_noisy, logits, atol=2e-5)
    # Changing target token t changes no logits before t + 1.
    changed = decoder_inputs.at[:, 4].set(5)
    logits_changed = model.apply({"params": params}, source, changed)
    np.testing.assert_allclose(logits_changed[:, :4], logits[:, :4], atol=2e-5)
    assert np.abs(logits_changed[:, 4:] - logits[:, 4:]).max() > 1e-4


def test_post_ln_and_pre_ln_wiring():
    x = jax.random.normal(jax.random.key(0), (2, 5, 16))
    valid = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    mask = padding_mask(valid)
    for pre_ln in (False, True):
        block = EncoderBlock(pre_ln=pre_ln, dropout_rate=0.0, deterministic=True,
                             ln_epsilon=1e-6, dtype=jnp.float32, num_heads=2, mlp_dim=24)
        params = block.init(jax.random.key(1), x, mask)["params"]
        got, _ = block.apply({"params": params}, x, mask)

        def ln(h, p):
            h = np.asarray(h)
            mean = h.mean(-1, keepdims=True)
            var = h.var(-1, keepdims=True)
            return (h - mean) / np.sqrt(var + 1e-6) * np.asarray(p["scale"]) + np.asarray(p["bias"])

        def attn(h):
            return MultiHeadAttention(num_heads=2).apply({"params": params["attn"]}, h, mask=mask)

        def mlp(h):
            return MlpBlock(24, "relu").apply({"params": params["mlp"]}, h)

        if pre_ln:
            h = x + attn(ln(x, params["ln_attn"]))
            want = h + mlp(ln(h, params["ln_mlp"]))
        else:  # the paper's LayerNorm(x + Sublayer(x))
            h = ln(x + attn(x), params["ln_attn"])
            want = ln(h + mlp(h), params["ln_mlp"])
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_attention_against_numpy_with_padding():
    x = jax.random.normal(jax.random.key(0), (2, 4, 8))
    context = jax.random.normal(jax.random.key(1), (2, 6, 8))
    valid = jnp.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    module = MultiHeadAttention(num_heads=2, cross=True)
    params = module.init(jax.random.key(2), x, context, padding_mask(valid))["params"]
    got = module.apply({"params": params}, x, context, padding_mask(valid))
    x, context, valid = np.asarray(x), np.asarray(context), np.asarray(valid)
    params = jax.tree.map(np.asarray, params)
    q = np.einsum("btd,dnh->btnh", x, params["query"]["kernel"]) + params["query"]["bias"]
    kv = np.einsum("bsd,dcnh->bscnh", context, params["kv"]["kernel"]) + params["kv"]["bias"]
    scores = np.einsum("btnh,bsnh->bnts", q, kv[:, :, 0]) / np.sqrt(4)
    scores = np.where(valid[:, None, None, :], scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    assert np.all(probs[0, :, :, 4:] == 0)
    out = np.einsum("bnts,bsnh->btnh", probs, kv[:, :, 1])
    want = np.einsum("btnh,nhd->btd", out, params["out"]["kernel"]) + params["out"]["bias"]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_sinusoidal_positions_follow_the_paper():
    table = sinusoidal_positions(50, 8)
    pos, i = 13, 2
    assert np.isclose(table[pos, 2 * i], np.sin(pos / 10000 ** (2 * i / 8)))
    assert np.isclose(table[pos, 2 * i + 1], np.cos(pos / 10000 ** (2 * i / 8)))


def test_bert_padding_and_heads():
    tokens = _tokens(2, (2, 10), BERT_TINY["vocab_size"])
    lengths = jnp.array([6, 10])
    model = zoo.create_model("bert_tiny", **BERT_TINY, dropout_rate=0.0)
    params = model.init(jax.random.key(0), tokens)["params"]
    logits = model.apply({"params": params}, tokens, lengths)
    assert logits.shape == (2, 10, BERT_TINY["vocab_size"])
    noisy = tokens.at[0, 6:].set(3)
    np.testing.assert_allclose(model.apply({"params": params}, noisy, lengths)[0, :6],
                               logits[0, :6], atol=2e-5)
    for head, shape in (("classification", (2, 5)), ("tagging", (2, 10, 5))):
        m = zoo.create_model("bert_tiny", **BERT_TINY, head=head, num_classes=5)
        p = m.init(jax.random.key(0), tokens)["params"]
        assert m.apply({"params": p}, tokens, lengths).shape == shape


@pytest.mark.parametrize("name,expected", [("bert_base", 109_482_240),
                                           ("bert_large", 335_141_888)])
def test_bert_encoder_parameter_counts(name, expected):
    """The counts of Hugging Face's BertModel (embeddings, encoder, pooler)."""
    model = zoo.create_model(name)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))
    assert sum(x.size for x in jax.tree.leaves(shapes["params"]["bert"])) == expected


def test_transformer_base_parameter_count():
    """Embedding (shared three ways) + 6 encoder and 6 decoder layers of the paper's base model."""
    model = zoo.create_model("transformer_base")
    tokens = jnp.zeros((1, 8), jnp.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, tokens))
    d, f, v = 512, 2048, 37000
    attention = 4 * (d * d + d)
    ffn = d * f + f + f * d + d
    encoder_layer = attention + ffn + 2 * 2 * d
    decoder_layer = 2 * attention + ffn + 3 * 2 * d
    assert sum(x.size for x in jax.tree.leaves(shapes["params"])) == (
        v * d + 6 * encoder_layer + 6 * decoder_layer)


def test_mlm_masking_statistics():
    tokens = _tokens(3, (64, 256), 30)
    lengths = jnp.concatenate([jnp.full((62,), 200), jnp.array([1, 0])])  # and a 1- and 0-row
    valid = jnp.arange(256)[None, :] < lengths[:, None]
    corrupted, positions, weights = mask_tokens(jax.random.key(0), tokens, valid,
                                                vocab_size=30, mask_token_id=1, mask_rate=0.15)
    corrupted, positions, weights, tokens = map(np.asarray, (corrupted, positions, weights, tokens))
    assert positions.shape == weights.shape == (64, 38)  # round(256 * 0.15) slots per row
    np.testing.assert_array_equal(weights.sum(1), [30] * 62 + [1, 0])  # round(len * 0.15)
    chosen = np.zeros(tokens.shape, bool)
    for row, (p, w) in enumerate(zip(positions, weights)):
        assert len(set(p.tolist())) == len(p)  # without replacement
        chosen[row, p[w > 0]] = True
    assert not (chosen & ~np.asarray(valid)).any()
    first_half = chosen[:62, :100].mean() / chosen[:62, 100:200].mean()
    assert 0.85 < first_half < 1.15  # uniform over the row
    masked = (corrupted == 1)[chosen].mean()
    kept = (corrupted == tokens)[chosen].mean()  # includes random draws of the same id
    assert abs(masked - 0.8) < 0.03
    assert abs(kept - 0.1 - 0.1 / 30) < 0.03
    assert abs((1 - masked - kept) - 0.1 * 29 / 30) < 0.03
    np.testing.assert_array_equal(corrupted[~chosen], tokens[~chosen])


def test_mlm_head_at_positions_equals_the_full_head_gathered():
    model = zoo.create_model("bert_tiny", **BERT_TINY)
    tokens = _tokens(0, (2, 9), 40)
    variables = model.init(jax.random.key(0), tokens)
    positions = jnp.array([[0, 4, 8], [3, 2, 1]])
    full = model.apply(variables, tokens)  # (B, T, V)
    at = model.apply(variables, tokens, positions=positions)  # (B, P, V)
    chex.assert_trees_all_close(at, jnp.take_along_axis(full, positions[..., None], 1),
                                atol=1e-5)
    classifier = zoo.create_model("bert_tiny", **BERT_TINY, head="classification")
    with pytest.raises(ValueError, match="positions"):
        classifier.init(jax.random.key(0), tokens, positions=positions)


def test_label_smoothing_against_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 7)).astype(np.float32)
    targets = rng.integers(0, 7, (2, 3))
    weights = np.array([[1, 1, 0], [1, 1, 1]], np.float32)
    eps = 0.1
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    smooth = np.full((2, 3, 7), eps / 7)
    np.put_along_axis(smooth, targets[..., None], 1 - eps + eps / 7, axis=-1)
    want = -(smooth * log_probs).sum(-1)
    loss, sums = smoothed_cross_entropy(jnp.asarray(logits), jnp.asarray(targets),
                                        jnp.asarray(weights), eps)
    np.testing.assert_allclose(loss, (want * weights).sum(), rtol=1e-5)
    nll = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(sums["nll"], (nll * weights).sum(), rtol=1e-5)
    assert sums["weight"] == 5


def test_tasks_take_their_settings_from_the_preset_and_ids_from_the_model_config():
    task = zoo.tasks.task_for_model("transformer_tiny")
    assert task.label_smoothing == 0.1  # the transformer preset's default for its task
    assert zoo.tasks.get_task("seq2seq").label_smoothing == 0.0  # the task's own default
    assert zoo.tasks.task_for_model("transformer_tiny", label_smoothing=0.0).label_smoothing == 0
    assert zoo.tasks.get_task("masked_lm", zoo.get_config("bert_tiny")).mask_token_id == 256
    with pytest.raises(ValueError, match="unknown setting"):
        zoo.tasks.get_task("masked_lm", mask_token_id=5)  # read from the model, not a setting


def test_greedy_and_beam_search_through_the_transformer_decoder(seq2seq_batch):
    from zoo.decode.search import beam_search, greedy_search

    source, _ = seq2seq_batch
    model = zoo.create_model("transformer_tiny", **TINY)
    params = model.init(jax.random.key(3), source, source)["params"]
    decoder = TransformerDecoder(model)
    tokens = np.asarray(greedy_search(decoder, params, source, max_len=8))  # (B, 8)
    # Each greedy token is the argmax of the full (uncached) forward over the tokens before it.
    logits = model.apply({"params": params}, source, shift_right(jnp.asarray(tokens)))
    ended = np.cumsum(tokens == 2, axis=1) - (tokens == 2)  # 1 after the first EOS
    np.testing.assert_array_equal(np.where(ended > 0, 0, np.argmax(logits, -1)), tokens)
    beams, scores = beam_search(decoder, params, source, beam_size=1, max_len=8)
    np.testing.assert_array_equal(beams[:, 0], tokens)
    beams, scores = beam_search(decoder, params, source, beam_size=3, max_len=8)
    assert beams.shape == (3, 3, 8) and scores.shape == (3, 3)
