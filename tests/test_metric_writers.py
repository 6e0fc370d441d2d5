"""The training loop's metric files: JSON lines and TensorBoard events, written without PyTorch."""
import glob
import json
import os
import struct
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WRITE = """
import sys
from zoo.train import loop  # what a training launch imports
from zoo.train.metric_writers import MetricWriter
w = MetricWriter(sys.argv[1])
w.write(3, {"loss": 1.5, "accuracy": float("nan")}, split="train")
w.close()
"""
LOADED = 'print(sorted(m for m in ("torch", "tensorboardX") if m in sys.modules))'


def _tf_records(path: str) -> list[bytes]:
    """The payloads of a TFRecord file: (length u64, crc u32, payload, crc u32) records."""
    records = []
    with open(path, "rb") as f:
        while header := f.read(12):
            (length,) = struct.unpack("<Q", header[:8])
            records.append(f.read(length))
            f.read(4)
    return records


def _write(workdir, then: str = "") -> str:
    """Runs WRITE, then `then`, in a fresh process: which of torch and tensorboardX it loaded."""
    code = WRITE + then + "\n" + LOADED
    out = subprocess.run([sys.executable, "-c", code, str(workdir)], capture_output=True,
                         text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()[-1]


def test_metrics_reach_jsonl_and_tensorboard_without_importing_torch(tmp_path):
    assert _write(tmp_path) == "['tensorboardX']"

    [line] = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(line) == {"step": 3, "split": "train", "loss": 1.5, "accuracy": "nan"}

    from tensorboardX.proto import event_pb2

    [events_file] = glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
    scalars = {}
    for record in _tf_records(events_file):
        event = event_pb2.Event.FromString(record)
        for value in event.summary.value:
            scalars[value.tag] = (event.step, value.simple_value)
    assert scalars["train/loss"] == (3, 1.5)
    assert "train/accuracy" in scalars


def test_torch_still_imports_afterwards(tmp_path):
    pytest.importorskip("torch")
    assert _write(tmp_path, "import torch") == "['tensorboardX', 'torch']"


def test_writer_closes_its_files_when_the_run_fails(tmp_path):
    """The loop holds its writer in a `with`: a run that raises (a NaN stop, say) still closes
    the metrics file and the TensorBoard writer, before tensorboardX's exit hook would try."""
    from zoo.train.metric_writers import MetricWriter

    with pytest.raises(RuntimeError, match="boom"):
        with MetricWriter(str(tmp_path)) as writer:
            writer.write(1, {"loss": 1.0})
            raise RuntimeError("boom")
    assert writer._jsonl.closed
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["loss"] == 1.0


def test_a_resumed_run_drops_what_was_logged_past_its_checkpoint(tmp_path):
    """Steps 1-5 logged, the last line cut short by a kill; the run resumes from step 3."""
    from zoo.train.metric_writers import MetricWriter

    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "split": "train", "loss": 1.0}) for s in range(1, 6)]
    path.write_text("\n".join(lines) + "\n" + '{"step": 6, "spl')
    with MetricWriter(str(tmp_path), start_step=3) as writer:
        writer.write(4, {"loss": 0.5})
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in records] == [(1, 1.0), (2, 1.0), (3, 1.0), (4, 0.5)]
    with MetricWriter(str(tmp_path), start_step=0):  # a fresh start keeps nothing logged after 0
        pass
    assert path.read_text() == ""
