"""Time to the first step of the zoo's train step (`benchmarks.train_step.zoo_side`) in a fresh
process, with a cold and then a warm persistent compilation cache.

    python -m benchmarks.compile_time [--workload gpt2_small bert_base] [--dtype bfloat16]
        [--batch 8] [--seq-len T] [--override KEY=VALUE ...] [--time-budget S] [--json PATH]

Per `--workload`, two fresh processes share a new cache directory; each is timed from its start
to its first loss on the host: Python start-up, imports, then building, compiling and running
the step. Compile time against depth is a `train_step --variant` list (`benchmarks/gpu_suite.sh`,
part `depths`). This process never starts jax: the children own the device.
Results: benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import (Parts, add_options, command_line, log, parse_overrides,
                                print_table, write_json)
from benchmarks.train_step import WORKLOADS

REPO_ROOT = Path(__file__).resolve().parents[1]
CHILD = """import json, sys, time
main_t = time.time()
import benchmarks.harness, benchmarks.train_step, zoo.models, zoo.tasks, zoo.train.step
imported_t = time.time()
step = benchmarks.train_step.zoo_side(**json.loads(sys.argv[1]))
loss_t = time.time()  # step.first_loss is a Python float: the loss is on the host
print(json.dumps({"main_t": main_t, "imported_t": imported_t, "loss_t": loss_t,
                  "compile_s": step.compile_s, "first_loss": step.first_loss,
                  "num_params": step.num_params,
                  "scan_layers": getattr(step.model.config, "scan_layers", None),
                  **benchmarks.harness.machine_info()}))"""


def first_step(name: str, args) -> list[dict[str, Any]]:
    """Cold then warm time to the first step of `name`, sharing one fresh cache directory."""
    side = {"name": name, "batch": args.batch, "seq_len": args.seq_len or None,
            "compute_dtype": args.dtype, **parse_overrides(args.override)}
    runs = []
    with tempfile.TemporaryDirectory(prefix="zoo_jax_cache_") as cache_dir:
        env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache_dir,
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
        for cache in ("cold", "warm"):
            start_t = time.time()
            proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(side)], cwd=REPO_ROOT,
                                  env=env, capture_output=True, text=True)
            if proc.returncode:
                raise RuntimeError(f"the {cache}-cache process exited with {proc.returncode}:\n"
                                   f"{(proc.stdout + proc.stderr)[-3000:]}")
            r = json.loads(proc.stdout.splitlines()[-1])
            runs.append({"workload": name, "cache": cache,
                         "process_to_first_loss_s": r["loss_t"] - start_t,
                         "python_startup_s": r["main_t"] - start_t,
                         "imports_s": r["imported_t"] - r["main_t"],
                         "build_to_first_loss_s": r["loss_t"] - r["imported_t"], **r,
                         "cache_files_after": sum(len(f) for _, _, f in os.walk(cache_dir))})
            log(f"{name} ({cache} cache): first loss {r['first_loss']:.4f} on the host "
                f"{runs[-1]['process_to_first_loss_s']:.1f} s after the process started "
                f"(compile {r['compile_s']:.1f} s); {runs[-1]['cache_files_after']} cache files")
    return runs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", nargs="*", default=["gpt2_small", "bert_base"],
                   choices=list(WORKLOADS))
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    add_options(p, batch=8, seq_len=0, time_budget=math.inf, json=None)  # T 0: the workload's
    p.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    parts, first = Parts(args.time_budget), []
    for name in args.workload:
        first += parts.run(f"{name} time to first step", first_step, name, args) or []
    print_table({"workload": "{workload}", "cache": "{cache}",
                 "process start to first loss (s)": "{process_to_first_loss_s:.1f}",
                 "Python start-up (s)": "{python_startup_s:.1f}", "imports (s)": "{imports_s:.1f}",
                 "lower + compile (s)": "{compile_s:.1f}", "first loss": "{first_loss:.4f}"}, first)
    parts.report()
    info = {"command": command_line("benchmarks.compile_time", argv),
            "elapsed_s": parts.elapsed()} | {k: first[0][k] for k in ("device", "platform", "jax")
                                             if first}
    out = {"info": info, "args": vars(args), "first_step": first, "skipped": parts.skipped,
           "errors": parts.errors}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
