"""Model FLOPs utilisation (MFU) of the zoo's train step at the canonical GPT-2 and BERT sizes,
side by side with PyTorch references (eager and torch.compile) in the same process.

    python -m benchmarks.mfu [--workload gpt2_small bert_base] [--dtype bfloat16]
                             [--batch 8 [32 ...]] [--gpt-seq-len 1024] [--bert-seq-len 512]
                             [--torch {none,eager,compile,both}] [--time-budget 480]
                             [--steps 10 --repeats 3] [--json PATH] [--override KEY=VALUE ...]

Made for a GPU (the tests run it on CPU, shrunken). MFU = model FLOPs per step / median step
time / peak (measured, and the datasheet's for 16-bit types); each part runs under
`--time-budget`. Method and results: benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
from typing import Any

from benchmarks.gpt_step import TorchGPTStep, gpt_zoo_step
from benchmarks.harness import (Parts, add_options, command_line, log, machine_info, matmul_peak,
                                parse_overrides, print_table, time_rounds, torch_device,
                                write_json)
from benchmarks.transformer_step import TorchBertStep, bert_zoo_step

WORKLOADS = ("gpt2_small", "bert_base")
SEQ_LEN = {"gpt2_small": 1024, "bert_base": 512}  # default T of each workload
# Dense 16-bit tensor-core peaks from the vendors' datasheets, TFLOP/s, matched against jax's
# `device_kind` in this order (the first substring found wins).
DATASHEET_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0))
TORCH_MODES = {"none": (), "eager": ("eager",), "compile": ("compile",),
               "both": ("eager", "compile")}


def datasheet_peak(device_kind: str, dtype: str) -> float | None:
    if dtype not in ("bfloat16", "float16"):
        return None
    return next((t for name, t in DATASHEET_TFLOPS if name in device_kind), None)


def build_step(name: str, batch: int, seq_len: int, dtype: str, overrides: dict[str, Any],
               min_len_frac: float = 1.0) -> tuple[Any, dict[str, float]]:
    """(the zoo's compiled step, its model FLOPs) for one workload at B x T = batch x seq_len."""
    overrides = {"compute_dtype": dtype, **overrides}
    if name == "gpt2_small":
        return gpt_zoo_step(name, batch, seq_len, **overrides)
    return bert_zoo_step(name, batch, seq_len, min_len_frac, **overrides)


def build_torch_side(name: str, zoo_step: Any, dtype: str, compile: bool) -> Any:
    """The PyTorch reference of `zoo_step`'s model, on its batch."""
    cfg, kwargs = zoo_step.model.config, {"device": torch_device(), "dtype": dtype,
                                          "compile": compile}
    if name == "gpt2_small":
        return TorchGPTStep(cfg, zoo_step.host_batch, nanogpt=True, **kwargs)
    return TorchBertStep(cfg, zoo_step.host_batch, zoo_step.task.mask_rate, **kwargs)


def timing(times: list[float], flops: float, tokens: int, peak: float | None,
           datasheet: float | None) -> dict[str, Any]:
    """The numbers of one side from its per-round seconds per step."""
    step_s = statistics.median(times)
    achieved = flops / step_s / 1e12
    return {"step_s_per_round": times, "median_step_s": step_s, "tokens_per_s": tokens / step_s,
            "achieved_tflops": achieved,
            "mfu_vs_measured_peak": achieved / peak if peak else None,
            "mfu_vs_datasheet": achieved / datasheet if datasheet else None}


def run_workload(name: str, batch: int, args, overrides: dict[str, Any], peak: float | None,
                 datasheet: float | None, parts: Parts) -> dict[str, Any]:
    seq_len = args.gpt_seq_len if name == "gpt2_small" else args.bert_seq_len
    label = f"{name} B={batch}"
    step, flops = build_step(name, batch, seq_len, args.dtype, overrides, args.min_len_frac)
    log(f"{label} zoo: {step.num_params:,} parameters, compiled in {step.compile_s:.1f} s, "
        f"first loss {step.first_loss:.4f}")
    sides = {"zoo": step}
    for mode in TORCH_MODES[args.torch]:
        side = parts.run(f"{label} torch {mode}", build_torch_side, name, step, args.dtype,
                         mode == "compile")
        if side is not None:
            sides[mode] = side
            log(f"{label} torch {mode} ({side.device}): {side.num_params:,} parameters, "
                f"vocabulary {side.vocab_size}, first step {side.compile_s:.1f} s, first loss "
                f"{side.first_loss:.4f}")
    for side in sides.values():
        side.run(args.warmup)
    times, _ = time_rounds(sides, args.repeats, args.steps, max_wait=0.0)  # no idle-CPU wait

    tokens = batch * seq_len
    zoo = timing(times.pop("zoo"), flops["per_step"], tokens, peak, datasheet)
    torch_results = {
        mode: {"num_params": sides[mode].num_params, "vocab_size": sides[mode].vocab_size,
               "first_step_s": sides[mode].compile_s, "first_loss": sides[mode].first_loss,
               **timing(t, flops["per_step"], tokens, peak, datasheet)}
        for mode, t in times.items()}
    log(f"{label}: zoo {zoo['median_step_s'] * 1e3:.1f} ms/step, {zoo['achieved_tflops']:.2f} "
        f"TFLOP/s" + "".join(f"; torch {m} {r['median_step_s'] * 1e3:.1f} ms/step"
                             for m, r in torch_results.items()))
    return {
        "workload": name, "num_params": step.num_params, "dtype": args.dtype, "batch": batch,
        "seq_len": seq_len, "compile_s": step.compile_s, "first_loss": step.first_loss,
        "model_flops_per_step": flops["per_step"], "xla_flops_per_step": step.xla_flops, **zoo,
        "torch": torch_results, **{
            f"zoo_over_torch_{m}": (zoo["tokens_per_s"] / torch_results[m]["tokens_per_s"]
                                    if m in torch_results else None)
            for m in TORCH_MODES["both"]}}


def _ms(r: dict[str, Any] | None) -> str:
    return "-" if r is None else f"{r['median_step_s'] * 1e3:.1f}"


def _mfu(r: dict[str, Any] | None) -> str:
    """"datasheet / measured peak" MFU of a side."""
    return "-" if r is None else " / ".join("-" if x is None else f"{x:.1%}" for x in (
        r["mfu_vs_datasheet"], r["mfu_vs_measured_peak"]))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"),
                   help="compute dtype (the torch sides: bfloat16 autocast, or float32)")
    p.add_argument("--batch", type=int, nargs="+", default=[8],
                   help="batch sizes, each measured in turn (e.g. --batch 8 32)")
    add_options(p, gpt_seq_len=SEQ_LEN["gpt2_small"], bert_seq_len=SEQ_LEN["bert_base"],
                min_len_frac=1.0)  # BERT rows: random lengths in [frac * T, T]
    p.add_argument("--torch", choices=tuple(TORCH_MODES), default=None,
                   help="PyTorch sides (default: both where PyTorch sees a GPU, else none)")
    add_options(p, time_budget=480.0, steps=10, repeats=3, warmup=2)
    p.add_argument("--peak-sizes", type=int, nargs="+", default=None,
                   help="matmul sizes of the measured peak (default 4096 8192; 1024 2048 on CPU)")
    p.add_argument("--peak-repeats", type=int, default=10)
    p.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                   help="model config overrides for every workload, e.g. num_layers=2")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    overrides = parse_overrides(args.override)
    parts = Parts(args.time_budget)
    try:
        import torch
    except ImportError:
        torch = None
    gpu_torch = torch is not None and torch.cuda.is_available()
    args.torch = args.torch or ("both" if gpu_torch else "none")
    use_torch = torch is not None and bool(TORCH_MODES[args.torch])
    if gpu_torch and use_torch:  # both frameworks need GPU memory
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before jax starts
    info = machine_info()
    sizes = args.peak_sizes or ([1024, 2048] if info["platform"] == "cpu" else [4096, 8192])
    peaks, peak = parts.run("matmul peak", matmul_peak, sizes, args.peak_repeats, ("jax",),
                            args.dtype, 0.0, "TFLOP/s") or ({"jax": {}}, None)
    datasheet = datasheet_peak(info["device"], args.dtype)
    log(f"device {info['device']} ({info['platform']}); peak "
        + (f"{peak:.2f} TFLOP/s measured" if peak else "not measured")
        + (f", {datasheet:.1f} datasheet" if datasheet else "") + f"; torch sides: {args.torch}")
    results = []
    for batch in args.batch:
        for name in args.workload:
            result = parts.run(f"{name} B={batch}", run_workload, name, batch, args, overrides,
                               peak, datasheet, parts)
            results += [result] if result else []
            gc.collect()  # the sides' device memory, before the next part allocates its own
            if gpu_torch:
                torch.cuda.empty_cache()
    print_table(["workload", "B x T", "zoo ms/step", "torch eager ms/step",
                 "torch.compile ms/step", "zoo / torch.compile tokens/s",
                 "zoo MFU (datasheet / measured peak)",
                 "torch.compile MFU (datasheet / measured peak)"], [
        [r["workload"], f"{r['batch']} x {r['seq_len']}", _ms(r), _ms(r["torch"].get("eager")),
         _ms(r["torch"].get("compile")), "-" if r["zoo_over_torch_compile"] is None else
         f"{r['zoo_over_torch_compile']:.2f}x", _mfu(r), _mfu(r["torch"].get("compile"))]
        for r in results])
    parts.report()
    log(f"total {parts.elapsed():.0f} s")
    torch_on = (torch.cuda.get_device_name() if gpu_torch else "cpu") if use_torch else None
    info |= {"torch": torch.__version__ if use_torch else None, "torch_device": torch_on,
             "command": command_line("benchmarks.mfu", argv), "elapsed_s": parts.elapsed()}
    out = {"info": info, "args": vars(args),
           "measured_peak_tflops": {str(n): t for n, t in peaks["jax"].items()},
           "peak_tflops": peak, "datasheet_tflops": datasheet, "results": results,
           "skipped": parts.skipped, "errors": parts.errors}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
