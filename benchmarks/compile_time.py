"""Compile time of the zoo's train step (`benchmarks.mfu.build_step`): time to the first step
with a cold and a warm persistent compilation cache, and compile time against depth.

    python -m benchmarks.compile_time [--workload gpt2_small bert_base] [--depths 6 12 24]
        [--scan both|on|off] [--dtype bfloat16] [--batch 8] [--seq-len T]
        [--override KEY=VALUE ...] [--time-budget S] [--json PATH]

(a) Per `--workload`, two fresh processes (`--child`) sharing a new cache directory, timed from
their start to the first loss. (b) `lower + compile` of gpt2_small at each depth, scanned or
not, in this process without the cache, after an untimed warm-up compile. Results:
benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import (Parts, add_options, command_line, log, machine_info,
                                parse_overrides, print_table, write_json)
from benchmarks.mfu import SEQ_LEN, WORKLOADS, build_step

SCAN = {"both": (True, False), "on": (True,), "off": (False,)}
RESULT_PREFIX = "compile_time child result: "
REPO_ROOT = Path(__file__).resolve().parents[1]


def child(args) -> None:
    """The child process's part of (a): build the step, print the timings as one JSON line."""
    main_t = time.time()  # Python is up, and this module imported (it imports no jax)
    import zoo.models  # noqa: F401  (jax, flax and the model families)
    import zoo.tasks  # noqa: F401
    import zoo.train.step  # noqa: F401

    imported_t = time.time()
    step, _ = build_step(args.child, args.batch, args.seq_len or SEQ_LEN[args.child], args.dtype,
                         parse_overrides(args.override))
    loss_t = time.time()  # step.first_loss is a Python float: the loss is on the host
    print(RESULT_PREFIX + json.dumps({
        "main_t": main_t, "imported_t": imported_t, "loss_t": loss_t,
        "compile_s": step.compile_s, "first_loss": step.first_loss,
        "num_params": step.num_params, "scan_layers": step.model.config.scan_layers,
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
    cache_dir = tempfile.mkdtemp(prefix="zoo_jax_cache_")
    try:
        runs = []
        for cache in ("cold", "warm"):
            r = {"workload": name, "cache": cache, **run_child(name, args, cache_dir),
                 "cache_files_after": sum(len(f) for _, _, f in os.walk(cache_dir))}
            log(f"{name} ({cache} cache): first loss {r['first_loss']:.4f} on the host "
                f"{r['process_to_first_loss_s']:.1f} s after the process started; "
                f"{r['cache_files_after']} files in the cache")
            runs.append(r)
        return runs
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


def depth_point(depth: int, scan: bool, args, overrides: dict[str, Any]) -> dict[str, Any]:
    step, _ = build_step("gpt2_small", args.batch, args.seq_len or SEQ_LEN["gpt2_small"],
                         args.dtype, {**overrides, "num_layers": depth, "scan_layers": scan})
    log(f"gpt2_small num_layers={depth} scan_layers={scan}: lower + compile "
        f"{step.compile_s:.2f} s")
    return {"num_layers": depth, "scan_layers": scan, "compile_s": step.compile_s,
            "num_params": step.num_params, "first_loss": step.first_loss}


def depth_sweep(args, overrides: dict[str, Any],
                parts: Parts) -> tuple[float | None, list[dict[str, Any]]]:
    """(the warm-up's compile seconds, a `depth_point` per depth and scan setting), with the
    persistent cache off."""
    import jax

    cache_enabled = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        warmup = parts.run("depth warm-up", depth_point, 1, False, args, overrides)
        points = [parts.run(f"gpt2_small num_layers={depth} scan_layers={scan}", depth_point,
                            depth, scan, args, overrides)
                  for depth in args.depths for scan in SCAN[args.scan]]
    finally:
        jax.config.update("jax_enable_compilation_cache", cache_enabled)
    return warmup["compile_s"] if warmup else None, [r for r in points if r is not None]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", nargs="*", default=list(WORKLOADS), choices=WORKLOADS,
                   help="models of (a), time to the first step (none: skip (a))")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--seq-len", type=int, default=None,
                   help="default: 1024 for gpt2_small, 512 for bert_base")
    add_options(p, batch=8, time_budget=math.inf, json=None)
    p.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                   help="model config overrides for every measurement, e.g. emb_dim=64")
    p.add_argument("--depths", type=int, nargs="*", default=[6, 12, 24],
                   help="gpt2_small num_layers of (b) (none: skip (b))")
    p.add_argument("--scan", choices=tuple(SCAN), default="both",
                   help="scan_layers settings of (b)")
    p.add_argument("--child", choices=WORKLOADS, help=argparse.SUPPRESS)  # see `child`
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return {}
    overrides = parse_overrides(args.override)
    parts = Parts(args.time_budget)

    first = []  # (a) before this process starts jax: the children get the device to themselves
    for name in args.workload:
        first += parts.run(f"{name} time to first step", first_step, name, args) or []
    warmup_s, depths = depth_sweep(args, overrides, parts) if args.depths else (None, [])

    if first:
        print_table(["workload", "cache", "process start to first loss (s)",
                     "Python start-up (s)", "imports (s)", "lower + compile (s)", "first loss"], [
            [r["workload"], r["cache"]] + [f"{r[k]:.1f}" for k in (
                "process_to_first_loss_s", "python_startup_s", "imports_s", "compile_s")]
            + [f"{r['first_loss']:.4f}"] for r in first])
    if depths:
        log(f"after a warm-up compile (1 layer, unscanned) of {warmup_s or float('nan'):.2f} s:")
        print_table(["gpt2_small num_layers", "scan_layers", "lower + compile (s)"], [
            [r["num_layers"], r["scan_layers"], f"{r['compile_s']:.2f}"] for r in depths])
    parts.report()
    info = machine_info() | {"command": command_line("benchmarks.compile_time", argv),
                            "elapsed_s": parts.elapsed()}
    out = {"info": info, "args": vars(args), "first_step": first, "warmup_compile_s": warmup_s,
           "depths": depths, "skipped": parts.skipped, "errors": parts.errors}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
