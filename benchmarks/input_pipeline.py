"""Input-pipeline throughput against the train step's consumption, side by side in one run.

    python -m benchmarks.input_pipeline [--batches 300] [--steps 20] [--workers 0 2] [--json PATH]

For each workload (gpt_tiny on byte windows of `zoo_text`, the same rows packed by document,
lstm_lm as `experiments/configs/lstm_char.py` trains it; `--workloads`) and each worker count:
  input     batches/s (and examples/s, tokens/s) that `TrainIterator` hands out with nothing
            else running: the input capacity (`--batches` batches timed per input run);
  step      steps/s of the zoo's jitted train step of the same config on one fixed batch: the
            consumption rate (ratio = capacity / consumption, > 1: the step waits on nothing);
  fed       ms/step of the same step fed from the iterator as the loop feeds it, vs fixed
            (`--steps` train steps timed per step run, both).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.harness import (LoadMeter, ZooStep, add_options, log, machine_info, print_table,
                                write_json)
from zoo.data.pipelines import create_data
from zoo.data.pipelines.batch_stream import BatchStream
from zoo.data.pipelines.loader import TrainIterator
from zoo.train.config import base_config

LSTM_CHAR = dict(emb_dim=128, hidden_size=512, num_layers=2)
# name: (model, model overrides, global batch, seq_len, rows packed by document)
WORKLOADS = {"gpt_tiny": ("gpt_tiny", {}, 16, 256, False),
             "gpt_tiny packed": ("gpt_tiny", {}, 16, 256, True),
             "lstm_lm": ("lstm_lm", LSTM_CHAR, 32, 128, False)}


def input_rate(stream: BatchStream, workers: int, n: int) -> dict[str, float]:
    """What the iterator hands out per second once started (start-up reported apart)."""
    t0 = time.perf_counter()
    with TrainIterator(stream, workers=workers) as it:
        first = next(it)
        startup = time.perf_counter() - t0
        t0 = time.perf_counter()
        tokens = sum(int(np.count_nonzero(next(it)["weights"])) for _ in range(n))
        dt = time.perf_counter() - t0
    rows, seq_len = first["inputs"].shape
    return {"startup_s": startup, "batches_per_s": n / dt, "examples_per_s": n * rows / dt,
            "tokens_per_s": n * rows * seq_len / dt, "weighted_tokens_per_s": tokens / dt}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_options(p, batches=300, steps=20, json=None)
    p.add_argument("--workers", type=int, nargs="*", default=[0, 2])
    p.add_argument("--workloads", nargs="*", default=list(WORKLOADS), choices=list(WORKLOADS))
    args = p.parse_args(argv)
    results = {"machine": machine_info(None), "rows": []}
    for name in args.workloads:
        model, overrides, batch, seq_len, packed = WORKLOADS[name]
        config = base_config(model, seq_len=seq_len, packing=packed, **overrides)  # zoo_text
        stream = create_data("causal_lm", config, batch).train  # the loop's train batches
        step = ZooStep(model, stream.get(0), **overrides)
        step.run(2)
        fixed_s = step.run(args.steps)
        for workers in args.workers:
            log(f"{name}, {workers} workers ...")
            with LoadMeter() as load:  # cores other processes used meanwhile
                rate = input_rate(stream, workers, args.batches)
                with TrainIterator(stream, workers=workers) as it:  # fed as the loop feeds it
                    step.run(2, it)
                    fed_s = step.run(args.steps, it)
            results["rows"].append({
                "workload": name, "batch": batch, "seq_len": seq_len, "workers": workers, **rate,
                "step_batches_per_s": 1 / fixed_s, "fixed_ms": fixed_s * 1e3, "fed_ms": fed_s * 1e3,
                "ratio": rate["batches_per_s"] * fixed_s, "others_cores": load.others})
    print_table({"workload": "{workload}", "B x T": "{batch} x {seq_len}", "workers": "{workers}",
                 "start-up s": "{startup_s:.2f}", "input batches/s": "{batches_per_s:,.0f}",
                 "examples/s": "{examples_per_s:,.0f}", "tokens/s": "{tokens_per_s:,.0f}",
                 "step batches/s": "{step_batches_per_s:.2f}",
                 "capacity / consumption": "{ratio:,.0f}x", "fed ms/step": "{fed_ms:.0f}",
                 "fixed ms/step": "{fixed_ms:.0f}", "others' cores": "{others_cores:.1f}"},
                results["rows"])
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
