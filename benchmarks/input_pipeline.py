"""Input-pipeline throughput against the train step's consumption, side by side in one run.

    python -m benchmarks.input_pipeline [--batches 300] [--steps 20] [--workers 0 2] [--json PATH]

For each workload (gpt_tiny on byte windows of `zoo_text`, the same rows packed by document,
lstm_lm as `experiments/configs/lstm_char.py` trains it) and each worker count:
  input     batches/s (and examples/s, tokens/s) that `TrainIterator` hands out with nothing
            else running: the input capacity;
  step      steps/s of the zoo's jitted train step of the same config on one fixed batch: the
            consumption rate (ratio = capacity / consumption, > 1: the step waits on nothing);
  fed       ms/step of the same step fed from the iterator as the loop feeds it, vs fixed.
"""
from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from benchmarks.harness import LoadMeter, ZooStep, log, machine_info, print_table, write_json
from zoo.data.pipelines.batch_stream import BatchStream
from zoo.data.pipelines.lm_batches import LMWindows, load_texts, token_stream
from zoo.data.pipelines.loader import TrainIterator
from zoo.data.pipelines.tokenizers import get_tokenizer

LSTM_CHAR = dict(emb_dim=128, hidden_size=512, num_layers=2)
# name: (model, model overrides, global batch, seq_len, rows packed by document)
WORKLOADS = {"gpt_tiny": ("gpt_tiny", {}, 16, 256, False),
             "gpt_tiny packed": ("gpt_tiny", {}, 16, 256, True),
             "lstm_lm": ("lstm_lm", LSTM_CHAR, 32, 128, False)}


def train_stream(texts: list[str], batch: int, seq_len: int, packed: bool) -> BatchStream:
    tokenizer = get_tokenizer("byte")
    if packed:
        from zoo.data.pipelines.packing import PackedLMRows, document_tokens

        rows = PackedLMRows(document_tokens(texts, tokenizer), seq_len)
    else:
        rows = LMWindows(token_stream(texts, tokenizer), seq_len)
    return BatchStream(rows, batch, seed=0)


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


def fed_step_s(step: ZooStep, stream: BatchStream, workers: int, n: int) -> float:
    """Seconds per train step when each batch comes from the iterator (after 2 warm-up steps)."""
    state = step.state
    with TrainIterator(stream, workers=workers) as it:
        for k in range(n + 2):
            if k == 2:
                jax.block_until_ready(state)
                t0 = time.perf_counter()
            state, metrics = step.step(state, jax.device_put(next(it)), step.rng)
        jax.block_until_ready((state, metrics))
    step.state = state
    return (time.perf_counter() - t0) / n


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, default=300, help="batches timed per input run")
    p.add_argument("--steps", type=int, default=20, help="train steps timed per step run")
    p.add_argument("--workers", type=int, nargs="*", default=[0, 2])
    p.add_argument("--workloads", nargs="*", default=list(WORKLOADS), choices=list(WORKLOADS))
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    texts = load_texts("zoo_text", "train")
    results = {"machine": machine_info(None), "rows": []}
    header = ["workload", "B x T", "workers", "start-up s", "input batches/s", "examples/s",
              "tokens/s", "step batches/s", "capacity / consumption", "fed ms/step",
              "fixed ms/step", "others' cores"]
    table = []
    for name in args.workloads:
        model, overrides, batch, seq_len, packed = WORKLOADS[name]
        stream = train_stream(texts, batch, seq_len, packed)
        step = ZooStep(model, stream.get(0), **overrides)
        step.run(2)
        fixed_s = step.run(args.steps)
        for workers in args.workers:
            log(f"{name}, {workers} workers ...")
            with LoadMeter() as load:  # cores other processes used meanwhile
                rate = input_rate(stream, workers, args.batches)
                fed_s = fed_step_s(step, stream, workers, args.steps)
            row = {"workload": name, "batch": batch, "seq_len": seq_len, "workers": workers,
                   **rate, "step_batches_per_s": 1 / fixed_s, "fixed_ms": fixed_s * 1e3,
                   "fed_ms": fed_s * 1e3, "ratio": rate["batches_per_s"] * fixed_s,
                   "others_cores": load.others}
            results["rows"].append(row)
            table.append([name, f"{batch} x {seq_len}", workers, f"{rate['startup_s']:.2f}",
                          f"{rate['batches_per_s']:,.0f}", f"{rate['examples_per_s']:,.0f}",
                          f"{rate['tokens_per_s']:,.0f}", f"{1 / fixed_s:.2f}",
                          f"{row['ratio']:,.0f}x", f"{fed_s * 1e3:.0f}", f"{fixed_s * 1e3:.0f}",
                          "?" if load.others is None else f"{load.others:.1f}"])
    print_table(header, table)
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
