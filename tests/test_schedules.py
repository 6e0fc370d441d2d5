"""Tests for zoo.train.schedules: values against independent closed forms, jit, and errors.

conftest.py runs these under jax_numpy_dtype_promotion="strict" and jax_numpy_rank_promotion="raise".
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from zoo.train.schedules import SCHEDULES, create_schedule

LR = 0.5
WARMUP = 10
TOTAL = 100
D_MODEL = 64
END_FRAC = 0.1
DECAY_FRAC = 0.2  # wsd: decay over the last 20 steps, i.e. from step 80 to 100
RTOL, ATOL = 1e-5, 1e-7


# ----------------------------------------------------------------------------------------------
# Closed forms, written independently of the implementation (plain Python floats).
# ----------------------------------------------------------------------------------------------
def reference(name, t, *, lr, warmup, total, d_model=None, decay_fraction=0.1, end_frac=0.0):
    end = end_frac * lr
    if name in ("rsqrt", "noam"):
        if t == 0:
            return 0.0
        if warmup == 0:
            return lr * d_model**-0.5 * t**-0.5
        return lr * d_model**-0.5 * min(t**-0.5, t * warmup**-1.5)
    if t < warmup:
        return lr * t / warmup
    if name == "constant":
        return lr
    if t >= total:
        return end
    if name == "cosine":
        return end + (lr - end) * 0.5 * (1.0 + math.cos(math.pi * (t - warmup) / (total - warmup)))
    if name == "linear":
        return lr + (end - lr) * (t - warmup) / (total - warmup)
    if name == "wsd":
        decay = max(1, round(decay_fraction * total))
        start = total - decay
        if t < start:
            return lr
        return lr + (end - lr) * (t - start) / decay
    raise AssertionError(name)


def make(name, warmup=WARMUP, total=TOTAL, **kw):
    kw.setdefault("d_model", D_MODEL)
    kw.setdefault("decay_fraction", DECAY_FRAC)
    kw.setdefault("end_lr_fraction", END_FRAC)
    return create_schedule(name, learning_rate=LR, warmup_steps=warmup, total_steps=total, **kw)


def ref(name, t, warmup=WARMUP, total=TOTAL):
    return reference(
        name, t, lr=LR, warmup=warmup, total=total, d_model=D_MODEL,
        decay_fraction=DECAY_FRAC, end_frac=END_FRAC,
    )


# (schedule, point label, step): step 0, end of warm-up, mid-decay, last step (+ wsd decay start).
POINTS = {
    "cosine": {"step0": 0, "mid_warmup": 5, "end_of_warmup": WARMUP, "mid_decay": 55, "last_step": TOTAL,
               "after_end": TOTAL + 7},
    "linear": {"step0": 0, "mid_warmup": 5, "end_of_warmup": WARMUP, "mid_decay": 55, "last_step": TOTAL,
               "after_end": TOTAL + 7},
    "constant": {"step0": 0, "mid_warmup": 5, "end_of_warmup": WARMUP, "mid_decay": 55, "last_step": TOTAL},
    "wsd": {"step0": 0, "mid_warmup": 5, "end_of_warmup": WARMUP, "stable": 50, "decay_start": 80,
            "mid_decay": 90, "last_step": TOTAL, "after_end": TOTAL + 7},
    "rsqrt": {"step0": 0, "mid_warmup": 5, "end_of_warmup": WARMUP, "mid_decay": 55, "last_step": TOTAL},
}
VALUE_CASES = [
    pytest.param(name, step, id=f"{name}-{label}")
    for name, points in POINTS.items()
    for label, step in points.items()
]


@pytest.mark.parametrize("name,step", VALUE_CASES)
def test_matches_closed_form(name, step):
    value = make(name)(jnp.int32(step))
    chex.assert_type(value, jnp.float32)
    chex.assert_shape(value, ())
    np.testing.assert_allclose(float(value), ref(name, step), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", SCHEDULES, ids=SCHEDULES)
def test_matches_closed_form_without_warmup(name):
    sched = make(name, warmup=0)
    for step in (0, 1, 50, 85, TOTAL, TOTAL + 3):
        np.testing.assert_allclose(
            float(sched(jnp.int32(step))), ref(name, step, warmup=0), rtol=RTOL, atol=ATOL,
            err_msg=f"{name} at step {step}",
        )
    assert bool(jnp.all(jnp.isfinite(sched(jnp.arange(5, dtype=jnp.int32)))))


@pytest.mark.parametrize("name", ["cosine", "linear"], ids=["cosine", "linear"])
def test_warmup_equal_to_total_reaches_end_value(name):
    sched = make(name, warmup=TOTAL)
    np.testing.assert_allclose(float(sched(jnp.int32(TOTAL - 1))), LR * (TOTAL - 1) / TOTAL, rtol=RTOL)
    np.testing.assert_allclose(float(sched(jnp.int32(TOTAL))), END_FRAC * LR, rtol=RTOL)


@pytest.mark.parametrize(
    "d_model,warmup,step",
    [
        pytest.param(512, 4000, 1, id="d512-w4000-step1"),
        pytest.param(512, 4000, 2000, id="d512-w4000-mid_warmup"),
        pytest.param(512, 4000, 4000, id="d512-w4000-peak"),
        pytest.param(512, 4000, 10_000, id="d512-w4000-decay"),
        pytest.param(512, 4000, 100_000, id="d512-w4000-late"),
        pytest.param(1024, 100, 7, id="d1024-w100-step7"),
        pytest.param(1024, 100, 123_457, id="d1024-w100-late"),
    ],
)
def test_noam_formula(d_model, warmup, step):
    lr = 2.0  # a multiplier, as in the paper
    sched = create_schedule("noam", learning_rate=lr, warmup_steps=warmup, total_steps=200_000, d_model=d_model)
    expected = lr * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)
    np.testing.assert_allclose(float(sched(jnp.int32(step))), expected, rtol=RTOL)


def test_noam_peak_and_step0():
    sched = create_schedule("rsqrt", learning_rate=1.0, warmup_steps=4000, total_steps=10, d_model=512)
    assert float(sched(jnp.int32(0))) == 0.0
    values = sched(jnp.arange(0, 20_000, 50, dtype=jnp.int32))
    np.testing.assert_allclose(float(jnp.max(values)), 512**-0.5 * 4000**-0.5, rtol=RTOL)
    assert int(jnp.argmax(values)) * 50 == 4000


@pytest.mark.parametrize("warmup", [0, 10], ids=["no_warmup", "warmup10"])
def test_noam_step0_has_no_nan_or_inf_under_jit(warmup):
    sched = create_schedule("rsqrt", learning_rate=1.0, warmup_steps=warmup, total_steps=10, d_model=64)
    with jax.debug_nans(True), jax.debug_infs(True):
        assert float(jax.jit(sched)(jnp.int32(0))) == 0.0
        grad = jax.jit(jax.grad(lambda t: sched(t)))(jnp.float32(0.0))
    assert bool(jnp.isfinite(grad))


def test_noam_alias_and_case_insensitive():
    steps = jnp.arange(0, 50, dtype=jnp.int32)
    a = make("noam")(steps)
    b = make("rsqrt")(steps)
    c = make("RSQRT")(steps)
    chex.assert_trees_all_equal(a, b, c)


@pytest.mark.parametrize("name", SCHEDULES + ("noam",), ids=SCHEDULES + ("noam",))
def test_jit_equals_eager(name):
    sched = make(name)
    steps = jnp.arange(0, TOTAL + 20, dtype=jnp.int32)
    eager = sched(steps)
    jitted = jax.jit(sched)(steps)
    chex.assert_type(jitted, jnp.float32)
    chex.assert_shape(jitted, steps.shape)
    chex.assert_trees_all_close(jitted, eager, rtol=RTOL, atol=ATOL)
    for step in (0, WARMUP, 55, TOTAL):
        chex.assert_trees_all_close(jax.jit(sched)(jnp.int32(step)), sched(step), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", SCHEDULES, ids=SCHEDULES)
def test_no_recompile_for_new_step(name):
    sched = make(name)
    traces = 0

    def wrapped(step):
        nonlocal traces
        traces += 1  # Python side effect: runs only while tracing
        return sched(step)

    jitted = jax.jit(wrapped)
    first = jitted(jnp.int32(3))
    second = jitted(jnp.int32(77))
    assert traces == 1
    np.testing.assert_allclose(float(first), ref(name, 3), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(float(second), ref(name, 77), rtol=RTOL, atol=ATOL)


def _run_optimizer(opt, num_steps):
    params = {"w": jnp.ones((3,), jnp.float32)}
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.tree.map(jnp.ones_like, params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(num_steps):
        params, state = step(params, state)
    return params


@pytest.mark.parametrize("name", SCHEDULES, ids=SCHEDULES)
def test_usable_with_optax_sgd_strict_promotion(name):
    # With unit gradients, plain SGD moves w by exactly -sum(lr(t)) over the steps taken.
    sched = make(name)
    params = _run_optimizer(optax.sgd(sched), WARMUP + 2)
    chex.assert_type(params["w"], jnp.float32)
    expected = 1.0 - sum(ref(name, t) for t in range(WARMUP + 2))
    np.testing.assert_allclose(np.asarray(params["w"]), np.full((3,), expected), rtol=1e-5)


@pytest.mark.parametrize("name", SCHEDULES, ids=SCHEDULES)
def test_usable_with_optax_adamw(name):
    # optax's own adam bias correction (float ** int32 count) is not strict-promotion clean,
    # independently of the schedule, so this one runs under standard promotion.
    with jax.numpy_dtype_promotion("standard"):
        params = _run_optimizer(optax.adamw(make(name), weight_decay=0.0), WARMUP + 2)
    chex.assert_tree_all_finite(params)
    chex.assert_type(params["w"], jnp.float32)


def test_schedule_names():
    assert SCHEDULES == ("cosine", "linear", "rsqrt", "constant", "wsd")


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------
def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match=r"Unknown schedule 'cosin'.*'cosine'.*'wsd'.*noam"):
        make("cosin")


@pytest.mark.parametrize("name", SCHEDULES, ids=SCHEDULES)
def test_negative_warmup(name):
    with pytest.raises(ValueError, match=r"warmup_steps must be >= 0, got -1.*warmup_steps=0"):
        make(name, warmup=-1)


@pytest.mark.parametrize("total", [0, -5], ids=["zero", "negative"])
def test_nonpositive_total_steps(total):
    with pytest.raises(ValueError, match=rf"total_steps must be > 0, got {total}"):
        make("cosine", warmup=0, total=total)


@pytest.mark.parametrize("name", ["cosine", "linear", "wsd"], ids=["cosine", "linear", "wsd"])
def test_warmup_longer_than_total_for_decaying(name):
    with pytest.raises(ValueError, match=r"warmup_steps \(101\) > total_steps \(100\).*lower warmup_steps"):
        make(name, warmup=101)


@pytest.mark.parametrize("name", ["constant", "rsqrt"], ids=["constant", "rsqrt"])
def test_warmup_longer_than_total_allowed_for_non_decaying(name):
    sched = make(name, warmup=200)
    np.testing.assert_allclose(float(sched(jnp.int32(150))), ref(name, 150, warmup=200), rtol=RTOL)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5], ids=["zero", "negative", "above_one"])
def test_bad_decay_fraction(fraction):
    with pytest.raises(ValueError, match=r"decay_fraction must be in \(0, 1\]"):
        make("wsd", decay_fraction=fraction)


@pytest.mark.parametrize("fraction", [-0.5, 1.5], ids=["negative", "above_one"])
def test_bad_end_lr_fraction(fraction):
    with pytest.raises(ValueError, match=r"end_lr_fraction must be in \[0, 1\]"):
        make("cosine", end_lr_fraction=fraction)


def test_wsd_warmup_overlapping_decay():
    with pytest.raises(ValueError, match=r"wsd: warmup_steps \(90\) overlaps the decay phase.*step 80"):
        make("wsd", warmup=90)


@pytest.mark.parametrize("name", ["rsqrt", "noam"], ids=["rsqrt", "noam"])
def test_rsqrt_requires_d_model(name):
    with pytest.raises(ValueError, match=r"needs the model width: pass d_model="):
        make(name, d_model=None)


def test_rsqrt_nonpositive_d_model():
    with pytest.raises(ValueError, match=r"d_model must be > 0, got 0"):
        make("rsqrt", d_model=0)


@pytest.mark.parametrize("arg", ["warmup", "total"], ids=["warmup_steps", "total_steps"])
def test_non_integer_steps(arg):
    with pytest.raises(ValueError, match=rf"{arg}_steps must be an integer, got 10.5"):
        make("linear", **{arg: 10.5})
