"""The non-finite guard: NaN / inf steps never update the parameters, the policy stops or skips,
and nothing non-finite or unevaluated after a NaN reaches a checkpoint."""
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from zoo.errors import NonFiniteError
from zoo.models import create_model
from zoo.tasks import task_for_model
from zoo.train import loop
from zoo.train import step as step_lib
from zoo.train.checkpoint import Checkpointer
from zoo.train.state import create_train_state

from run_configs import tiny_config


def _tiny_state():
    model = create_model("gpt_tiny", emb_dim=16, num_heads=2, num_layers=1, mlp_dim=32,
                         max_len=8, dropout_rate=0.0)
    task = task_for_model("gpt_tiny", model.config)
    state = create_train_state(model, optax.adam(1e-2), task.example_inputs(model.config, 8),
                               jax.random.key(0))
    batch = {"inputs": jnp.ones((2, 8), jnp.int32), "targets": jnp.ones((2, 8), jnp.int32),
             "weights": jnp.ones((2, 8), jnp.float32)}
    return task, state, batch


def test_a_nan_step_keeps_params_and_optimizer_state_and_is_counted():
    task, state, batch = _tiny_state()
    train = step_lib.jit_train_step(task)
    good, _ = train(state, batch, jax.random.key(1))
    before = jax.tree.map(np.asarray, (good.params, good.opt_state))
    poisoned = {**batch, "weights": batch["weights"].at[0, 0].set(jnp.nan)}
    after, metrics = train(good, poisoned, jax.random.key(1))
    chex.assert_trees_all_equal((after.params, after.opt_state), before)
    assert int(after.step) == 2 and int(after.nonfinite_steps) == 1
    assert int(after.first_nonfinite_step) == 2 and int(metrics["nonfinite_steps"]) == 1
    again, _ = train(after, batch, jax.random.key(1))  # a finite step updates again
    assert int(again.nonfinite_steps) == 1 and int(again.first_nonfinite_step) == 2
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), again.params, before[0])
    assert any(jax.tree.leaves(changed))


def _poison(monkeypatch, *, train_positions=(), eval_batches=False):
    """Makes the loop's data carry a NaN loss weight at the given train positions / in eval."""
    create_data = loop.create_data

    class Poisoned:
        def __init__(self, source, positions):
            self.source, self.positions = source, positions

        def __len__(self):
            return len(self.source)

        @property
        def signature(self):
            return self.source.signature

        @property
        def local_batches(self):  # what the loop's grain iterator reads
            return self.source.local_batches.map_with_index(lambda i, _: self.get(i))

        def get(self, i):
            batch = dict(self.source.get(i))
            if self.positions is None or i in self.positions:
                weights = np.array(batch["weights"], np.float32)
                weights[0, 0] = np.nan
                batch["weights"] = weights
            return batch

    def poisoned_data(*args, **kwargs):
        data = create_data(*args, **kwargs)
        data.train = Poisoned(data.train, set(train_positions))
        if eval_batches:
            data.eval = Poisoned(data.eval, None)
        return data

    monkeypatch.setattr(loop, "create_data", poisoned_data)


def _metrics(workdir, split):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r.get("split") == split]


def test_stop_policy_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    _poison(monkeypatch, train_positions=[3])  # position 3 feeds step 4
    config = tiny_config(num_train_steps=8, checkpoint_every_steps=2, log_every_steps=2,
                         parallel="jit", per_device_batch_size=1)
    with pytest.raises(NonFiniteError, match=r"at step 4;.*the last good checkpoint is step 2"):
        loop.train_and_evaluate(config, str(tmp_path))
    assert Checkpointer(str(tmp_path)).all_steps() == [2]


def test_skip_policy_skips_counts_and_finishes(tmp_path, monkeypatch):
    _poison(monkeypatch, train_positions=[3, 5])
    config = tiny_config(num_train_steps=8, checkpoint_every_steps=2, log_every_steps=1,
                         eval_every_steps=4, parallel="jit", nonfinite_policy="skip",
                         per_device_batch_size=1)
    summary = loop.train_and_evaluate(config, str(tmp_path))
    assert summary["step"] == 8 and np.isfinite(summary["eval"]["loss"])
    counts = [r["nonfinite_steps"] for r in _metrics(str(tmp_path), "train")]
    assert counts == [0, 0, 0, 1, 1, 2, 2, 2]
    ckpt = Checkpointer(str(tmp_path))
    assert ckpt.restore_meta(8)["nonfinite_steps"] == 2
    # Step 6 had no scheduled eval but a skipped step since the last one: it was evaluated in
    # full before its checkpoint was written.
    assert [r["step"] for r in _metrics(str(tmp_path), "eval")] == [4, 6, 8]


def test_a_nan_eval_is_never_checkpointed(tmp_path, monkeypatch):
    """The reported case: finite parameters whose eval loss is NaN were saved as 'good'."""
    _poison(monkeypatch, eval_batches=True)
    config = tiny_config(num_train_steps=6, eval_every_steps=2, checkpoint_every_steps=2,
                         parallel="jit", per_device_batch_size=1)
    with pytest.raises(NonFiniteError, match=r"eval metric\(s\) .*loss.* NaN / inf at step 2.*no checkpoint yet"):
        loop.train_and_evaluate(config, str(tmp_path))
    assert Checkpointer(str(tmp_path)).all_steps() == []


def test_a_checkpoint_between_evals_is_checked_on_one_eval_batch(tmp_path, monkeypatch):
    _poison(monkeypatch, eval_batches=True)
    config = tiny_config(num_train_steps=6, eval_every_steps=100, checkpoint_every_steps=1,
                         parallel="jit", per_device_batch_size=1)
    with pytest.raises(NonFiniteError, match=r"eval metric\(s\) .*loss.* NaN / inf at step 1"):
        loop.train_and_evaluate(config, str(tmp_path))
    assert Checkpointer(str(tmp_path)).all_steps() == []


def test_an_exploding_run_under_skip_never_checkpoints_garbage(tmp_path):
    config = tiny_config(num_train_steps=10, learning_rate=1e30, warmup_steps=0,
                         schedule="constant", grad_clip_norm=0.0, log_every_steps=1,
                         checkpoint_every_steps=1, nonfinite_policy="skip", parallel="jit",
                         per_device_batch_size=1)
    with pytest.raises(NonFiniteError):
        loop.train_and_evaluate(config, str(tmp_path))
    ckpt = Checkpointer(str(tmp_path))
    for step in ckpt.all_steps():
        meta = ckpt.restore_meta(step)
        ckpt.restore(step, jax.eval_shape(lambda: ckpt.saved_state(step)))
        assert meta["nonfinite_steps"] == 0
