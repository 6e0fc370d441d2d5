"""Variants of one model's train step side by side, and where its device time goes.

    python -m benchmarks.step_variants [--model gpt2_small] [--batch 32] [--seq-len 1024]
        [--variant NAME:KEY=VALUE,KEY=VALUE ...] [--trace-variant NAME] [--json PATH]

Each variant is `gpt_step.gpt_zoo_step` with model-config overrides on top of `--base` (default
bf16 compute), timed in interleaved rounds, with MFU against `--peak-tflops` (default the
H100/H200 dense bf16 989.4) and the cuBLAS / cuDNN calls and fusions of its compiled program.
`--trace-variant NAME` sums a `jax.profiler` trace of that variant per kernel and category.
Made for a GPU; runs anywhere (`--model gpt_tiny --batch 2 --seq-len 32` on CPU).
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import tempfile
from typing import Any

from benchmarks.gpt_step import gpt_zoo_step
from benchmarks.harness import (ZooStep, add_options, machine_info, parse_overrides, print_table,
                                time_rounds, write_json)

DEFAULT_VARIANTS = ("scan:scan_layers=True", "unrolled:scan_layers=False",
                    "scan_unroll2:scan_layers=True,scan_unroll=2",
                    "scan_dots:scan_layers=True,remat=dots")


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """"name:key=value,key=value" -> (name, overrides)."""
    name, _, spec = text.partition(":")
    return name, parse_overrides([s for s in spec.split(",") if s])


def program_counts(step: ZooStep) -> dict[str, int]:
    """Custom calls and fusions in the compiled step (what kernels it holds)."""
    text = step.step.as_text()
    return {"cublas": len(re.findall(r'custom_call_target="__cublas', text)),
            "cudnn": len(re.findall(r'custom_call_target="__cudnn', text)),
            "fusions": len(re.findall(r"^\s*(?:ROOT )?\S+ = \S+ fusion\(", text, re.M)),
            "while_loops": len(re.findall(r"\bwhile\(", text))}


def _category(name: str) -> str:
    lower = name.lower()
    if any(k in lower for k in ("fmha", "flash", "cudnn", "attention")):
        return "attention (cuDNN)"
    if any(k in lower for k in ("gemm", "cublas", "cutlass", "sm90_xmma", "nvjet", "matmul")):
        return "matmul"
    return "other (fusions, copies, reductions)"


def kernel_breakdown(trace_dir: str, steps: int, top: int = 25) -> dict[str, Any]:
    """Device time per kernel from the profiler's Perfetto JSON, per step (ms)."""
    files = [f for pattern in ("*.trace.json.gz", "perfetto_trace.json.gz")
             for f in glob.glob(os.path.join(trace_dir, "**", pattern), recursive=True)]
    if not files:
        return {"error": f"no trace JSON under {trace_dir}"}
    with gzip.open(sorted(files)[-1], "rt") as f:
        events = json.load(f)
    events = events.get("traceEvents", events) if isinstance(events, dict) else events
    names = {e["pid"]: e.get("args", {}).get("name", "") for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    device_pids = {pid for pid, n in names.items()
                   if re.search(r"/device:(GPU|TPU)|gpu|stream", n, re.I)
                   and "host" not in n.lower()}
    per_kernel, by_category, per_process = (collections.defaultdict(float) for _ in range(3))
    for e in (e for e in events if e.get("ph") == "X" and "dur" in e):
        ms = e["dur"] / 1e3 / steps  # us -> ms per step
        per_process[names.get(e.get("pid"), str(e.get("pid")))] += ms
        if e.get("pid") in device_pids:
            per_kernel[e["name"]] += ms
            by_category[_category(e["name"])] += ms
    return {"device_processes": sorted(names[p] for p in device_pids),
            "ms_per_step_by_process": dict(per_process),
            "total_ms_per_step": sum(per_kernel.values()), "by_category_ms": dict(by_category),
            "top_kernels_ms": sorted(per_kernel.items(), key=lambda kv: -kv[1])[:top],
            "num_kernels": len(per_kernel)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_options(p, model="gpt2_small", batch=32, seq_len=1024)
    p.add_argument("--base", nargs="*", default=["compute_dtype=bfloat16"],
                   help="overrides every variant shares")
    p.add_argument("--variant", nargs="+", default=list(DEFAULT_VARIANTS))
    add_options(p, steps=10, repeats=3, peak_tflops=989.4, trace_variant=None, trace_steps=3,
                json=None)
    args = p.parse_args(argv)

    import jax

    base = parse_overrides(args.base)
    sides, results, flops = {}, {}, {}
    for name, overrides in map(parse_variant, args.variant):
        try:
            step, flops[name] = gpt_zoo_step(args.model, args.batch, args.seq_len,
                                             **{**base, **overrides})
        except Exception as e:  # noqa: BLE001  (report the variant, measure the others)
            print(f"{name}: failed to build: {type(e).__name__}: {e}", flush=True)
            results[name] = {"overrides": overrides, "error": f"{type(e).__name__}: {e}"}
            continue
        counts = program_counts(step)
        print(f"{name}: compiled in {step.compile_s:.1f} s, first loss {step.first_loss:.4f}, "
              f"{counts}", flush=True)
        step.run(2)
        sides[name] = step
        results[name] = {"overrides": overrides, "compile_s": step.compile_s,
                         "first_loss": step.first_loss, "program": counts}
    times, _ = time_rounds(sides, args.repeats, args.steps, max_wait=0)
    for name in sides:
        t = statistics.median(times[name])
        results[name] |= {"ms_per_step": t * 1e3, "tokens_per_s": args.batch * args.seq_len / t,
                          "mfu": flops[name]["per_step"] / t / 1e12 / args.peak_tflops}
    print_table(["variant", "overrides", "compile s", "ms/step", "tokens/s", "MFU"], [
        [name, r["overrides"], f"{r['compile_s']:.1f}", f"{r['ms_per_step']:.1f}",
         f"{r['tokens_per_s']:,.0f}", f"{r['mfu']:.1%}"]
        for name, r in results.items() if "ms_per_step" in r])
    breakdown = None
    if args.trace_variant in sides:
        trace_dir = tempfile.mkdtemp(prefix="zoo-trace-")
        sides[args.trace_variant].run(1)
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            sides[args.trace_variant].run(args.trace_steps)
        breakdown = kernel_breakdown(trace_dir, args.trace_steps)
        print(f"device time per step of {args.trace_variant}: "
              f"{breakdown.get('total_ms_per_step', 0):.1f} ms; by category "
              f"{ {k: round(v, 2) for k, v in breakdown.get('by_category_ms', {}).items()} }")
        for kernel, ms in breakdown.get("top_kernels_ms", []):
            print(f"  {ms:8.3f} ms  {kernel[:110]}")
    info = machine_info() | {"model": args.model, "batch": args.batch, "seq_len": args.seq_len,
                            "base": base}
    out = {"info": info, "results": results, "times_s": times, "trace": breakdown}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
