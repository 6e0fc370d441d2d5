"""Model FLOPs utilisation (MFU) of the zoo's train step at the canonical GPT-2 and BERT sizes.

    python -m benchmarks.mfu [--workload gpt2_small bert_base] [--dtype bfloat16]
                             [--batch 8] [--gpt-seq-len 1024] [--bert-seq-len 512]
                             [--steps 10 --repeats 3] [--json PATH] [--override KEY=VALUE ...]

Made for a GPU (issue 4: MFU of `gpt2_small` and `bert_base` in bf16); it runs on any JAX
backend, and the test suite runs it on CPU with shrunken models (`--override num_layers=1 ...`).

Each workload is the zoo's `jit_train_step` exactly as the benchmarks vs PyTorch run it
(`benchmarks.gpt_step.JaxStep`: causal LM; `benchmarks.transformer_step.ZooStep`: masked LM
with the head at the chosen 15% of positions), with the model's compute dtype set to `--dtype`
(parameters and optimizer state stay float32), dropout 0 (gpt2_small's position table sized to
`--gpt-seq-len`, as in `JaxStep`), attention `None` (auto: cuDNN where
`jax.nn.dot_product_attention` supports it; `--override attention_implementation=cudnn` forces
it, e.g. for BERT's padding mask).

MFU = model FLOPs per step / median step time / peak. Model FLOPs are the analytic matmul counts
the other benchmarks use (forward 2x + backward 4x per weight use, attention scores and values
over the full T x T matrix; no rematerialisation is counted): `gpt_step.step_flops` and
`transformer_step.bert_flops`. Two peaks: the measured one (best of `--peak-repeats` jitted
n x n `jnp.dot` in `--dtype` with float32 accumulation, for each n of `--peak-sizes`), and,
for bf16/f16 on a GPU whose datasheet dense peak is listed in `DATASHEET_TFLOPS`, that one.
"""
from __future__ import annotations

import argparse
import ast
import datetime
import platform
from typing import Any

from benchmarks.gpt_step import JaxStep, jax_matmul, median, step_flops, write_json
from benchmarks.transformer_step import ZooStep, bert_flops, mlm_batch

WORKLOADS = ("gpt2_small", "bert_base")
# Dense (no sparsity) 16-bit tensor-core peaks from the vendors' datasheets, TFLOP/s; matched
# against jax's `device_kind` in this order (the first listed substring found wins).
DATASHEET_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0))


def datasheet_peak(device_kind: str, dtype: str) -> float | None:
    if dtype not in ("bfloat16", "float16"):
        return None
    return next((t for name, t in DATASHEET_TFLOPS if name in device_kind), None)


