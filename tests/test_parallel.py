"""zoo.train.parallel: every path compiles the train step once, on the state it places."""
import logging
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import zoo
from zoo.tasks import get_task
from zoo.train import parallel
from zoo.train.optimizer import create_optimizer, learning_rate_schedule

from run_configs import tiny_config

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name", ["pmap", "jit", "mesh"])
def test_the_step_compiles_once_from_the_placed_state(name, caplog):
    """The second step runs on the first one's output: a placed state laid out otherwise (as
    `jax_utils.replicate` lays out a pmap's input) would compile the step a second time."""
    config = tiny_config()
    model = zoo.create_model("gpt_tiny", num_layers=1, emb_dim=32, num_heads=2, mlp_dim=64,
                             dropout_rate=0.0)
    task = get_task("causal_lm", model.config)
    schedule = learning_rate_schedule(config)
    path, state = parallel.create(name, task, model, create_optimizer(config, schedule),
                                  task.example_inputs(model.config, 16), jax.random.key(0),
                                  learning_rate_fn=schedule)
    assert jax.device_count() == 4 and "4 device" in path.description
    state, rng = path.place_state(path.to_global(state)), path.place_rng(jax.random.key(1))
    tokens = np.random.default_rng(0).integers(0, 200, (8, 17), dtype=np.int32)
    batch = path.place_batch({"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
                              "weights": np.ones((8, 16), np.float32)})
    state, _ = path.train_fn(state, batch, rng)  # compiles
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        for _ in range(2):
            state, metrics = path.train_fn(state, batch, rng)
        jax.block_until_ready(metrics)
    assert not [r.message for r in caplog.records if "Compiling" in r.message]
    assert int(path.local(state.step)) == 3


def test_unknown_parallel_is_refused():
    with pytest.raises(zoo.errors.ConfigError, match="parallel is one of auto, pmap, jit"):
        parallel.create("dp", None, None, None, (), jax.random.key(0))


def test_pmap_on_one_device_trains_and_returns_unstacked_params(tmp_path):
    """`parallel="pmap"` forced on a single device: its stacked (1, ...) values look like
    replicated ones by shape alone; the run must still read them as one replica."""
    code = (
        "import sys, jax\n"
        "sys.path.insert(0, 'tests')\n"
        "from run_configs import tiny_config\n"
        "from zoo.train.loop import train_and_evaluate\n"
        f"s = train_and_evaluate(tiny_config(num_train_steps=2, parallel='pmap'), {str(tmp_path)!r})\n"
        "assert jax.device_count() == 1 and s['step'] == 2, s['step']\n"
        "shapes = {x.shape for x in jax.tree.leaves(s['params'])}\n"
        "assert (1, 32) not in shapes and (32,) in shapes, shapes\n")
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=1")
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, check=True)
