"""Model FLOP counts (`ModelSpec.train_flops`) and the peaks MFU is taken against."""
import json

import jax
import numpy as np
import pytest

import zoo
from zoo.models import get_spec
from zoo.tasks import get_task
from zoo.train.optimizer import create_optimizer, learning_rate_schedule
from zoo.train.state import create_train_state
from zoo.train.step import jit_train_step
from zoo.train.throughput import TrainingClock, flops_metrics, peak_tflops

from run_configs import tiny_config


def test_datasheet_peaks_by_device_kind_and_dtype():
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.4
    assert peak_tflops("NVIDIA H100 PCIe", "float16") == 756.0
    assert peak_tflops("NVIDIA H200", "bfloat16") == 989.4
    assert peak_tflops("TPU v5 lite", "bfloat16") == 197.0
    assert peak_tflops("TPU v5", "bfloat16") == 459.0
    assert peak_tflops("NVIDIA H100 80GB HBM3", "float32") is None
    assert peak_tflops("cpu", "bfloat16") is None


def test_flops_metrics():
    # 8 chips did 4e15 FLOPs in 2 s: 250 TFLOP/s each, a quarter of a 1000 TFLOP/s peak.
    assert flops_metrics(4e15, 2.0, 8, 1000.0) == pytest.approx(
        {"tflops_per_device": 250.0, "mfu": 0.25})
    assert flops_metrics(4e15, 2.0, 8, None) == pytest.approx({"tflops_per_device": 250.0})


def _xla_train_flops(name: str, batch: dict, **overrides) -> tuple[float, float]:
    """(the registry's count, XLA's cost analysis) of one compiled train step of `name`."""
    model = zoo.create_model(name, dropout_rate=0.0, **overrides)
    task = get_task(get_spec(name).task, model.config)
    config = tiny_config()
    schedule = learning_rate_schedule(config)
    state = create_train_state(model, create_optimizer(config, schedule),
                               task.example_inputs(model.config, batch["inputs"].shape[1]),
                               jax.random.key(0))
    compiled = jit_train_step(task, learning_rate_fn=schedule).lower(
        state, batch, jax.random.key(1)).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    B, T = batch["inputs"].shape
    return get_spec(name).train_flops(model.config, task, B, T), cost["flops"]


RNN = dict(vocab_size=64, emb_dim=256, hidden_size=256, num_layers=2, unroll=16)


@pytest.mark.parametrize("name,T,overrides", [
    ("gpt_tiny", 64, {}),
    ("bert_tiny", 64, {}),
    ("bert_tiny_classifier", 64, {}),
    ("bert_tiny_tagger", 64, {}),
    ("transformer_tiny", 64, {"vocab_size": 64}),
    # Unrolled: XLA's cost analysis counts a while loop's body once, not per time step.
    ("lstm_lm", 16, RNN),
    ("gru_lm", 16, RNN),
    ("rnn_lm", 16, RNN),
])
def test_counts_are_the_matmul_part_of_xla_count(name, T, overrides):
    """The matmul count is most of XLA's count of the whole compiled step (which adds the
    softmax, LayerNorm, GELU, gates, loss and AdamW element-wise FLOPs): within 10%, below."""
    rng = np.random.default_rng(0)
    B = 4
    tokens = rng.integers(4, 60, size=(B, T + 1), dtype=np.int32)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
             "weights": np.ones((B, T), np.float32), "lengths": np.full((B,), T, np.int32)}
    if name == "bert_tiny_classifier":
        batch = {"inputs": batch["inputs"], "lengths": batch["lengths"],
                 "labels": np.arange(B, dtype=np.int32) % 2}
    elif name == "bert_tiny_tagger":  # tags in [0, num_classes)
        batch["targets"] = batch["targets"] % 2
    counted, xla = _xla_train_flops(name, batch, **overrides)
    assert 0.9 * xla < counted < xla


def test_loop_logs_mfu_against_the_devices_peak(tmp_path, monkeypatch):
    """The loop's train records carry tokens/s, TFLOP/s per device and, where the chip's peak
    is known (here a stated 0.5 TFLOP/s for the CPU), MFU = TFLOP/s per device / peak; the
    first step (it compiles) is not timed."""
    from zoo.train import loop

    asked = []
    monkeypatch.setattr(loop.throughput, "peak_tflops",
                        lambda kind, dtype: asked.append((kind, dtype)) or 0.5)
    loop.train_and_evaluate(tiny_config(num_train_steps=3, log_every_steps=1, eval_every_steps=1,
                                        checkpoint_every_steps=1), str(tmp_path))
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    first, *timed = [r for r in records if r["split"] == "train"]
    assert asked == [(jax.devices()[0].device_kind, "float32")] and len(timed) == 2
    assert not {"tokens_per_sec", "tflops_per_device", "mfu"} & set(first)
    for r in timed:
        assert r["tokens_per_sec"] > 0 and r["tflops_per_device"] > 0
        assert r["mfu"] == pytest.approx(r["tflops_per_device"] / 0.5)


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_training_clock_leaves_out_the_first_step_and_the_pauses():
    now, state = FakeClock(), jax.numpy.zeros(3)
    clock = TrainingClock(10, now)  # resumed at step 10
    now.t = 30.0  # step 11 compiled and ran
    clock.stepped(11, state)
    assert clock.window(11) == (0, 0.0)  # the first step alone: nothing measured
    now.t = 32.0
    clock.stepped(12, state)
    with clock.paused(state):  # an eval of 5 s
        now.t = 37.0
    now.t = 38.0
    clock.stepped(13, state)
    assert clock.window(13) == (2, 3.0)  # steps 12 and 13: 30 -> 38 s less the eval
    with clock.paused(state):  # a checkpoint between windows
        now.t = 50.0
    now.t = 51.0
    assert clock.window(14) == (1, 1.0)