def matmul_peak(dtype: str, sizes: list[int], repeats: int) -> tuple[dict[int, float], float]:
    """Best-of-`repeats` TFLOP/s of jitted n x n matmuls in `dtype`; ({n: TFLOP/s}, max)."""
    peaks = {}
    for n in sizes:
        timer = jax_matmul(n, dtype)
        peaks[n] = 2 * n**3 / min(timer() for _ in range(repeats)) / 1e12
        print(f"matmul {dtype} {n}x{n}: {peaks[n]:.2f} TFLOP/s")
    return peaks, max(peaks.values())


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """["num_layers=1", "attention_implementation=cudnn"] -> {"num_layers": 1, ...}."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--override takes KEY=VALUE items; got {item!r}.")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value  # a bare string such as cudnn
    return overrides


def build_step(name: str, args, overrides: dict[str, Any]) -> tuple[Any, dict[str, float], int]:
    """(the zoo's compiled step, its model FLOPs, its sequence length) for one workload."""
    import jax.numpy as jnp

    import zoo

    if name == "gpt2_small":
        T = args.gpt_seq_len
        step = JaxStep(name, args.batch, T, dtype=args.dtype, **overrides)
        cfg = step.model.config
        flops = step_flops(cfg.num_layers, cfg.emb_dim, cfg.mlp_dim, cfg.vocab_size,
                           args.batch, T)
        return step, flops, T
    if name == "bert_base":
        T = args.bert_seq_len
        vocab = zoo.create_model(name, **overrides).config.vocab_size  # the batch needs it first
        step = ZooStep(name, "masked_lm", mlm_batch(args.batch, T, vocab, args.min_len_frac),
                       (jnp.zeros((1, T), jnp.int32),), dtype=args.dtype, **overrides)
        cfg = step.model.config
        flops = bert_flops(cfg.num_layers, cfg.emb_dim, cfg.mlp_dim, cfg.vocab_size, args.batch,
                           T, max(1, round(T * cfg.mask_rate)))
        return step, flops, T
    raise ValueError(f"unknown workload {name!r}; choose from {WORKLOADS}.")


def run_workload(name: str, args, overrides: dict[str, Any], peak: float,
                 datasheet: float | None) -> dict[str, Any]:
    step, flops, seq_len = build_step(name, args, overrides)
    print(f"{name}: {step.num_params:,} parameters, compiled in {step.compile_s:.1f} s, "
          f"first loss {step.first_loss:.4f}")
    step.run(args.warmup)
    times = [step.run(args.steps) for _ in range(args.repeats)]
    step_s = median(times)
    achieved = flops["per_step"] / step_s / 1e12
    result = {
        "workload": name, "num_params": step.num_params, "dtype": args.dtype,
        "batch": args.batch, "seq_len": seq_len, "step_s_per_round": times,
        "median_step_s": step_s, "tokens_per_s": args.batch * seq_len / step_s,
        "model_flops_per_step": flops["per_step"], "xla_flops_per_step": step.xla_flops,
        "achieved_tflops": achieved, "mfu_vs_measured_peak": achieved / peak,
        "mfu_vs_datasheet": achieved / datasheet if datasheet else None,
    }
    print(f"  {step_s * 1e3:.1f} ms/step (rounds {', '.join(f'{t * 1e3:.1f}' for t in times)}), "
          f"{achieved:.2f} TFLOP/s: MFU {achieved / peak:.1%} of the measured peak"
          + (f", {achieved / datasheet:.1%} of the datasheet's" if datasheet else ""))
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--gpt-seq-len", type=int, default=1024)
    p.add_argument("--bert-seq-len", type=int, default=512)
    p.add_argument("--min-len-frac", type=float, default=1.0,
                   help="BERT rows have a random length in [frac * T, T] (1.0: no padding)")
    p.add_argument("--steps", type=int, default=10, help="steps per timed round")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
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

    import jax

    device = jax.devices()[0]
    sizes = args.peak_sizes or ([1024, 2048] if device.platform == "cpu" else [4096, 8192])
    peaks, peak = matmul_peak(args.dtype, sizes, args.peak_repeats)
    datasheet = datasheet_peak(device.device_kind, args.dtype)
    print(f"device {device.device_kind} ({device.platform}); peak {peak:.2f} TFLOP/s measured"
          + (f", {datasheet:.1f} datasheet" if datasheet else ""))
    results = [run_workload(name, args, overrides, peak, datasheet) for name in args.workload]
    out = {
        "info": {"date": datetime.date.today().isoformat(), "device": device.device_kind,
                 "platform": device.platform, "jax": jax.__version__,
                 "python": platform.python_version(),
                 "command": "python -m benchmarks.mfu " + " ".join(argv or [])},
        "args": vars(args), "measured_peak_tflops": {str(n): t for n, t in peaks.items()},
        "peak_tflops": peak, "datasheet_tflops": datasheet, "results": results,
    }
    print("| workload | dtype | B x T | ms/step | tokens/s | TFLOP/s | MFU (measured peak) | "
          "MFU (datasheet) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        sheet = f"{r['mfu_vs_datasheet']:.1%}" if r["mfu_vs_datasheet"] else "-"
        print(f"| {r['workload']} | {r['dtype']} | {r['batch']} x {r['seq_len']} | "
              f"{r['median_step_s'] * 1e3:.1f} | {r['tokens_per_s']:,.0f} | "
              f"{r['achieved_tflops']:.2f} | {r['mfu_vs_measured_peak']:.1%} | {sheet} |")
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
