"""Compile time of the zoo's train step: time to the first step (cold and warm persistent
compilation cache), and compile time against depth with and without `scan_layers`.

    python -m benchmarks.compile_time [--workload gpt2_small bert_base] [--dtype bfloat16]
                                      [--batch 8] [--seq-len T] [--override KEY=VALUE ...]
                                      [--depths 6 12 24] [--scan both|on|off]
                                      [--time-budget S] [--json PATH]

Tiny, on a CPU (as the tests run it):

    python -m benchmarks.compile_time --override emb_dim=64 num_heads=2 mlp_dim=128 \\
        vocab_size=256 --batch 2 --seq-len 32 --depths 1 2

The train step is `benchmarks.mfu`'s (`build_step`: `harness.ZooStep` with the causal-LM task
for gpt2_small, the masked-LM task for bert_base), model compute dtype `--dtype`,
dropout 0, random tokens of B x T = `--batch` x `--seq-len` (default T: 1024 for gpt2_small,
512 for bert_base, as in `benchmarks.mfu`).

(a) Time to the first step, per `--workload` (none with `--workload` given no names). Each
    measurement is a fresh process (`python -m benchmarks.compile_time --child NAME ...`),
    timed from just before the parent starts it, so before Python and `import jax`, to the
    moment the first step's loss is on the host. JAX's persistent compilation cache points at
    a new temporary directory (environment variables JAX_COMPILATION_CACHE_DIR and
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0, so every compiled function is cached): the
    first process finds it empty ("cold"), the second finds the first's entries ("warm"). The
    child reports where the time went: Python's start-up (to this module's `main`), the
    imports (jax, flax, optax, the zoo's models, tasks and train step), and `lower + compile`
    of the train step alone (with a warm cache, that is mostly reading the cache); the rest is
    building the model, initialising the parameters (a jitted init, compiled too) and running
    the first step.
(b) Compile time against depth (none with `--depths` given no numbers): `lower + compile` of
    the gpt2_small train step with `num_layers` set to each of `--depths`, with `scan_layers`
    True and False (`--scan both`), or one of them (`on` / `off`), in this process, with the
    persistent cache off. An unscanned stack is unrolled, so its program and compile time grow
    with the depth; a scanned one compiles one layer. The process's first compile pays costs
    that later ones do not (on a GPU presumably XLA's autotuning and kernel compilation, whose
    results the process keeps: on an H200, gpt2_small at 6 scanned layers took 53 s as the
    first compile, then 24 scanned layers 5 s), so an untimed warm-up compile (1 layer,
    unscanned) comes first and its time is reported apart (`warmup_compile_s`).

Each measurement is guarded: a failure is reported and the others still run; with
`--time-budget`, the ones that would start after it is spent are skipped (`harness.Parts`).
Results: a table per part, and `--json`.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Parts, command_line, log, parse_overrides, write_json
from benchmarks.mfu import SEQ_LEN, WORKLOADS, build_step

SCAN = {"both": (True, False), "on": (True,), "off": (False,)}
RESULT_PREFIX = "compile_time child result: "
REPO_ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# (a) time to the first step, in child processes


def child(args) -> None:
    """The child process's part of (a): build the step, print the timings as one JSON line."""
    main_t = time.time()  # Python is up, and this module imported (it imports no jax)
    import jax

    import zoo.models  # noqa: F401  (flax and the model families)
    import zoo.tasks  # noqa: F401
    import zoo.train.step  # noqa: F401

    imported_t = time.time()
    name = args.child
    step, _ = build_step(name, args.batch, args.seq_len or SEQ_LEN[name], args.dtype,
                         parse_overrides(args.override))
    loss_t = time.time()  # step.first_loss is a Python float: the loss is on the host
    device = jax.devices()[0]
    print(RESULT_PREFIX + json.dumps({
        "main_t": main_t, "imported_t": imported_t, "loss_t": loss_t,
        "compile_s": step.compile_s, "first_loss": step.first_loss,
        "num_params": step.num_params, "scan_layers": step.model.config.scan_layers,
        "device": device.device_kind, "platform": device.platform, "jax": jax.__version__}),
        flush=True)


def run_child(name: str, args, cache_dir: str) -> dict[str, Any]:
    """One fresh process to the first step of `name`, with the persistent cache in `cache_dir`."""
    cmd = [sys.executable, "-m", "benchmarks.compile_time", "--child", name,
           "--batch", str(args.batch), "--dtype", args.dtype, "--override", *args.override]
    if args.seq_len:
        cmd += ["--seq-len", str(args.seq_len)]
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache_dir,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    start_t = time.time()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode or not lines:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n"
                           f"{(proc.stdout + proc.stderr)[-3000:]}")
    r = json.loads(lines[-1][len(RESULT_PREFIX):])
    return {
        "process_to_first_loss_s": r["loss_t"] - start_t,
        "python_startup_s": r["main_t"] - start_t,
        "imports_s": r["imported_t"] - r["main_t"],
        "build_to_first_loss_s": r["loss_t"] - r["imported_t"],
        "compile_s": r["compile_s"],  # lower + compile of the train step, within the above
        **{k: r[k] for k in ("first_loss", "num_params", "scan_layers", "device", "platform",
                             "jax")},
    }


