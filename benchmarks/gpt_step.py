"""GPT training-step throughput: the zoo's jitted JAX step vs the same model in PyTorch.

    python -m benchmarks.gpt_step [--batch 16 --seq-len 256 --steps 20 --repeats 5] [--json PATH]

The zoo's `jit_train_step` (one JAX side per `--jax-attention`) and a PyTorch GPT of the same
shapes and math (pre-LN, fused qkv, SDPA causal attention, tanh-GELU, tied output) in
alternating rounds, against the f32 matmul peak of JAX, numpy and torch (`benchmarks.harness`).
FLOPs per step (`step_flops`) count matmuls only (Kaplan et al. 2020 / PaLM appendix B):
gpt_tiny at B=16, T=256 runs 91.8 GFLOP per step.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from typing import Any

from benchmarks.harness import (TorchSide, ZooStep, add_options, add_timing_arguments, lm_batch,
                                lm_loss, print_table, race, start, summarize, table_cells,
                                to_torch, write_json)

VOCAB_MULTIPLE = 128  # nanoGPT pads GPT-2's 50257 to 50304


def step_flops(num_layers: int, emb_dim: int, mlp_dim: int, vocab_size: int,
               batch: int, seq_len: int) -> dict[str, float]:
    """Matmul FLOPs of one training step: forward 2x + backward 4x per weight use."""
    L, D, F, V, T = num_layers, emb_dim, mlp_dim, vocab_size, seq_len
    n_matmul = L * (3 * D * D + D * D + 2 * D * F)  # qkv, out, fc, proj kernels
    # + the tied output projection + attention q.k and p.v over the full T x T
    per_token = 6 * n_matmul + 6 * D * V + 12 * L * T * D
    return {"matmul_params": n_matmul, "per_token": per_token, "per_step": per_token * batch * T}


def gpt_zoo_step(model: str, batch: int, seq_len: int,
                 **overrides: Any) -> tuple[ZooStep, dict[str, float]]:
    """(the zoo's causal-LM step of `model` on B x T random tokens, its `step_flops`)."""
    step = ZooStep(model, lambda cfg: lm_batch(batch, seq_len, cfg.vocab_size),
                   max_len=seq_len, **overrides)
    cfg = step.model.config
    return step, step_flops(cfg.num_layers, cfg.emb_dim, cfg.mlp_dim, cfg.vocab_size, batch,
                            seq_len)


def padded_vocab(vocab_size: int, multiple: int = VOCAB_MULTIPLE) -> int:
    """The vocabulary rounded up to a multiple of `multiple` (50257 -> 50304)."""
    return -(-vocab_size // multiple) * multiple


def build_torch_gpt(cfg: Any):
    import torch
    import torch.nn.functional as F
    from torch import nn

    D, N, L = cfg.emb_dim, cfg.num_heads, cfg.num_layers

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_attn, self.ln_mlp = nn.LayerNorm(D, eps=1e-5), nn.LayerNorm(D, eps=1e-5)
            self.qkv = nn.Linear(D, 3 * D)  # output features ordered (3, N, H), as the zoo's
            self.out, self.fc, self.proj = (nn.Linear(D, D), nn.Linear(D, cfg.mlp_dim),
                                            nn.Linear(cfg.mlp_dim, D))
            for lin, std in ((self.qkv, 0.02), (self.fc, 0.02), (self.out, 0.02 / math.sqrt(2 * L)),
                             (self.proj, 0.02 / math.sqrt(2 * L))):
                nn.init.normal_(lin.weight, std=std)
                nn.init.zeros_(lin.bias)

        def forward(self, x):
            B, T, _ = x.shape
            qkv = self.qkv(self.ln_attn(x)).view(B, T, 3, N, D // N).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)
            x = x + self.out(y.transpose(1, 2).reshape(B, T, D))
            return x + self.proj(F.gelu(self.fc(self.ln_mlp(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(cfg.vocab_size, D)
            self.wpe = nn.Parameter(torch.empty(cfg.max_len, D))
            self.blocks = nn.Sequential(*(Block() for _ in range(L)))
            self.ln_f = nn.LayerNorm(D, eps=1e-5)
            nn.init.normal_(self.wte.weight, std=0.02)
            nn.init.normal_(self.wpe, std=0.01)

        def forward(self, tokens):
            x = self.blocks(self.wte(tokens) + self.wpe[:tokens.shape[1]])
            return F.linear(self.ln_f(x), self.wte.weight)  # tied output

    return GPT()


class TorchGPTStep(TorchSide):
    """`build_torch_gpt(cfg)`'s train step on `batch`; `nanogpt=True` (for `benchmarks.mfu`):
    nanoGPT's, the vocabulary padded to a multiple of 128 and the mean loss over B*T."""

    def __init__(self, cfg: Any, batch: dict[str, Any], nanogpt: bool = False, **kwargs: Any):
        self.vocab_size = padded_vocab(cfg.vocab_size) if nanogpt else cfg.vocab_size
        b = to_torch(batch, kwargs.get("device", "cpu"))
        inputs = (b["inputs"], b["targets"]) + (() if nanogpt else (b["weights"],))
        super().__init__(
            lambda: build_torch_gpt(dataclasses.replace(cfg, vocab_size=self.vocab_size)),
            lm_loss, lambda: inputs, **kwargs)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_options(p, model="gpt_tiny", batch=16, seq_len=256)
    add_timing_arguments(p, steps=20, warmup=3)
    p.add_argument("--jax-attention", nargs="+", default=["auto"],
                   help="one JAX side per attention_implementation (auto = the model default: "
                        "blocked on CPU), e.g. --jax-attention auto xla")
    args = p.parse_args(argv)
    info, threads, use_torch, peak, peak_gflops = start(args)

    sides: dict[str, Any] = {}
    names = {}
    for impl in args.jax_attention:
        name = "jax" if impl == "auto" else f"jax-{impl}"
        overrides = {} if impl == "auto" else {"attention_implementation": impl}
        sides[name], flops = gpt_zoo_step(args.model, args.batch, args.seq_len, **overrides)
        names[name] = f"JAX zoo jit_train_step, attention {impl} (jax {info['jax']})"
    jstep = next(iter(sides.values()))
    print(f"{args.model}: {jstep.num_params:,} params, B={args.batch} T={args.seq_len}; "
          + jstep.flops_text(flops["per_step"]))
    if use_torch:
        sides["torch"] = TorchGPTStep(jstep.model.config, jstep.host_batch, threads=threads)
        names["torch"] = f"PyTorch eager (torch {info['torch']})"
    times, loads = race(sides, args)
    results = summarize(times, loads, args.batch * args.seq_len, flops["per_step"], peak_gflops)
    print_table(["implementation", "ms/step (min-max)", "tokens/s", "GFLOP/s", "% of peak",
                 "vs PyTorch"], [[names[k], table_cells(r)] for k, r in results.items()])
    print(f"peak = {peak_gflops:.1f} GFLOP/s (f32 matmul); medians of {args.repeats} rounds x "
          f"{args.steps} steps, interleaved; clean rounds: " +
          ", ".join(f"{k} {r['clean_rounds']}/{args.repeats}" for k, r in results.items()))
    out = {"info": info, "args": vars(args), "matmul_gflops": peak, "peak_gflops": peak_gflops,
           "flops": flops, "xla_cost_analysis_flops": jstep.xla_flops,
           "num_params": jstep.num_params, "step_times_s": times, "other_load_cores": loads,
           "results": results}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
