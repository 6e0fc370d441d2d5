"""End-to-end runs of the shared loop: resume, signals, NaN guard, wrong checkpoints, configs."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest

from experiments.config_check import load_config
from zoo.errors import CheckpointError, ConfigError
from zoo.models import get_config as get_model_config
from zoo.models import get_spec
from zoo.tasks import get_task
from zoo.train.checkpoint import Checkpointer
from zoo.train.loop import NonFiniteError, train_and_evaluate
from zoo.train.throughput import peak_tflops

from run_configs import TINY_MODEL, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "experiments", "configs", "*.py")))
CONFIGS = [c for c in CONFIGS if not os.path.basename(c).startswith("_")]



@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(c) for c in CONFIGS])
def test_every_config_loads_and_trains_two_steps(path, tmp_path):
    config = load_config(path, "runlocal")
    config.unlock()
    config.update(num_train_steps=2, num_samples=1, sample_length=4)
    summary = train_and_evaluate(config, str(tmp_path))
    assert summary["step"] == 2
    assert np.isfinite(summary["eval"]["loss"])
    if get_spec(config.model).decoder_cls is not None:
        assert len(summary["samples"]) == 1
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert {"train", "eval"} == {r["split"] for r in records}
    spec = get_spec(config.model)
    counted = spec.train_flops is not None
    has_peak = counted and peak_tflops(jax.devices()[0].device_kind,
                                       config.compute_dtype) is not None  # never on a CPU
    timed = [r for r in records if r["split"] == "train" and r["step"] > 1]  # 1 compiled
    assert timed and all(r["tokens_per_sec"] > 0 for r in timed)
    assert all((r.get("tflops_per_device", 0) > 0) == counted and ("mfu" in r) == has_peak
               for r in timed)
    assert glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))


@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
    """In process: stop at step 3 (a preemption), rerun to step 8."""
    full = train_and_evaluate(tiny_config(num_train_steps=8), str(tmp_path / "full"))
    first = train_and_evaluate(tiny_config(num_train_steps=8), str(tmp_path / "split"),
                               stop_after_step=3)
    assert first["step"] == 3 and first["interrupted"]
    resumed = train_and_evaluate(tiny_config(num_train_steps=8), str(tmp_path / "split"))
    assert resumed["step"] == 8
    chex.assert_trees_all_equal(resumed["params"], full["params"])  # bit-identical


def test_checkpoint_round_trip(tmp_path):
    tree = {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)},
            "step": np.int32(7), "rng": jax.random.key_data(jax.random.key(3))}
    ckpt = Checkpointer(str(tmp_path))
    ckpt.save(7, tree, {"model": "m", "data_position": 7})
    restored, meta = ckpt.restore(7, jax.eval_shape(lambda: tree))
    chex.assert_trees_all_equal(restored, tree)
    assert meta.pop("fingerprints").keys() == {"['params']['w']", "['rng']", "['step']"}
    assert meta == {"model": "m", "data_position": 7}
    assert ckpt.latest_step() == 7


def test_non_finite_loss_never_reaches_a_checkpoint(tmp_path):
    config = tiny_config(num_train_steps=20, learning_rate=1e30, warmup_steps=0,
                         schedule="constant", grad_clip_norm=0.0, log_every_steps=1,
                         checkpoint_every_steps=1)
    with pytest.raises(NonFiniteError, match=r"NaN / inf"):
        train_and_evaluate(config, str(tmp_path))
    ckpt = Checkpointer(str(tmp_path))
    for step in ckpt.manager.all_steps():
        restored = ckpt.saved_state(step)
        for leaf in jax.tree.leaves(restored["params"]):
            assert np.all(np.isfinite(leaf)), f"checkpoint {step} holds non-finite params"


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("trained")
    train_and_evaluate(tiny_config(num_train_steps=2), str(workdir))
    return workdir


def test_checkpoint_of_a_different_model_is_refused(trained_workdir):
    with pytest.raises(CheckpointError, match=r"'gpt_tiny' with other settings.*emb_dim.*fresh --workdir"):
        train_and_evaluate(tiny_config(num_train_steps=4, emb_dim=16), str(trained_workdir))


def test_a_run_resumes_with_another_kernel_for_the_same_parameters(tmp_path):
    """E.g. a run trained on a GPU with cuDNN attention continues on a CPU with XLA's."""
    train_and_evaluate(tiny_config(num_train_steps=2), str(tmp_path))
    resumed = train_and_evaluate(tiny_config(num_train_steps=3, attention_implementation="xla",
                                             remat="full"), str(tmp_path))
    assert resumed["step"] == 3


