"""The mixed-precision policy (zoo.nn.precision) for the recurrent families: a bf16 run of the
LSTM and GRU LMs tracks the float32 run, parameters and optimizer state stay float32 unless
asked, gradients come back in the parameter dtype and logits and carries are float32."""
import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import zoo
from zoo.nn.recurrent import RecurrentLayer, RecurrentStack
from zoo.tasks.causal_lm import CausalLM
from zoo.train import step as step_lib
from zoo.train.optimizer import create_optimizer
from zoo.train.schedules import create_schedule

SMALL = dict(vocab_size=64, emb_dim=32, hidden_size=64, num_layers=2, dropout_rate=0.0)
OPT = ml_collections.ConfigDict(dict(grad_clip_norm=1.0, weight_decay=0.1, adam_b1=0.9,
                                     adam_b2=0.95, adam_eps=1e-8))
STEPS = 20
# bf16 has an 8-bit mantissa: per-step losses of the two runs stay within 2% of each other.
LOSS_RTOL = 0.02


def _floats(tree) -> set[jnp.dtype]:
    return {leaf.dtype for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)}


def _train(name: str, **overrides) -> tuple[list[float], step_lib.TrainState]:
    """STEPS AdamW steps of `name` on one fixed batch -> (losses, final state)."""
    model = zoo.create_model(name, **SMALL, **overrides)
    schedule = create_schedule("constant", learning_rate=3e-3, warmup_steps=2, total_steps=STEPS)
    params = model.init(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))["params"]
    state = step_lib.TrainState.create(apply_fn=model.apply, params=params,
                                       tx=create_optimizer(OPT, schedule))
    tokens = np.random.default_rng(0).integers(0, SMALL["vocab_size"], (8, 17)).astype(np.int32)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
             "weights": np.ones((8, 16), np.float32)}
    step = step_lib.jit_train_step(CausalLM())
    losses = []
    for _ in range(STEPS):
        state, metrics = step(state, batch, jax.random.key(1))
        losses.append(float(metrics["loss"]))
    return losses, state


@pytest.mark.parametrize("name", ["lstm_lm", "gru_lm"])
def test_bf16_run_tracks_the_f32_run(name):
    f32_losses, f32_state = _train(name)
    bf16_losses, state = _train(name, compute_dtype="bfloat16")
    np.testing.assert_allclose(bf16_losses, f32_losses, rtol=LOSS_RTOL)
    for losses in (f32_losses, bf16_losses):  # both learn, not just match
        assert losses[-1] < 0.9 * losses[0], losses
    assert _floats((state.params, state.opt_state)) == {jnp.dtype(jnp.float32)}
    chex.assert_trees_all_equal_shapes(state.params, f32_state.params)


@pytest.mark.parametrize("name", ["lstm_lm", "gru_lm", "rnn_lm"])
def test_param_dtype_bfloat16_gives_bfloat16_parameters_and_gradients(name):
    model = zoo.create_model(name, **SMALL, compute_dtype="bfloat16", param_dtype="bfloat16")
    tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, SMALL["vocab_size"])
    params = model.init(jax.random.key(0), tokens)["params"]
    assert _floats(params) == {jnp.dtype(jnp.bfloat16)}
    logits, carry = model.apply({"params": params}, tokens, return_carry=True)
    assert logits.dtype == jnp.float32  # logits and the loss are float32 in every policy
    assert _floats(carry) == {jnp.dtype(jnp.float32)}  # so is the recurrent state
    grads = jax.grad(lambda p: jnp.mean(model.apply({"params": p}, tokens) ** 2))(params)
    assert _floats(grads) == {jnp.dtype(jnp.bfloat16)}


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("padded", [False, True])
def test_bf16_stack_is_close_to_f32_with_gradients_in_the_param_dtype(cell, padded):
    """The hand-written backward (zoo.nn.recurrence) under bf16 compute: outputs in bf16, carry
    float32, parameter gradients float32 and within a few % of the float32 ones."""
    x = jax.random.normal(jax.random.key(0), (3, 7, 8))
    lengths = jnp.array([7, 3, 5]) if padded else None
    f32 = RecurrentStack(cell, 16, num_layers=2, bidirectional=True)
    bf16 = RecurrentStack(cell, 16, num_layers=2, bidirectional=True, dtype=jnp.bfloat16)
    params = f32.init(jax.random.key(1), x)["params"]

    def loss(params, x, stack):
        ys, carry = stack.apply({"params": params}, x, lengths)
        return jnp.sum(jnp.sin(ys.astype(jnp.float32))) + jnp.sum(carry[0] ** 2), (ys, carry)

    (_, (ys, carry)), grads = jax.value_and_grad(loss, (0, 1), has_aux=True)(params, x, bf16)
    (_, (ys32, carry32)), grads32 = jax.value_and_grad(loss, (0, 1), has_aux=True)(params, x, f32)
    assert ys.dtype == jnp.bfloat16 and _floats(carry) == {jnp.dtype(jnp.float32)}
    assert _floats(grads) == {jnp.dtype(jnp.float32)}
    np.testing.assert_allclose(ys.astype(jnp.float32), ys32, atol=3e-2)
    for g, g32 in zip(jax.tree.leaves(grads), jax.tree.leaves(grads32)):
        assert float(jnp.linalg.norm(g - g32) / jnp.linalg.norm(g32)) < 0.03


def test_float32_compute_keeps_float64_inputs_in_float64():
    """compute dtype float32 casts nothing down: x64 gradient checks stay in float64."""
    with jax.enable_x64(True):
        x = jnp.ones((2, 3, 4), jnp.float64)
        layer = RecurrentLayer("lstm", 5)
        params = jax.tree.map(lambda a: a.astype(jnp.float64),
                              layer.init(jax.random.key(0), x)["params"])
        ys, carry = layer.apply({"params": params}, x)
        assert ys.dtype == jnp.float64 and _floats(carry) == {jnp.dtype(jnp.float64)}


@pytest.mark.parametrize("name,kwargs", [
    ("lstm_classifier", dict(num_classes=3, pooling="mean")),
    ("bilstm_tagger", dict(num_classes=3)),
    ("elmo_bilm", dict(hidden_size=16)),
])
def test_classifier_tagger_and_elmo_in_bf16(name, kwargs):
    tokens = jax.random.randint(jax.random.key(0), (2, 9), 0, 16)
    lengths = jnp.array([9, 4])
    f32 = zoo.create_model(name, vocab_size=16, emb_dim=16, **kwargs)
    bf16 = zoo.create_model(name, vocab_size=16, emb_dim=16, compute_dtype="bfloat16", **kwargs)
    params = f32.init(jax.random.key(1), tokens, lengths)["params"]
    out = bf16.apply({"params": params}, tokens, lengths)
    out32 = f32.apply({"params": params}, tokens, lengths)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(out32)):
        assert a.dtype == jnp.float32
        np.testing.assert_allclose(a, b, atol=5e-2)


def test_unknown_dtype_is_refused_with_the_choices():
    model = zoo.create_model("lstm_lm", **SMALL, compute_dtype="float8")
    with pytest.raises(ValueError, match="compute_dtype must be one of"):
        model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
