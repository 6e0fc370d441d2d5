"""GPT training-step throughput: the zoo's jitted JAX step vs the same model in PyTorch.

    python -m benchmarks.gpt_step [--batch 16 --seq-len 256 --steps 20 --repeats 5] [--json PATH]

Measured in one process:
  (a) the machine's f32 matmul peak: best-of-N GFLOP/s of jitted `jnp.dot` (XLA), `np.matmul`
      (numpy's OpenBLAS) and `torch.mm` on square f32 matrices (default 2048 and 4096); "peak"
      is the largest of all of them.
  (b) the zoo's full train step, `zoo.train.step.jit_train_step(CausalLM())` (forward, backward,
      global-norm clipping, AdamW with masked weight decay, cosine schedule), dropout 0.
  (c) a PyTorch GPT with the same shapes and math: token + learned position embeddings, pre-LN
      blocks, causal MHA with a fused qkv Linear and F.scaled_dot_product_attention(is_causal=True),
      tanh-GELU MLP, final LayerNorm, output tied to the token embedding; train step = zero_grad,
      forward, weighted cross entropy, backward, clip_grad_norm_(1.0), AdamW.step (weight decay on
      the >= 2-D parameters, like zoo.train.optimizer.decay_mask). Skipped if torch is missing.
The JAX and PyTorch measurements alternate (A B A B ...), `--repeats` rounds of `--steps` steps
each, and the medians are reported, so that load from other processes hits both sides alike.
Before each round the script waits (up to `--max-wait` s) for other processes to leave the CPU
idle, and it records how many cores other processes used during the round (from /proc/stat);
the medians are taken over the "clean" rounds (others < 0.25 cores) when at least half of the
rounds are clean, else over all rounds (the JSON keeps every round). The machinery is
`benchmarks.harness`'s.

`benchmarks.mfu` runs the same PyTorch GPT as nanoGPT trains it on a GPU (`nanogpt=True`): the
vocabulary padded to a multiple of 128 (50257 -> 50304; the extra rows are never a target and
only make the logits matmul tensor-core friendly), the mean cross entropy over all B*T positions.

FLOPs per training step (matmul FLOPs only, the usual "model FLOPs" count, Kaplan et al. 2020 /
PaLM appendix B), with L layers, D = emb_dim, F = mlp_dim, V = vocab_size, T = sequence length:

    N_matmul   = L * (3*D*D + D*D + 2*D*F)          # qkv, out, fc, proj kernels (no embeddings)
    per token  = 6 * N_matmul                       # forward 2x, backward 4x
               + 6 * D * V                          # tied output projection (logits)
               + 12 * L * T * D                     # attention scores q.k and values p.v
                                                    # (2 matmuls * 2 * T * D, times 3 for fwd+bwd;
                                                    #  full T x T, as XLA and SDPA compute it)
    per step   = per token * B * T

For gpt_tiny (L=4, D=256, F=1024, V=256) at B=16, T=256 that is 22.41 MFLOP/token, 91.8 GFLOP per
step. XLA's own count (`jit(...).lower(...).compile().cost_analysis()["flops"]`, which also
counts elementwise ops, softmax, LayerNorm and the optimizer) is printed next to it as a check.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from benchmarks.harness import (TorchSide, ZooStep, add_timing_arguments, lm_batch, lm_loss,
                                race, start, summarize, table_cells, to_torch, write_json)

VOCAB_MULTIPLE = 128  # nanoGPT pads GPT-2's 50257 to 50304


def step_flops(num_layers: int, emb_dim: int, mlp_dim: int, vocab_size: int,
               batch: int, seq_len: int) -> dict[str, float]:
    """Analytic matmul FLOPs of one training step (see the module docstring)."""
    L, D, F, V, T = num_layers, emb_dim, mlp_dim, vocab_size, seq_len
    n_matmul = L * (3 * D * D + D * D + 2 * D * F)
    per_token = 6 * n_matmul + 6 * D * V + 12 * L * T * D
    return {"matmul_params": n_matmul, "per_token": per_token, "per_step": per_token * batch * T}


def gpt_zoo_step(model: str, batch: int, seq_len: int,
                 **overrides: Any) -> tuple[ZooStep, dict[str, float]]:
    """(the zoo's causal-LM step of registry model `model` on B x T random tokens, the position
    table sized to T; its analytic FLOPs)."""
    step = ZooStep(model, lambda cfg: lm_batch(batch, seq_len, cfg.vocab_size),
                   max_len=seq_len, **overrides)
    cfg = step.model.config
    return step, step_flops(cfg.num_layers, cfg.emb_dim, cfg.mlp_dim, cfg.vocab_size, batch,
                            seq_len)


def padded_vocab(vocab_size: int, multiple: int = VOCAB_MULTIPLE) -> int:
    """The vocabulary rounded up to a multiple of `multiple` (50257 -> 50304)."""
    return -(-vocab_size // multiple) * multiple


def build_torch_gpt(cfg: Any):
    import math

    import torch
    import torch.nn.functional as F
    from torch import nn

    D, N, Fd, L = cfg.emb_dim, cfg.num_heads, cfg.mlp_dim, cfg.num_layers

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_attn = nn.LayerNorm(D, eps=1e-5)
            self.qkv = nn.Linear(D, 3 * D)  # output features ordered (3, N, H), as the zoo's
            self.out = nn.Linear(D, D)
            self.ln_mlp = nn.LayerNorm(D, eps=1e-5)
            self.fc = nn.Linear(D, Fd)
            self.proj = nn.Linear(Fd, D)

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
            self.blocks = nn.ModuleList(Block() for _ in range(L))
            self.ln_f = nn.LayerNorm(D, eps=1e-5)
            nn.init.normal_(self.wte.weight, std=0.02)
            nn.init.normal_(self.wpe, std=0.01)
            for blk in self.blocks:
                for lin, std in ((blk.qkv, 0.02), (blk.fc, 0.02),
                                 (blk.out, 0.02 / math.sqrt(2 * L)),
                                 (blk.proj, 0.02 / math.sqrt(2 * L))):
                    nn.init.normal_(lin.weight, std=std)
                    nn.init.zeros_(lin.bias)

        def forward(self, tokens):
            T = tokens.shape[1]
            x = self.wte(tokens) + self.wpe[:T]
            for blk in self.blocks:
                x = blk(x)
            return F.linear(self.ln_f(x), self.wte.weight)  # tied output

    return GPT()


class TorchGPTStep(TorchSide):
    """`build_torch_gpt(cfg)`'s train step (`TorchSide`) on `batch`, the zoo side's tokens
    (`ZooStep.host_batch`); `nanogpt=True`: nanoGPT's padded vocabulary and mean loss."""

    def __init__(self, cfg: Any, batch: dict[str, Any], nanogpt: bool = False, **kwargs: Any):
        self.vocab_size = padded_vocab(cfg.vocab_size) if nanogpt else cfg.vocab_size
        b = to_torch(batch, kwargs.get("device", "cpu"))
        inputs = (b["inputs"], b["targets"]) + (() if nanogpt else (b["weights"],))
        super().__init__(
            lambda: build_torch_gpt(dataclasses.replace(cfg, vocab_size=self.vocab_size)),
            lm_loss, lambda: inputs, **kwargs)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="gpt_tiny")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
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
    print()
    print("| implementation | ms/step (min-max) | tokens/s | GFLOP/s | % of peak | vs PyTorch |")
    print("|---|---|---|---|---|---|")
    for k, r in results.items():
        print(f"| {names[k]} | {table_cells(r)} |")
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
