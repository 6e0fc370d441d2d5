"""Model FLOPs utilisation (MFU) of the zoo's train step at the canonical GPT-2 and BERT sizes,
side by side with PyTorch references (eager and torch.compile) in the same process.

    python -m benchmarks.mfu [--workload gpt2_small bert_base] [--dtype bfloat16]
                             [--batch 8 [32 ...]] [--gpt-seq-len 1024] [--bert-seq-len 512]
                             [--torch {none,eager,compile,both}] [--time-budget 480]
                             [--steps 10 --repeats 3] [--json PATH] [--override KEY=VALUE ...]

Made for a GPU (issue 4: MFU of `gpt2_small` and `bert_base` in bf16); it runs on any JAX
backend, and the test suite runs it on CPU with shrunken models (`--override num_layers=1 ...`).

Each workload is the zoo's `jit_train_step` exactly as the benchmarks vs PyTorch run it
(`benchmarks.harness.ZooStep`: causal LM, `gpt_step.gpt_zoo_step`; masked LM with the head at
the chosen 15% of positions, `transformer_step.bert_zoo_step`), with the model's compute dtype
set to `--dtype` (parameters and optimizer state stay float32), dropout 0 (gpt2_small's position
table sized to `--gpt-seq-len`), attention `None` (auto: cuDNN where
`jax.nn.dot_product_attention` supports it; `--override attention_implementation=cudnn` forces
it, e.g. for BERT's padding mask). Each `--batch` value is measured in turn, for every workload.

PyTorch references (`--torch`, default `both` where PyTorch sees a GPU, else `none`; on the CPU
the tests run them tiny): the same model as a PyTorch user would train it fast, eager and
`torch.compile(dynamic=False)`d (`harness.TorchSide`): bf16 autocast (`--dtype float32`: none;
TF32 allowed, as nanoGPT does), SDPA attention (a fused kernel such as FlashAttention on a GPU),
fused AdamW, the loss inside the compiled module; GPT-2 as nanoGPT trains it
(`gpt_step.TorchGPTStep(nanogpt=True)`: vocabulary padded 50257 -> 50304, mean loss), BERT with
new masks drawn on the device every step (`transformer_step.TorchBertStep`). Each side's
`compile_s` is its first step's wall time (inductor's compile, or CUDA and cuBLAS start-up).
Their sides take turns with the zoo's (rounds zoo, eager, compile,
zoo, eager, compile, ...: `harness.time_rounds`, with no waiting for an idle CPU), so drifts
of clock or load hit all of them alike. Their MFU counts the same model FLOPs as the zoo's
(the unpadded vocabulary), so the MFU ratio is the tokens/s ratio. JAX's GPU memory
preallocation is off when torch sides run (`XLA_PYTHON_CLIENT_PREALLOCATE=false` unless set),
so that both frameworks find memory.

MFU = model FLOPs per step / median step time / peak. Model FLOPs are the analytic matmul counts
the other benchmarks use (forward 2x + backward 4x per weight use, attention scores and values
over the full T x T matrix; no rematerialisation is counted): `gpt_step.step_flops` and
`transformer_step.bert_flops`. Two peaks: the measured one (best of `--peak-repeats` jitted
n x n `jnp.dot` in `--dtype` with float32 accumulation, for each n of `--peak-sizes`), and,
for bf16/f16 on a GPU whose datasheet dense peak is listed in `DATASHEET_TFLOPS`, that one.

Parts (the peak, each workload at each batch, each torch side) run under `--time-budget`
seconds: a part that would start once the budget is spent is skipped, and one that fails is
reported (with its traceback); either way the others still run. Both canonical models with
both torch sides at B=8 took 212 s on one H200 (jax 0.11.2, torch 2.11), most of it compiling
(the zoo's steps 52 s and 70 s, torch.compile 22 s and 27 s). A part started just before the
budget runs on, so the default 480 s ends the run within about 10 minutes whatever `--batch`
asks for. The skipped and failed parts are listed at the end and in the --json.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import statistics
from typing import Any

from benchmarks.gpt_step import TorchGPTStep, gpt_zoo_step
from benchmarks.harness import (Parts, command_line, log, matmul_peak, parse_overrides,
                                time_rounds, torch_device, write_json)
from benchmarks.transformer_step import TorchBertStep, bert_zoo_step

WORKLOADS = ("gpt2_small", "bert_base")
SEQ_LEN = {"gpt2_small": 1024, "bert_base": 512}  # default T of each workload
# Dense (no sparsity) 16-bit tensor-core peaks from the vendors' datasheets, TFLOP/s; matched
# against jax's `device_kind` in this order (the first listed substring found wins).
DATASHEET_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0))
TORCH_MODES = {"none": (), "eager": ("eager",), "compile": ("compile",),
               "both": ("eager", "compile")}


def datasheet_peak(device_kind: str, dtype: str) -> float | None:
    if dtype not in ("bfloat16", "float16"):
        return None
    return next((t for name, t in DATASHEET_TFLOPS if name in device_kind), None)


def seq_len_of(name: str, args) -> int:
    return args.gpt_seq_len if name == "gpt2_small" else args.bert_seq_len


def build_step(name: str, batch: int, seq_len: int, dtype: str, overrides: dict[str, Any],
               min_len_frac: float = 1.0) -> tuple[Any, dict[str, float]]:
    """(the zoo's compiled step, its model FLOPs) for one workload at B x T = batch x seq_len."""
    overrides = {"compute_dtype": dtype, **overrides}
    if name == "gpt2_small":
        return gpt_zoo_step(name, batch, seq_len, **overrides)
    if name == "bert_base":
        return bert_zoo_step(name, batch, seq_len, min_len_frac, **overrides)
    raise ValueError(f"unknown workload {name!r}; choose from {WORKLOADS}.")


def build_torch_side(name: str, zoo_step: Any, args, compile: bool) -> Any:
    """The PyTorch reference of `zoo_step`'s model, on its batch."""
    cfg, kwargs = zoo_step.model.config, {"device": torch_device(), "dtype": args.dtype,
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
    seq_len = seq_len_of(name, args)
    label = f"{name} B={batch}"
    step, flops = build_step(name, batch, seq_len, args.dtype, overrides, args.min_len_frac)
    vocab = step.model.config.vocab_size
    log(f"{label} zoo: {step.num_params:,} parameters, compiled in {step.compile_s:.1f} s, "
        f"first loss {step.first_loss:.4f}")
    torch_sides = {}
    for mode in TORCH_MODES[args.torch]:
        side = parts.run(f"{label} torch {mode}", build_torch_side, name, step, args,
                         mode == "compile")
        if side is not None:
            torch_sides[mode] = side
            padding = (f" (vocabulary padded {vocab} -> {side.vocab_size})"
                       if side.vocab_size != vocab else "")
            log(f"{label} torch {mode} ({side.device}): {side.num_params:,} parameters{padding}, "
                f"first step {side.compile_s:.1f} s, first loss {side.first_loss:.4f}")
    sides = {"zoo": step, **{f"torch_{mode}": side for mode, side in torch_sides.items()}}
    for side in sides.values():
        side.run(args.warmup)
    times, _ = time_rounds(sides, args.repeats, args.steps, max_wait=0.0)  # no idle-CPU wait

    tokens = batch * seq_len
    zoo = timing(times["zoo"], flops["per_step"], tokens, peak, datasheet)
    torch_results = {
        mode: {"num_params": side.num_params, "vocab_size": side.vocab_size,
               "first_step_s": side.compile_s, "first_loss": side.first_loss,
               **timing(times[f"torch_{mode}"], flops["per_step"], tokens, peak, datasheet)}
        for mode, side in torch_sides.items()}
    ratio = {f"zoo_over_torch_{mode}": (zoo["tokens_per_s"] / torch_results[mode]["tokens_per_s"]
                                        if mode in torch_results else None)
             for mode in TORCH_MODES["both"]}
    log(f"{label}: zoo {zoo['median_step_s'] * 1e3:.1f} ms/step, {zoo['achieved_tflops']:.2f} "
        f"TFLOP/s" + "".join(f"; torch {m} {r['median_step_s'] * 1e3:.1f} ms/step"
                             for m, r in torch_results.items()))
    return {
        "workload": name, "num_params": step.num_params, "dtype": args.dtype, "batch": batch,
        "seq_len": seq_len, "compile_s": step.compile_s, "first_loss": step.first_loss,
        "model_flops_per_step": flops["per_step"], "xla_flops_per_step": step.xla_flops, **zoo,
        "torch": torch_results, **ratio,
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _ms(r: dict[str, Any] | None) -> str:
    return "-" if r is None else f"{r['median_step_s'] * 1e3:.1f}"


def _mfu(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    return f"{_pct(r['mfu_vs_datasheet'])} / {_pct(r['mfu_vs_measured_peak'])}"


def print_table(results: list[dict[str, Any]]) -> None:
    log("| workload | B x T | zoo ms/step | torch eager ms/step | torch.compile ms/step | "
        "zoo / torch.compile tokens/s | zoo MFU (datasheet / measured peak) | "
        "torch.compile MFU (datasheet / measured peak) |")
    log("|---|---|---|---|---|---|---|---|")
    for r in results:
        compiled = r["torch"].get("compile")
        ratio = r["zoo_over_torch_compile"]
        log(f"| {r['workload']} | {r['batch']} x {r['seq_len']} | {_ms(r)} | "
            f"{_ms(r['torch'].get('eager'))} | {_ms(compiled)} | "
            f"{'-' if ratio is None else f'{ratio:.2f}x'} | {_mfu(r)} | {_mfu(compiled)} |")


def default_torch_mode() -> str:
    """"both" where PyTorch sees a GPU, else "none"."""
    try:
        import torch
    except ImportError:
        return "none"
    return "both" if torch.cuda.is_available() else "none"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"),
                   help="compute dtype (the torch sides: bfloat16 autocast, or float32)")
    p.add_argument("--batch", type=int, nargs="+", default=[8],
                   help="batch sizes, each measured in turn (e.g. --batch 8 32)")
    p.add_argument("--gpt-seq-len", type=int, default=SEQ_LEN["gpt2_small"])
    p.add_argument("--bert-seq-len", type=int, default=SEQ_LEN["bert_base"])
    p.add_argument("--min-len-frac", type=float, default=1.0,
                   help="BERT rows have a random length in [frac * T, T] (1.0: no padding)")
    p.add_argument("--torch", choices=tuple(TORCH_MODES), default=None,
                   help="PyTorch reference sides (default: both where PyTorch sees a GPU, "
                        "else none)")
    p.add_argument("--time-budget", type=float, default=480.0,
                   help="seconds; parts that would start later are skipped (and reported)")
    p.add_argument("--steps", type=int, default=10, help="steps per timed round")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side after compiling")
    p.add_argument("--peak-sizes", type=int, nargs="+", default=None,
                   help="matmul sizes of the measured peak (default 4096 8192 on GPU/TPU, "
                        "1024 2048 on CPU)")
    p.add_argument("--peak-repeats", type=int, default=10)
    p.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                   help="model config overrides for every workload, e.g. num_layers=2 "
                        "attention_implementation=cudnn")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    overrides = parse_overrides(args.override)
    parts = Parts(args.time_budget)
    args.torch = args.torch or default_torch_mode()
    torch_version = torch_on = None
    if TORCH_MODES[args.torch]:
        import torch

        torch_version = torch.__version__
        torch_on = "cpu"
        if torch.cuda.is_available():
            torch_on = torch.cuda.get_device_name()
            os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before jax starts

    import jax

    device = jax.devices()[0]
    sizes = args.peak_sizes or ([1024, 2048] if device.platform == "cpu" else [4096, 8192])
    peaks, peak = parts.run("matmul peak", matmul_peak, sizes, args.peak_repeats, ("jax",),
                            args.dtype, 0.0, "TFLOP/s") or ({"jax": {}}, None)
    datasheet = datasheet_peak(device.device_kind, args.dtype)
    log(f"device {device.device_kind} ({device.platform}); peak "
        + (f"{peak:.2f} TFLOP/s measured" if peak else "not measured")
        + (f", {datasheet:.1f} datasheet" if datasheet else "")
        + f"; torch sides: {args.torch}" + (f" (torch {torch_version} on {torch_on})"
                                            if torch_version else ""))
    results = []
    for batch in args.batch:
        for name in args.workload:
            result = parts.run(f"{name} B={batch}", run_workload, name, batch, args, overrides,
                               peak, datasheet, parts)
            if result is not None:
                results.append(result)
            gc.collect()  # the sides' device memory, before the next part allocates its own
            if torch_version and torch_on != "cpu":
                torch.cuda.empty_cache()
    out = {
        "info": {"date": datetime.date.today().isoformat(), "device": device.device_kind,
                 "platform": device.platform, "jax": jax.__version__, "torch": torch_version,
                 "torch_device": torch_on, "python": platform.python_version(),
                 "command": command_line("benchmarks.mfu", argv), "elapsed_s": parts.elapsed()},
        "args": vars(args), "measured_peak_tflops": {str(n): t for n, t in peaks["jax"].items()},
        "peak_tflops": peak, "datasheet_tflops": datasheet, "results": results,
        "skipped": parts.skipped, "errors": parts.errors,
    }
    print_table(results)
    parts.report()
    log(f"total {parts.elapsed():.0f} s")
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
