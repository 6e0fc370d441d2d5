"""The shared train step: pmap == jit, accumulation == one big batch, no recompiles, overfitting."""
import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import jax_utils

import zoo
from zoo.data.pipelines.sharding import shard_batch
from zoo.tasks import get_task
from zoo.train import step as step_lib
from zoo.train.optimizer import create_optimizer
from zoo.train.schedules import create_schedule

SMALL = dict(vocab_size=37, emb_dim=32, num_heads=2, num_layers=2, mlp_dim=64, max_len=16,
             dropout_rate=0.0)
OPT = ml_collections.ConfigDict(dict(grad_clip_norm=1.0, weight_decay=0.1, adam_b1=0.9,
                                     adam_b2=0.95, adam_eps=1e-8))


def make_state(lr=1e-3, **overrides):
    model = zoo.create_model("gpt_tiny", **{**SMALL, **overrides})
    schedule = create_schedule("cosine", learning_rate=lr, warmup_steps=2, total_steps=100)
    params = model.init(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))["params"]
    state = step_lib.TrainState.create(apply_fn=model.apply, params=params,
                                       tx=create_optimizer(OPT, schedule))
    return state, schedule


def make_batch(batch_size=8, seq_len=16, seed=0):
    rng = np.random.default_rng(seed)
    window = rng.integers(0, SMALL["vocab_size"], (batch_size, seq_len + 1)).astype(np.int32)
    weights = np.ones((batch_size, seq_len), np.float32)
    weights[0, -5:] = 0.0  # uneven padding: exact averaging must still hold
    return {"inputs": window[:, :-1], "targets": window[:, 1:], "weights": weights}


def test_pmap_on_4_devices_equals_single_device_step():
    assert jax.local_device_count() == 4, "tests/conftest.py should fake 4 CPU devices"
    task = get_task("causal_lm")
    batch = make_batch()
    state, schedule = make_state()
    jit_fn = step_lib.jit_train_step(task, learning_rate_fn=schedule)
    pmap_fn = step_lib.pmap_train_step(task, learning_rate_fn=schedule)
    rng = jax.random.key(1)

    single, single_metrics = jit_fn(make_state()[0], batch, rng)
    single, single_metrics = jit_fn(single, make_batch(seed=1), rng)
    replicated = jax_utils.replicate(state)
    replicated, _ = pmap_fn(replicated, shard_batch(batch, 4), rng)
    replicated, pmap_metrics = pmap_fn(replicated, shard_batch(make_batch(seed=1), 4), rng)

    chex.assert_trees_all_close(jax_utils.unreplicate(replicated).params, single.params,
                                atol=1e-6, rtol=1e-5)
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[0], pmap_metrics), single_metrics,
                                atol=1e-5, rtol=1e-5)
    # Every device holds the same params after the update.
    for leaf in jax.tree.leaves(replicated.params):
        np.testing.assert_array_equal(leaf[0], leaf[3])


def test_gradient_accumulation_equals_one_big_batch():
    task = get_task("causal_lm")
    batch = make_batch()
    one, m1 = step_lib.jit_train_step(task)(make_state()[0], batch, jax.random.key(1))
    four, m4 = step_lib.jit_train_step(task, grad_accum_steps=4)(make_state()[0], batch,
                                                                  jax.random.key(1))
    chex.assert_trees_all_close(one.params, four.params, atol=1e-6, rtol=1e-5)
    chex.assert_trees_all_close(m1, m4, atol=1e-5, rtol=1e-5)


def test_accumulation_needs_a_divisible_batch():
    with pytest.raises(ValueError, match=r"does not divide into grad_accum_steps=3"):
        step_lib.jit_train_step(get_task("causal_lm"), grad_accum_steps=3)(
            make_state()[0], make_batch(), jax.random.key(1))


def test_dropout_rng_differs_per_step_and_device():
    """With dropout, the same batch at two different steps gives different losses."""
    task = get_task("causal_lm")
    state, _ = make_state(lr=0.0, dropout_rate=0.5)
    fn = step_lib.jit_train_step(task)
    state, m0 = fn(state, make_batch(), jax.random.key(1))
    state, m1 = fn(state, make_batch(), jax.random.key(1))
    assert float(m0["loss"]) != float(m1["loss"])


def test_second_call_does_not_recompile():
    task = get_task("causal_lm")
    state, schedule = make_state()
    fn = step_lib.jit_train_step(task, learning_rate_fn=schedule)
    state, _ = fn(state, make_batch(seed=0), jax.random.key(1))
    before = fn._cache_size()
    for seed in (1, 2, 3):
        state, _ = fn(state, make_batch(seed=seed), jax.random.key(seed))
    assert fn._cache_size() == before == 1


def test_one_batch_overfits_to_near_zero_loss():
    task = get_task("causal_lm")
    state, _ = make_state()
    tx_schedule = create_schedule("constant", learning_rate=3e-3, warmup_steps=5, total_steps=300)
    state = state.replace(tx=create_optimizer(OPT, tx_schedule),
                          opt_state=create_optimizer(OPT, tx_schedule).init(state.params))
    fn = step_lib.jit_train_step(task)
    batch = make_batch(batch_size=4)
    for _ in range(150):
        state, metrics = fn(state, batch, jax.random.key(0))
    assert float(metrics["loss"]) < 0.05, metrics
    assert float(metrics["accuracy"]) == 1.0


def test_eval_step_sums_match_across_devices():
    task = get_task("causal_lm")
    state, _ = make_state()
    batch = make_batch()
    single = step_lib.jit_eval_step(task)(state, batch)
    multi = step_lib.pmap_eval_step(task)(jax_utils.replicate(state), shard_batch(batch, 4))
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[0], multi), single, rtol=1e-5)
    assert float(single["weight"]) == 8 * 16 - 5


def test_batch_that_does_not_divide_by_devices():
    with pytest.raises(ValueError, match=r"does not divide by 4 devices"):
        shard_batch(make_batch(batch_size=6), 4)


def test_argmax_equals_matches_argmax_with_ties():
    from zoo.tasks.base import argmax_equals

    rng = np.random.default_rng(0)
    logits = np.round(rng.normal(size=(6, 50, 7)) * 2) / 2  # coarse values: many ties
    logits[0, :, :] = 0.0  # all tied: argmax picks index 0
    first = logits.argmax(-1)
    for targets in (first, (first + 1) % 7, rng.integers(0, 7, size=(6, 50))):
        got = argmax_equals(jnp.asarray(logits, jnp.float32), jnp.asarray(targets, jnp.int32))
        np.testing.assert_array_equal(np.asarray(got), first == targets)
