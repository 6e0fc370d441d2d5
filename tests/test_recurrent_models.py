"""Recurrent family models: LMs (overfit, carry generation), classifiers, tagger, ELMo biLM."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import jax_utils

import zoo
from zoo.data.pipelines.sharding import shard_batch
from zoo.decode.sampling import generate
from zoo.models.elmo import ELMoEmbedder
from zoo.models.rnn_lm import RNNLMDecoder
from zoo.tasks import get_task
from zoo.train import step as step_lib

LMS = ["rnn_lm", "lstm_lm", "gru_lm"]
TINY = {"vocab_size": 16, "emb_dim": 16, "hidden_size": 32, "num_layers": 2}


def _tokens(shape, vocab=16, seed=0):
    return jax.random.randint(jax.random.key(seed), shape, 0, vocab)


@pytest.mark.parametrize("name", LMS)
def test_lm_shapes_and_causality(name):
    model = zoo.create_model(name, **TINY)
    tokens = _tokens((2, 9))
    params = model.init(jax.random.key(0), tokens)["params"]
    logits = model.apply({"params": params}, tokens)
    chex.assert_shape(logits, (2, 9, 16))
    chex.assert_type(logits, jnp.float32)
    changed = tokens.at[:, 5].set((tokens[:, 5] + 1) % 16)
    np.testing.assert_array_equal(model.apply({"params": params}, changed)[:, :5], logits[:, :5])


@pytest.mark.parametrize("name", LMS)
def test_lm_overfits_one_batch(name):
    model = zoo.create_model(name, **TINY, dropout_rate=0.0)
    tokens = np.asarray(_tokens((4, 17)))
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
             "weights": np.ones((4, 16), np.float32)}
    params = model.init(jax.random.key(0), batch["inputs"])["params"]
    state = step_lib.TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(1e-2))
    train = step_lib.jit_train_step(get_task("causal_lm"))
    for _ in range(300):
        state, metrics = train(state, batch, jax.random.key(1))
    assert float(metrics["loss"]) < 0.05, float(metrics["loss"])


@pytest.mark.parametrize("name", LMS)
def test_carry_generation_equals_full_recomputation(name):
    model = zoo.create_model(name, **TINY)
    prompt = _tokens((3, 4))
    params = model.init(jax.random.key(0), prompt)["params"]
    tokens, logits = generate(RNNLMDecoder(model), params, prompt, jax.random.key(1),
                              max_new_tokens=6, temperature=0.0, return_logits=True)
    full = model.apply({"params": params}, jnp.concatenate([prompt, tokens], 1))
    chex.assert_trees_all_close(logits, full[:, 3:-1], atol=1e-5)
    sampled = generate(RNNLMDecoder(model), params, prompt, jax.random.key(2), max_new_tokens=5,
                       temperature=0.8, top_k=5, top_p=0.9)
    chex.assert_shape(sampled, (3, 5))


@pytest.mark.parametrize("name,pooling", [("lstm_classifier", "last"), ("gru_classifier", "mean"),
                                          ("lstm_classifier", "max")])
def test_classifier_ignores_padding(name, pooling):
    model = zoo.create_model(name, vocab_size=16, num_classes=3, emb_dim=8, hidden_size=12,
                             pooling=pooling)
    tokens, lengths = _tokens((3, 10)), jnp.array([10, 4, 1])
    params = model.init(jax.random.key(0), tokens, lengths)["params"]
    logits = model.apply({"params": params}, tokens, lengths)
    chex.assert_shape(logits, (3, 3))
    pad = jnp.arange(10)[None] >= lengths[:, None]
    other = jnp.where(pad, _tokens((3, 10), seed=5), tokens)
    chex.assert_trees_all_close(model.apply({"params": params}, other, lengths), logits, atol=1e-6)
    alone = model.apply({"params": params}, tokens[1:2, :4])
    chex.assert_trees_all_close(alone, logits[1:2], atol=1e-5)


def test_tagger_gives_a_tag_per_token_and_ignores_padding():
    model = zoo.create_model("bilstm_tagger", vocab_size=16, num_classes=5, emb_dim=8,
                             hidden_size=12)
    tokens, lengths = _tokens((2, 7)), jnp.array([7, 3])
    params = model.init(jax.random.key(0), tokens, lengths)["params"]
    logits = model.apply({"params": params}, tokens, lengths)
    chex.assert_shape(logits, (2, 7, 5))
    chex.assert_trees_all_close(model.apply({"params": params}, tokens[1:, :3]),
                                logits[1:, :3], atol=1e-5)


def test_elmo_directions_and_scalar_mix():
    model = zoo.create_model("elmo_bilm", vocab_size=16, emb_dim=8, hidden_size=8)
    tokens = _tokens((2, 9))
    params = model.init(jax.random.key(0), tokens)["params"]
    fwd, bwd = model.apply({"params": params}, tokens)
    chex.assert_shape((fwd, bwd), ((2, 9, 16), (2, 9, 16)))
    changed = tokens.at[:, 4].set((tokens[:, 4] + 1) % 16)
    fwd2, bwd2 = model.apply({"params": params}, changed)
    np.testing.assert_array_equal(fwd2[:, :4], fwd[:, :4])  # forward: only the past
    np.testing.assert_array_equal(bwd2[:, 5:], bwd[:, 5:])  # backward: only the future
    assert not np.allclose(bwd2[:, :5], bwd[:, :5])

    embedder = ELMoEmbedder(model.config)
    variables = embedder.init(jax.random.key(1), tokens)
    variables = {"params": {**variables["params"], "bilm": params}}  # a trained biLM loads here
    layers = model.apply({"params": params}, tokens, return_layers=True)
    chex.assert_shape(layers, (3, 2, 9, 16))  # L + 1 layers of [forward; backward]
    mixed = embedder.apply(variables, tokens)
    chex.assert_trees_all_close(mixed, jnp.mean(layers, axis=0), atol=1e-6)  # equal init weights
    grads = jax.grad(lambda p: jnp.sum(embedder.apply({"params": p}, tokens) ** 2))(
        variables["params"])
    assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads["bilm"]))
    assert float(jnp.abs(grads["mix"]["scalars"]).max()) > 0


def test_bidirectional_lm_loss_sums_both_directions():
    model = zoo.create_model("elmo_bilm", vocab_size=16, emb_dim=8, hidden_size=8)
    tokens = np.asarray(_tokens((2, 9)))
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
             "weights": np.ones((2, 8), np.float32)}
    params = model.init(jax.random.key(0), batch["inputs"])["params"]
    task = get_task("bidirectional_lm")
    loss_sum, sums = task.loss(model.apply, params, batch, jax.random.key(0), train=False)
    metrics = task.finalize(jax.device_get(sums))
    fwd, bwd = model.apply({"params": params}, batch["inputs"])
    fwd_mean = optax.softmax_cross_entropy_with_integer_labels(fwd, batch["targets"]).mean()
    bwd_mean = optax.softmax_cross_entropy_with_integer_labels(bwd[:, 1:],
                                                               batch["inputs"][:, :-1]).mean()
    np.testing.assert_allclose(metrics["forward_loss"], fwd_mean, rtol=1e-5)
    np.testing.assert_allclose(metrics["backward_loss"], bwd_mean, rtol=1e-5)
    np.testing.assert_allclose(metrics["loss"], fwd_mean + bwd_mean, rtol=1e-5)


def test_pmap_step_of_an_rnn_lm_equals_the_single_device_step():
    model = zoo.create_model("lstm_lm", **TINY, dropout_rate=0.0)
    tokens = np.asarray(_tokens((8, 13)))
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
             "weights": np.ones((8, 12), np.float32)}

    def fresh_state():  # each step donates its input state
        params = model.init(jax.random.key(0), batch["inputs"])["params"]
        return step_lib.TrainState.create(apply_fn=model.apply, params=params, tx=optax.sgd(0.1))

    task = get_task("causal_lm")
    single, _ = step_lib.jit_train_step(task)(fresh_state(), batch, jax.random.key(1))
    n = jax.local_device_count()
    assert n == 4
    replicated, _ = step_lib.pmap_train_step(task)(jax_utils.replicate(fresh_state()),
                                                   shard_batch(batch, n), jax.random.key(1))
    chex.assert_trees_all_close(jax_utils.unreplicate(replicated).params, single.params,
                                atol=1e-5)


@pytest.mark.parametrize("task_name,batch,message", [
    ("classification", {"inputs": np.full((2, 4), 300), "lengths": np.array([4, 4]),
                        "labels": np.array([0, 1])}, "vocab_size"),
    ("classification", {"inputs": np.zeros((2, 4), int), "lengths": np.array([4, 4]),
                        "labels": np.array([0, 7])}, "num_classes"),
    ("classification", {"inputs": np.zeros((2, 4), int), "lengths": np.array([0, 9]),
                        "labels": np.array([0, 1])}, "lengths"),
    ("tagging", {"inputs": np.zeros((2, 4), int), "lengths": np.array([4, 4])}, "missing"),
])
def test_bad_batches_get_clear_errors(task_name, batch, message):
    config = zoo.get_config("lstm_classifier", num_classes=3)
    with pytest.raises(ValueError, match=message):
        get_task(task_name).check_batch(batch, config)
