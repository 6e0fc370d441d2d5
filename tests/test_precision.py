"""The mixed-precision policy for the transformer families (zoo.nn.precision): a bf16 run tracks
the f32 run of the same config; parameters and optimizer state stay float32 unless asked."""
import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import zoo
from zoo.models import saved_config_fields
from zoo.tasks import get_task
from zoo.train import step as step_lib
from zoo.train.optimizer import create_optimizer
from zoo.train.schedules import create_schedule

SMALL = dict(vocab_size=300, emb_dim=64, num_heads=4, num_layers=2, mlp_dim=128, max_len=32,
             dropout_rate=0.0)
OPT = ml_collections.ConfigDict(dict(grad_clip_norm=1.0, weight_decay=0.1, adam_b1=0.9,
                                     adam_b2=0.95, adam_eps=1e-8))
STEPS = 20
# bf16 has an 8-bit mantissa: per-step losses of the two runs stay within 2% of each other.
LOSS_RTOL = 0.02


SIZES = {"gpt_tiny": SMALL, "bert_tiny": SMALL,
         "transformer_tiny": dict(vocab_size=300, emb_dim=64, num_heads=4, num_encoder_layers=2,
                                  num_decoder_layers=2, mlp_dim=128, max_len=32,
                                  dropout_rate=0.0)}


def _train(name: str, **overrides) -> tuple[list[float], step_lib.TrainState]:
    model = zoo.create_model(name, **SIZES[name], **overrides)
    task = get_task(zoo.models.get_spec(name).task, model.config)
    schedule = create_schedule("constant", learning_rate=3e-3, warmup_steps=2,
                               total_steps=STEPS)
    init_args = task.example_inputs(model.config, 32)
    params = model.init(jax.random.key(0), *init_args)["params"]
    state = step_lib.TrainState.create(apply_fn=model.apply, params=params,
                                       tx=create_optimizer(OPT, schedule))
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 300, (8, 33)).astype(np.int32)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
             "weights": np.ones((8, 32), np.float32)}
    step = step_lib.jit_train_step(task)
    losses = []
    for _ in range(STEPS):
        state, metrics = step(state, batch, jax.random.key(1))
        losses.append(float(metrics["loss"]))
    return losses, state


@pytest.mark.parametrize("name", ["gpt_tiny", "bert_tiny", "transformer_tiny"])
def test_bf16_run_tracks_the_f32_run(name):
    f32_losses, _ = _train(name)
    bf16_losses, state = _train(name, compute_dtype="bfloat16")
    np.testing.assert_allclose(bf16_losses, f32_losses, rtol=LOSS_RTOL)
    assert bf16_losses[-1] < 0.9 * bf16_losses[0]  # it learns, not just matches
    for leaf in jax.tree.leaves((state.params, state.opt_state)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float32


def test_param_dtype_bfloat16_gives_bfloat16_parameters():
    model = zoo.create_model("gpt_tiny", **SMALL, param_dtype="bfloat16",
                             compute_dtype="bfloat16")
    params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
    logits = model.apply({"params": params}, jnp.zeros((1, 8), jnp.int32))
    assert logits.dtype == jnp.float32  # logits and the loss are float32 in every policy


def test_unknown_dtype_is_refused_with_the_choices():
    model = zoo.create_model("gpt_tiny", **SMALL, compute_dtype="float8")
    with pytest.raises(ValueError, match="compute_dtype must be one of"):
        model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))


def test_old_field_names_still_load():
    """Configs written before the policy (`dtype`, boolean `remat`) map onto today's fields."""
    assert zoo.get_config("gpt_tiny", dtype="bfloat16").compute_dtype == "bfloat16"
    saved = {k: v for k, v in zoo.get_config("gpt_tiny").__dict__.items()
             if k not in ("compute_dtype", "param_dtype", "vocab_pad_multiple")}
    saved.update(dtype="float32", remat=False)
    now = saved_config_fields("gpt_tiny", saved)
    assert now == zoo.get_config("gpt_tiny").__dict__


@pytest.mark.parametrize("remat", ["dots", "full", True])
@pytest.mark.parametrize("scan_layers", [False, True])
def test_remat_policies_give_the_same_gradients(remat, scan_layers):
    tokens = jax.random.randint(jax.random.key(6), (2, 12), 0, 300)
    plain = zoo.create_model("gpt_tiny", **SMALL, scan_layers=scan_layers)
    params = plain.init(jax.random.key(0), tokens)["params"]
    rematerialised = zoo.create_model("gpt_tiny", **SMALL, scan_layers=scan_layers, remat=remat)

    def grads(model):
        return jax.jit(jax.grad(lambda p: jnp.sum(model.apply({"params": p}, tokens) ** 2)))(
            params)

    chex.assert_trees_all_close(grads(rematerialised), grads(plain), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="remat must be one of"):
        zoo.create_model("gpt_tiny", **SMALL, remat="some").init(jax.random.key(0), tokens)


def test_bf16_parameters_train_and_keep_their_dtype():
    """param_dtype='bfloat16': the float32 gradients must not promote the parameters or the
    AdamW moments (the step's non-finite guard needs one type in both branches)."""
    losses, state = _train("gpt_tiny", param_dtype="bfloat16", compute_dtype="bfloat16")
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.9 * losses[0]
    floats = {leaf.dtype for leaf in jax.tree.leaves((state.params, state.opt_state))
              if jnp.issubdtype(leaf.dtype, jnp.floating)}
    assert floats == {jnp.dtype(jnp.bfloat16)}


def test_a_scanned_post_ln_stack_trains_in_bf16():
    """transformer_tiny is post-LN: its blocks return their LayerNorm's bf16 while the scan's
    carry enters as float32 (embeddings + sinusoidal positions) unless run_layers casts it."""
    assert not zoo.get_config("transformer_tiny").pre_ln
    f32_losses, _ = _train("transformer_tiny", scan_layers=True)
    bf16_losses, _ = _train("transformer_tiny", scan_layers=True, compute_dtype="bfloat16")
    np.testing.assert_allclose(bf16_losses, f32_losses, rtol=LOSS_RTOL)