def first_step(name: str, args) -> list[dict[str, Any]]:
    """Cold then warm time to the first step of `name`, sharing one fresh cache directory."""
    cache_dir = tempfile.mkdtemp(prefix="zoo_jax_cache_")
    try:
        runs = []
        for cache in ("cold", "warm"):
            r = {"workload": name, "cache": cache, **run_child(name, args, cache_dir),
                 "cache_files_after": sum(len(f) for _, _, f in os.walk(cache_dir))}
            log(f"{name} ({cache} cache): first loss {r['first_loss']:.4f} on the host "
                f"{r['process_to_first_loss_s']:.1f} s after the process started (Python "
                f"start-up {r['python_startup_s']:.1f} s, imports {r['imports_s']:.1f} s, "
                f"lower + compile {r['compile_s']:.1f} s); {r['cache_files_after']} files in "
                f"the cache")
            runs.append(r)
        return runs
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# (b) compile time against depth, in this process


def depth_point(depth: int, scan: bool, args, overrides: dict[str, Any]) -> dict[str, Any]:
    name = "gpt2_small"
    step, _ = build_step(name, args.batch, args.seq_len or SEQ_LEN[name], args.dtype,
                         {**overrides, "num_layers": depth, "scan_layers": scan})
    r = {"num_layers": depth, "scan_layers": scan, "compile_s": step.compile_s,
         "num_params": step.num_params, "first_loss": step.first_loss}
    log(f"gpt2_small num_layers={depth} scan_layers={scan}: lower + compile "
        f"{step.compile_s:.2f} s")
    return r


def depth_sweep(args, overrides: dict[str, Any],
                parts: Parts) -> tuple[float | None, list[dict[str, Any]]]:
    """(the warm-up's compile seconds, a `depth_point` per depth and scan setting), with the
    persistent cache off."""
    import jax

    cache_enabled = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        log("warm-up compile, apart from the points:")
        warmup = parts.run("depth warm-up", depth_point, 1, False, args, overrides)
        points = [parts.run(f"gpt2_small num_layers={depth} scan_layers={scan}", depth_point,
                            depth, scan, args, overrides)
                  for depth in args.depths for scan in SCAN[args.scan]]
    finally:
        jax.config.update("jax_enable_compilation_cache", cache_enabled)
    return warmup["compile_s"] if warmup else None, [r for r in points if r is not None]


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", nargs="*", default=list(WORKLOADS), choices=WORKLOADS,
                   help="models of (a), time to the first step (none: skip (a))")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=None,
                   help="default: 1024 for gpt2_small, 512 for bert_base")
    p.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                   help="model config overrides for every measurement, e.g. emb_dim=64")
    p.add_argument("--depths", type=int, nargs="*", default=[6, 12, 24],
                   help="gpt2_small num_layers of (b), compile time against depth (none: "
                        "skip (b))")
    p.add_argument("--scan", choices=tuple(SCAN), default="both",
                   help="scan_layers settings of (b)")
    p.add_argument("--time-budget", type=float, default=math.inf,
                   help="seconds; measurements that would start later are skipped")
    p.add_argument("--json", default=None, help="write the results here")
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
        log("| workload | cache | process start to first loss (s) | Python start-up (s) | "
            "imports (s) | lower + compile (s) | first loss |")
        log("|---|---|---|---|---|---|---|")
        for r in first:
            log(f"| {r['workload']} | {r['cache']} | {r['process_to_first_loss_s']:.1f} | "
                f"{r['python_startup_s']:.1f} | {r['imports_s']:.1f} | {r['compile_s']:.1f} | "
                f"{r['first_loss']:.4f} |")
    if depths:
        log(f"after a warm-up compile (1 layer, unscanned) of {warmup_s or float('nan'):.2f} s:")
        log("| gpt2_small num_layers | scan_layers | lower + compile (s) |")
        log("|---|---|---|")
        for r in depths:
            log(f"| {r['num_layers']} | {r['scan_layers']} | {r['compile_s']:.2f} |")
    parts.report()
    info = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
            "command": command_line("benchmarks.compile_time", argv),
            "elapsed_s": parts.elapsed()}
    if first:  # the device as the children saw it (this process may not have started jax)
        info |= {k: first[0][k] for k in ("device", "platform", "jax")}
    elif depths:
        import jax

        d = jax.devices()[0]
        info |= {"device": d.device_kind, "platform": d.platform, "jax": jax.__version__}
    out = {"info": info, "args": vars(args), "first_step": first,
           "warmup_compile_s": warmup_s, "depths": depths,
           "skipped": parts.skipped, "errors": parts.errors}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
