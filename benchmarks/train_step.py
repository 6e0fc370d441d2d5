"""The zoo's train step against PyTorch's, side by side in one process: ms/step, tokens/s,
TFLOP/s, % of the measured peak (and MFU against the datasheet) and the ratio of tokens/s.

    python -m benchmarks.train_step [--workload gpt_tiny ...] [--batch B ...] [--seq-len T]
        [--dtype float32|bfloat16|float16] [--torch eager compile | --torch]
        [--variant NAME:KEY=VALUE,... ...] [--override KEY=VALUE ...] [--trace NAME]
        [--steps 10 --repeats 5 --warmup 2] [--time-budget S] [--json PATH]

Workloads, each at its own default B x T: gpt_tiny, gpt2_small (`benchmarks.gpt_step`),
transformer, bert, bert_base (`transformer_step`), lstm, gru, rnn_tanh (`rnn_step`). Per
workload and batch size these sides run in alternating rounds (`benchmarks.harness`): the zoo's
`jit_train_step`, one side per `--variant` (model-config overrides on top of `--override`;
default a single side "zoo"; `parallel=pmap` / `parallel=mesh` as overrides run the loop's
other paths, over `--devices N` fake CPU devices on a CPU), then, mirroring the first variant,
Flax's own RNN layers where the workload has them and PyTorch on JAX's device, eager ("torch")
and/or `torch.compile` ("torch.compile"; default: eager on a CPU, both on a GPU). On a CPU each
round waits for an idle machine and medians are taken over the clean rounds; compile times are
measured with the persistent compilation cache off. The peak is the best n x n matmul of JAX,
numpy and torch on a CPU (float32), of JAX in `--dtype` elsewhere. Each part runs under
`--time-budget`: a failing part is reported and the others still run. `--trace NAME` sums a
`jax.profiler` trace of side NAME per kernel. Results: benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import math
import os
import tempfile
from typing import Any

from benchmarks import gpt_step, rnn_step, transformer_step
from benchmarks.harness import (Parts, ZooStep, add_options, command_line, kernel_breakdown, log,
                                machine_info, matmul_peak, num_cores, parse_overrides,
                                print_table, program_counts, summarize, time_rounds,
                                write_json)
from zoo.errors import ConfigError
from zoo.models import get_spec
from zoo.train.throughput import peak_tflops

WORKLOADS = {**gpt_step.WORKLOADS, **transformer_step.WORKLOADS, **rnn_step.WORKLOADS}
TORCH_SIDES = {"eager": "torch", "compile": "torch.compile"}


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """"name:key=value,key=value" -> (name, overrides)."""
    name, _, spec = text.partition(":")
    return name, parse_overrides([s for s in spec.split(",") if s])


def zoo_side(name: str, batch: int | None = None, seq_len: int | None = None,
             min_len_frac: float | None = None, **overrides: Any) -> ZooStep:
    """The zoo's compiled step of workload `name` at B x T (default: the workload's), its
    model config overridden by `overrides` (and `parallel`: "jit", "pmap" or "mesh")."""
    w = WORKLOADS[name]
    B, T = batch or w.batch, seq_len or w.seq_len
    frac = w.min_len_frac if min_len_frac is None else min_len_frac
    overrides = {**w.overrides, **({"max_len": T} if w.has_max_len else {}), **overrides}
    return ZooStep(w.model, lambda cfg: w.make_batch(cfg, B, T, frac), w.task,
                   overrides.pop("parallel", "jit"), **overrides)


def trace(side: ZooStep, steps: int) -> dict[str, Any]:
    import jax

    trace_dir = tempfile.mkdtemp(prefix="zoo-trace-")
    side.run(1)
    with jax.profiler.trace(trace_dir):
        side.run(steps)
    breakdown = kernel_breakdown(trace_dir, steps)
    log(f"device time per step: {breakdown.get('total_ms_per_step', 0):.1f} ms; by category "
        f"{ {k: round(v, 2) for k, v in breakdown.get('by_category_ms', {}).items()} }")
    for kernel, ms in breakdown.get("top_kernels_ms", []):
        log(f"  {ms:8.3f} ms  {kernel[:110]}")
    return breakdown


def run_workload(name: str, batch: int, args, peak: float | None, datasheet: float | None,
                 parts: Parts) -> dict[str, Any] | None:
    """Every side of workload `name` at B = `batch`, built, warmed up and timed; the Flax and
    PyTorch sides mirror the first variant that builds."""
    w = WORKLOADS[name]
    T, label = args.seq_len or w.seq_len, f"{name} B={batch}"
    sides: dict[str, Any] = {}
    for variant, overrides in args.variants:
        sides[variant] = parts.run(f"{label} {variant}", zoo_side, name, batch, T,
                                   args.min_len_frac, **{**args.base, **overrides})
    zoo_sides = {k: s for k, s in sides.items() if s is not None}
    if not zoo_sides:
        return None
    first, zoo = next(iter(zoo_sides.items()))
    if w.flax_side:
        sides["flax"] = parts.run(f"{label} flax", w.flax_side, zoo)
    for mode in args.torch:
        sides[TORCH_SIDES[mode]] = parts.run(
            f"{label} torch {mode}", w.torch_side, zoo, device=args.torch_device,
            dtype=args.dtype, compile=mode == "compile", fused=args.torch_fused_adamw)
    sides = {k: s for k, s in sides.items() if s is not None}
    for k, s in sides.items():
        log(f"{label} {k}: {s.num_params:,} parameters, first step {s.first_step_s:.1f} s "
            f"(compile included), first loss {s.first_loss:.4f}")
        s.run(args.warmup)
    times, loads, cpu = time_rounds(sides, args.repeats, args.steps, args.max_wait,
                                    args.max_rounds)
    flops = {k: get_spec(w.model).train_flops(s.model.config, s.task, batch, T)
             for k, s in zoo_sides.items()}
    flops = {k: flops.get(k, flops[first]) for k in sides}  # others: the first variant's
    results = summarize(times, loads, cpu, w.tokens(batch, T), flops, peak)
    for k, r in results.items():
        s = sides[k]
        r |= {"num_params": s.num_params, "first_loss": s.first_loss,
              "first_step_s": s.first_step_s, "vocab_size": getattr(s, "vocab_size", None),
              "step_s_per_round": times[k], "other_load_cores": loads[k],
              "pct_datasheet": 100 * r["tflops"] / datasheet if datasheet else None}
        if isinstance(s, ZooStep):
            r |= {"compile_s": s.compile_s, "xla_flops": s.xla_flops, "program": program_counts(s)}
    if len(zoo_sides) > 1:
        log(f"{label}, ms/step against {first}: " + ", ".join(
            f"{k} {results[k]['ms_per_step'] / results[first]['ms_per_step']:.3f}"
            for k in zoo_sides if k != first))
    return {"workload": name, "batch": batch, "seq_len": T, "dtype": args.dtype,
            "config": dataclasses.asdict(zoo.model.config),
            "task": {k: v for k, v in vars(zoo.task).items() if k != "name"},
            "model_flops_per_step": flops[first], "tokens_per_step": w.tokens(batch, T),
            "sides": results, "trace": parts.run(f"{label} trace", trace, sides[args.trace], 3)
            if args.trace in sides else None}


def _torch_version(args) -> str | None:
    """torch's version (its CPU threads set), or None (said) when it is missing."""
    try:
        import torch
    except ImportError as e:
        log(f"PyTorch skipped ({e}): only the JAX sides are measured.")
        return None
    if args.torch != [] and torch.cuda.is_available():  # both frameworks need GPU memory
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before jax starts
    torch.set_num_threads(args.threads)
    return torch.__version__


