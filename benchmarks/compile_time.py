"""Time to the first step of the zoo's train step (`benchmarks.train_step.zoo_side`) in a fresh
process, with a cold and then a warm persistent compilation cache.

    python -m benchmarks.compile_time [--workload gpt2_small bert_base] [--dtype bfloat16]
        [--batch 8] [--seq-len T] [--override KEY=VALUE ...] [--time-budget S] [--json PATH]

Per `--workload`, two fresh processes (`--child`) sharing a new cache directory, timed from
their start to the first loss on the host. Compile time against depth, scanned or not (the
cache off): `python -m benchmarks.train_step --workload gpt2_small --torch --variant
warmup:num_layers=1 d6:num_layers=6,scan_layers=False d6s:num_layers=6,scan_layers=True ...`
(its "first step s" is the lower + compile of each variant; the first variant warms up).
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

from benchmarks.harness import (Parts, add_options, command_line, log, machine_info,
                                parse_overrides, print_table, write_json)
from benchmarks.train_step import WORKLOADS, zoo_side

RESULT_PREFIX = "compile_time child result: "
REPO_ROOT = Path(__file__).resolve().parents[1]


def child(args) -> None:
    """The child process's part of (a): build the step, print the timings as one JSON line."""
    main_t = time.time()  # Python is up, and this module imported (it imports no jax)
    import zoo.models  # noqa: F401  (jax, flax and the model families)
    import zoo.tasks  # noqa: F401
    import zoo.train.step  # noqa: F401

    imported_t = time.time()
    step = zoo_side(args.child, args.batch, args.seq_len or None, compute_dtype=args.dtype,
                    **parse_overrides(args.override))
    loss_t = time.time()  # step.first_loss is a Python float: the loss is on the host
    print(RESULT_PREFIX + json.dumps({
        "main_t": main_t, "imported_t": imported_t, "loss_t": loss_t,
        "compile_s": step.compile_s, "first_loss": step.first_loss,
        "num_params": step.num_params,
        "scan_layers": getattr(step.model.config, "scan_layers", None),
        **machine_info()}), flush=True)


def run_child(name: str, args, cache_dir: str) -> dict[str, Any]:
    """One fresh process to the first step of `name`, with the persistent cache in `cache_dir`."""
    cmd = [sys.executable, "-m", "benchmarks.compile_time", "--child", name,
           "--batch", str(args.batch), "--dtype", args.dtype, "--override", *args.override]
    cmd += ["--seq-len", str(args.seq_len)] if args.seq_len else []
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache_dir,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    start_t = time.time()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode or not lines:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n"
                           f"{(proc.stdout + proc.stderr)[-3000:]}")
    r = json.loads(lines[-1][len(RESULT_PREFIX):])
    return {"process_to_first_loss_s": r["loss_t"] - start_t,
            "python_startup_s": r["main_t"] - start_t,
            "imports_s": r["imported_t"] - r["main_t"],
            "build_to_first_loss_s": r["loss_t"] - r["imported_t"],
            "compile_s": r["compile_s"],  # lower + compile of the train step, within the above
            **{k: r[k] for k in ("first_loss", "num_params", "scan_layers", "device",
                                 "platform", "jax")}}


def first_step(name: str, args) -> list[dict[str, Any]]:
    """Cold then warm time to the first step of `name`, sharing one fresh cache directory."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="zoo_jax_cache_") as cache_dir:
        for cache in ("cold", "warm"):
            r = {"workload": name, "cache": cache, **run_child(name, args, cache_dir),
                 "cache_files_after": sum(len(f) for _, _, f in os.walk(cache_dir))}
            log(f"{name} ({cache} cache): first loss {r['first_loss']:.4f} on the host "
                f"{r['process_to_first_loss_s']:.1f} s after the process started; "
                f"{r['cache_files_after']} files in the cache")
            runs.append(r)
    return runs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", nargs="*", default=["gpt2_small", "bert_base"],
                   choices=list(WORKLOADS),
                   help="the workloads (benchmarks.train_step) timed to their first step")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    add_options(p, batch=8, seq_len=0, time_budget=math.inf, json=None)  # T 0: the workload's
    p.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--child", choices=list(WORKLOADS), help=argparse.SUPPRESS)  # see `child`
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return {}
    parts, first = Parts(args.time_budget), []
    for name in args.workload:  # this process never starts jax: the children own the device
        first += parts.run(f"{name} time to first step", first_step, name, args) or []
    print_table(["workload", "cache", "process start to first loss (s)", "Python start-up (s)",
                 "imports (s)", "lower + compile (s)", "first loss"], [
        [r["workload"], r["cache"]] + [f"{r[k]:.1f}" for k in (
            "process_to_first_loss_s", "python_startup_s", "imports_s", "compile_s")]
        + [f"{r['first_loss']:.4f}"] for r in first])
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
