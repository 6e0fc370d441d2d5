"""Soak: thousands of tiny steps with periodic evals and checkpoints keep host memory flat and
leave no device buffers behind."""
import os

import jax
import pytest

from zoo.train import loop
from zoo.train.metric_writers import MetricWriter

from run_configs import tiny_config

STEPS = 6000


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads /proc/self/statm")
def test_a_long_run_keeps_memory_and_live_buffers_flat(tmp_path, monkeypatch):
    samples = []  # (step, host RSS in MiB, live device arrays) at every metrics write
    write = MetricWriter.write

    def sampling_write(self, step, metrics, split):
        samples.append((step, _rss_mb(), len(jax.live_arrays())))
        return write(self, step, metrics, split)

    monkeypatch.setattr(MetricWriter, "write", sampling_write)
    config = tiny_config(num_train_steps=STEPS, emb_dim=16, num_heads=2, num_layers=1,
                         mlp_dim=32, seq_len=16, max_len=16, per_device_batch_size=1,
                         parallel="jit", log_every_steps=50, eval_every_steps=250,
                         num_eval_batches=2, checkpoint_every_steps=500, keep_checkpoints=2)
    summary = loop.train_and_evaluate(config, str(tmp_path))
    assert summary["step"] == STEPS

    warm = [s for s in samples if s[0] >= STEPS // 3]  # compiled, caches and pools filled
    rss = [mb for _, mb, _ in warm]
    live = {n for _, _, n in warm}
    assert len(live) <= 2, f"live device arrays vary after warm-up: {sorted(live)}"
    # Flat: the second half of the run adds no more than a small, bounded amount.
    half = len(rss) // 2
    growth = max(rss[half:]) - max(rss[:half])
    print(f"live arrays {sorted(live)}; RSS {rss[0]:.0f} -> {rss[-1]:.0f} MiB")
    assert growth < 25, f"host memory grew {growth:.1f} MiB over {STEPS // 3} steps: {rss}"