TABLE = {"workload": "{workload}", "B x T": "{batch} x {seq_len}", "side": "{side}",
         "ms/step (min-max)": "{ms_per_step:.1f} ({ms_per_step_min:.1f}-{ms_per_step_max:.1f})",
         "CPU ms/step": "{cpu_ms_per_step:.1f}", "tokens/s": "{tokens_per_s:,.0f}",
         "TFLOP/s": "{tflops:.3g}", "% of peak": "{pct_peak:.1f}%",
         "% of datasheet": "{pct_datasheet:.1f}%", "vs torch": "{vs_torch:.2f}x",
         "vs torch.compile": "{vs_torch_compile:.2f}x", "first step s": "{first_step_s:.1f}",
         "clean rounds": "{clean_rounds}/{rounds}"}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", nargs="+", default=["gpt_tiny"], choices=list(WORKLOADS))
    p.add_argument("--batch", type=int, nargs="+", default=[None], help="default: per workload")
    p.add_argument("--seq-len", type=int, help="default: per workload")
    p.add_argument("--min-len-frac", type=float, help="default: per workload")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--torch", nargs="*", choices=tuple(TORCH_SIDES), default=None)
    p.add_argument("--variant", nargs="+", default=["zoo:"], metavar="NAME:KEY=VALUE,...")
    p.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE")
    add_options(p, devices=0, trace=None, steps=10, repeats=5, warmup=2, max_rounds=8,
                max_wait=30.0, threads=num_cores(), time_budget=math.inf, peak_repeats=5,
                json=None)
    p.add_argument("--peak-sizes", type=int, nargs="+", default=None,
                   help="default 2048 4096 on a CPU, 4096 8192 elsewhere")
    p.add_argument("--torch-fused-adamw", action="store_true")
    args = p.parse_args(argv)
    args.variants = [parse_variant(v) for v in args.variant]  # bad specs fail here, once
    args.base = {"compute_dtype": args.dtype, **parse_overrides(args.override)}
    if taken := {"flax", *TORCH_SIDES.values()} & {name for name, _ in args.variants}:
        raise ConfigError(f"--variant names {sorted(taken)} are the reference sides' names; "
                          "choose other names.")
    if args.devices:  # fake CPU devices for pmap / mesh variants, set before JAX starts
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={args.devices}")
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    parts, version = Parts(args.time_budget), _torch_version(args)
    info = {**machine_info(version), "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
            "command": command_line("benchmarks.train_step", argv)}
    if args.devices and (info["device_count"], info["platform"]) != (args.devices, "cpu"):
        raise ConfigError(f"--devices {args.devices} fakes CPU devices, but JAX runs "
                          f"{info['device_count']} {info['platform']} device(s): run a fresh "
                          "process with JAX_PLATFORMS=cpu (or unset).")
    import jax

    # Compile times are measured, not read from a cache. JAX decides once per process, at its
    # first compile, so this holds for the command, not for a caller that compiled before.
    jax.config.update("jax_enable_compilation_cache", False)
    on_cpu = info["platform"] == "cpu"
    args.torch_device = "cpu" if on_cpu else "cuda"  # torch's sides run where JAX's do
    if args.torch is None:
        args.torch = ["eager"] if on_cpu else ["eager", "compile"]
    args.torch = args.torch if version else []
    if not on_cpu:  # waiting for an idle CPU, and more rounds while it is busy, are for CPUs
        args.max_wait, args.max_rounds = 0.0, None
    libraries = ("jax", "numpy", "torch")[:3 if version else 2] if on_cpu else ("jax",)
    peaks, peak = parts.run(
        "matmul peak", matmul_peak, args.peak_sizes or ([2048, 4096] if on_cpu else [4096, 8192]),
        args.peak_repeats, libraries, "float32" if on_cpu else args.dtype,
        args.max_wait) or ({}, None)
    datasheet = peak_tflops(info["device"], args.dtype)
    log(f"# {info['cpu']}, {info['cores']} cores, {info['device']}; jax {info['jax']}, torch "
        f"{version} ({args.torch or 'no'} sides); peak {peak or 0:.3g} TFLOP/s measured"
        + (f", {datasheet} datasheet" if datasheet else ""))
    out = {"info": info, "args": vars(args), "matmul_peak_tflops": peaks, "peak_tflops": peak,
           "datasheet_tflops": datasheet, "results": [], "skipped": parts.skipped,
           "errors": parts.errors}
    for batch in args.batch:
        for name in args.workload:
            B = batch or WORKLOADS[name].batch
            result = parts.run(f"{name} B={B}", run_workload, name, B, args, peak, datasheet,
                               parts)
            out["results"] += [result] if result else []
            out["info"]["elapsed_s"] = parts.elapsed()
            write_json(args.json, out)  # after each part: a killed run keeps what it measured
            gc.collect()  # the sides' device memory, before the next part allocates its own
            if args.torch and args.torch_device == "cuda":
                import torch

                torch.cuda.empty_cache()
    print_table(TABLE, [{**res, **r, "side": k} for res in out["results"]
                        for k, r in res["sides"].items()])
    parts.report()
    return out


if __name__ == "__main__":
    main()