@pytest.mark.slow
def test_generate_cli_samples_from_the_latest_checkpoint(trained_workdir):
    cmd = [sys.executable, "-m", "experiments.generate", "--workdir", str(trained_workdir),
           "--prompt", "The ", "--max_new_tokens", "6", "--temperature", "0",
           "--num_samples", "2"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    samples = [line for line in out.stdout.splitlines() if line.startswith("The ")]
    assert len(samples) == 2 and samples[0] == samples[1]  # greedy: identical continuations


def test_generate_cli_without_a_checkpoint(tmp_path):
    cmd = [sys.executable, "-m", "experiments.generate", "--workdir", str(tmp_path),
           "--prompt", "x"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300)
    assert out.returncode != 0 and "no checkpoint in" in out.stderr


def test_token_ids_outside_the_vocabulary_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"vocab_size=100 is below the 256 byte ids"):
        train_and_evaluate(tiny_config(vocab_size=100), str(tmp_path))  # before the run
    # The loop's check of every batch, for data whose ids no config setting foresees.
    config = get_model_config("gpt_tiny", vocab_size=100)
    task = get_task("causal_lm", config)
    ids = np.full((1, 4), 226, np.int32)
    with pytest.raises(ValueError, match=r"outside \[0, vocab_size=100\)"):
        task.check_batch({"inputs": ids, "targets": ids, "weights": np.ones((1, 4), np.float32)},
                         config)


def test_sequence_longer_than_max_len_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"exceeds the model's max_len=32"):
        train_and_evaluate(tiny_config(seq_len=64), str(tmp_path))


def _train_cmd(workdir, *overrides):
    return [sys.executable, "-m", "experiments.train",
            "--config", os.path.join(REPO, "experiments", "configs", "gpt_tiny.py") + ":runlocal",
            "--workdir", str(workdir), *overrides]


def _env():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


TINY_FLAGS = [f"--config.{k}={v}" for k, v in TINY_MODEL.items()] + [
    "--config.num_samples=0", "--config.num_eval_batches=1"]


def test_unknown_config_key_on_the_command_line(tmp_path):
    out = subprocess.run(_train_cmd(tmp_path, "--config.hiden_size=3"), capture_output=True,
                         text=True, env=_env(), cwd=REPO, timeout=300)
    assert out.returncode != 0
    assert "unknown config key 'hiden_size'" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_sigkill_then_restart_ends_bit_identical(tmp_path):
    """A real process is killed (SIGKILL) after a checkpoint; the restart matches a clean run."""
    steps = ["--config.num_train_steps=40", "--config.checkpoint_every_steps=10",
             "--config.eval_every_steps=100", *TINY_FLAGS]
    clean = tmp_path / "clean"  # runs alongside the killed run: their imports overlap
    clean_proc = subprocess.Popen(_train_cmd(clean, *steps), env=_env(), cwd=REPO,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(killed, *steps), env=_env(), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "10").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert Checkpointer(str(killed)).latest_step() in range(10, 40), "kill came too late"
    subprocess.run(_train_cmd(killed, *steps), check=True, env=_env(), cwd=REPO, timeout=600,
                   capture_output=True)
    _, clean_err = clean_proc.communicate(timeout=600)
    assert clean_proc.returncode == 0, clean_err.decode()[-2000:]

    a, b = Checkpointer(str(clean)), Checkpointer(str(killed))
    assert a.latest_step() == b.latest_step() == 40
    chex.assert_trees_all_equal(a.saved_state(40), b.saved_state(40))
    # What the killed run logged past its checkpoint is dropped when the restart resumes.
    logged = {run: [(r["split"], r["step"]) for r in map(json.loads, open(run / "metrics.jsonl"))]
              for run in (clean, killed)}
    assert len(logged[killed]) == len(set(logged[killed])), logged[killed]
    assert set(logged[clean]) <= set(logged[killed])


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits(tmp_path):
    steps = ["--config.num_train_steps=100000", "--config.checkpoint_every_steps=100000",
             "--config.eval_every_steps=100000", *TINY_FLAGS]
    proc = subprocess.Popen(_train_cmd(tmp_path, *steps), env=_env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not (tmp_path / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 143, output
    assert "SIGTERM received: saved a checkpoint" in output
    step = Checkpointer(str(tmp_path)).latest_step()
    assert step is not None and step > 0


@pytest.mark.slow
def test_trains_on_a_real_tfds_dataset_by_name(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=200):
        summary = train_and_evaluate(tiny_config(dataset="tiny_shakespeare", num_train_steps=2),
                                     str(tmp_path))
    assert summary["step"] == 2 and np.isfinite(summary["eval"]["loss"])
