"""The translation CLIs (evaluate, translate, generate) and warm starts, end to end on tiny runs."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.config_check import load_config
from zoo.train.loop import _warm_start, train_and_evaluate
from zoo.train.workdir import build_model, create_state
from zoo.train.optimizer import create_optimizer
from zoo.train.warm_start import warm_start

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(name: str, workdir, **overrides):
    config = load_config(os.path.join(REPO, "experiments", "configs", f"{name}.py"), "runlocal")
    config.unlock()
    config.update(num_train_steps=2, num_samples=0, num_eval_batches=1, **overrides)
    config.lock()
    return train_and_evaluate(config, str(workdir))


def _start(module: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def _finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    return _finish(_start(module, *args))


@pytest.fixture(scope="module")
def bahdanau_workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("bahdanau")
    _train("seq2seq_lstm_bahdanau", workdir)
    return workdir


@pytest.mark.slow
def test_evaluate_prints_metrics_as_json(bahdanau_workdir):
    out = _run("experiments.evaluate", "--workdir", str(bahdanau_workdir), "--max_examples", "20",
               "--batch_size", "8", "--beam_size", "2")
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    assert metrics["num_examples"] == 20 and metrics["step"] == 2
    for key in ("exact_match", "token_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    assert 0.0 <= metrics["bleu"] <= 100.0


@pytest.mark.slow
def test_translate_saves_attention_and_names_unknown_characters(bahdanau_workdir, tmp_path):
    png = tmp_path / "attention.png"
    out = _run("experiments.translate", "--workdir", str(bahdanau_workdir), "abcba",
               "--attention_png", str(png))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("abcba -> ")
    assert png.stat().st_size > 1000
    out = _run("experiments.translate", "--workdir", str(bahdanau_workdir), "abc!")
    assert out.returncode != 0
    assert "'!'" in out.stderr and "vocabulary" in out.stderr
    assert "Traceback" not in out.stderr
    out = _run("experiments.translate", "--workdir", str(bahdanau_workdir), "abc!",
               "--unknown", "unk")
    assert out.returncode == 0, out.stderr


@pytest.mark.slow
def test_generate_works_for_an_encoder_decoder_workdir(tmp_path):
    _train("transformer_translate", tmp_path)
    runs = [_start("experiments.generate", "--workdir", str(tmp_path), "--prompt", "abc", *flags)
            for flags in (["--temperature", "0.8", "--num_samples", "2"], ["--beam_size", "3"],
                          ["--beam_size", "3", "--max_new_tokens", "2"])]
    for i, out in enumerate(map(_finish, runs)):  # sampling and beam search, side by side
        assert out.returncode == 0, out.stderr
        lines = out.stdout.strip().splitlines()
        assert lines and all(line.startswith("abc ->") for line in lines)
        if i == 2:  # characters: at most --max_new_tokens of them
            assert all(len(line.split("->", 1)[1].strip()) <= 2 for line in lines), lines
    empty = [_start("experiments.generate", "--workdir", str(tmp_path), "--prompt", ""),
             _start("experiments.translate", "--workdir", str(tmp_path), "")]
    for out in map(_finish, empty):
        assert out.returncode == 2 and "is empty" in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


@pytest.mark.slow
def test_bert_classifier_warm_starts_from_an_mlm_run(tmp_path):
    _train("bert_mlm", tmp_path / "mlm")
    config = load_config(os.path.join(REPO, "experiments", "configs", "bert_classify.py"),
                         "runlocal")
    _, model_config, model, task = build_model(config)
    state = create_state(model, task, create_optimizer(config, lambda step: 1e-3),
                         model_config, config.seq_len, jax.random.key(1))
    warmed = _warm_start(state, str(tmp_path / "mlm"))
    from zoo.train.workdir import load_trained

    source = load_trained(str(tmp_path / "mlm"))[2]
    jax.tree.map(np.testing.assert_array_equal, warmed.params["bert"], source["bert"])
    jax.tree.map(np.testing.assert_array_equal, warmed.params["classifier"],
                 state.params["classifier"])


def test_warm_start_refuses_mismatched_shapes():
    params = {"bert": {"w": np.zeros((2, 3))}, "head": {"w": np.zeros(3)}}
    copied, names = warm_start(params, {"bert": {"w": np.ones((2, 3))}, "mlm": {}})
    assert names == ["bert"] and copied["bert"]["w"].sum() == 6
    with pytest.raises(ValueError, match="does not match"):
        warm_start(params, {"bert": {"w": np.ones((4, 3))}})
