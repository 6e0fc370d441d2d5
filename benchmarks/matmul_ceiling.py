"""How fast can the GPT step's own matmuls go? Each one timed alone, in JAX and in PyTorch.

    python -m benchmarks.matmul_ceiling [--batch 16 --seq-len 256] [--json PATH]

A training step's "% of the matmul peak" compares its analytic FLOPs with the best GFLOP/s of a
large square matmul (benchmarks/gpt_step.py). The step's matmuls are not square: gpt_tiny's are
(B*T, D) @ (D, 3D | D | F) and (B*T, F) @ (F, D) with D = 256, and each appears three times (the
forward `X @ W`, the input gradient `dY @ Wᵀ`, the weight gradient `Xᵀ @ dY`, a contraction
over all B*T rows). This script runs every one of them alone, at the step's shapes, plus the
causal attention core (forward + backward of q, k, v -> output), and sums the medians: the time
the step would take if nothing but its matmuls cost anything. Its FLOPs over that sum is the
highest "% of peak" the step can show with these kernels, whatever the code around them does.

JAX side: each product as its own jitted `lax.dot_general` (the layouts the zoo's 2-D Dense
produces, zoo/nn/dense.py); attention: `zoo.nn.attention.causal_attention` (blocked on CPU)
under `jax.vjp`. PyTorch side: `torch.mm` on the same (transposed-view) operands autograd uses;
attention: `F.scaled_dot_product_attention(is_causal=True)` forward + backward.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

from benchmarks.gpt_step import step_flops, wait_for_quiet


def step_matmuls(num_layers: int, emb_dim: int, mlp_dim: int, vocab_size: int,
                 tokens: int) -> list[tuple[str, int, int, int, int]]:
    """(name, M, K, N, count) of every dense product (M, K) @ (K, N) in one training step."""
    L, D, F, V, M = num_layers, emb_dim, mlp_dim, vocab_size, tokens
    dense = [("qkv", D, 3 * D, L), ("out", D, D, L), ("fc", D, F, L), ("proj", F, D, L),
             ("logits", D, V, 1)]
    out = []
    for name, k, n, count in dense:
        out.append((f"{name} X@W", M, k, n, count))       # forward
        out.append((f"{name} dY@Wt", M, n, k, count))     # input gradient
        out.append((f"{name} Xt@dY", k, M, n, count))     # weight gradient
    return out


def _median_time(fn: Callable[[], object], sync: Callable[[object], object], repeats: int) -> float:
    sync(fn())
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sync(fn())
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def jax_products(m: int, k: int, n: int, kind: str) -> Callable[[], object]:
    import jax
    from jax import lax

    ka, kb = jax.random.split(jax.random.key(0))
    if kind == "X@W":  # x (M, K), w (K, N)
        a, b, dims = jax.random.normal(ka, (m, k)), jax.random.normal(kb, (k, n)), ((1,), (0,))
    elif kind == "dY@Wt":  # dy (M, K), w (N, K): contract the kernel's output axis
        a, b, dims = jax.random.normal(ka, (m, k)), jax.random.normal(kb, (n, k)), ((1,), (1,))
    else:  # "Xt@dY": x stored (rows, M) and dy (rows, N), contracting the rows (K = B*T)
        a, b, dims = jax.random.normal(ka, (k, m)), jax.random.normal(kb, (k, n)), ((0,), (0,))
    f = jax.jit(lambda a, b: lax.dot_general(a, b, (dims, ((), ()))))
    return lambda: f(a, b)


def torch_products(m: int, k: int, n: int, kind: str) -> Callable[[], object]:
    import torch

    g = torch.Generator().manual_seed(0)
    if kind == "X@W":
        a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
    elif kind == "dY@Wt":
        a, b = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g).t()
    else:
        a, b = torch.randn(k, m, generator=g).t(), torch.randn(k, n, generator=g)
    return lambda: torch.mm(a, b)


def jax_attention(batch: int, seq_len: int, heads: int, head_dim: int) -> Callable[[], object]:
    import jax

    from zoo.nn.attention import causal_attention

    q, k, v, g = (jax.random.normal(r, (batch, seq_len, heads, head_dim))
                  for r in jax.random.split(jax.random.key(0), 4))

    @jax.jit
    def fwd_bwd(q, k, v, g):
        out, vjp = jax.vjp(causal_attention, q, k, v)
        return out, vjp(g)

    return lambda: fwd_bwd(q, k, v, g)


def torch_attention(batch: int, seq_len: int, heads: int, head_dim: int) -> Callable[[], object]:
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, heads, seq_len, head_dim, generator=gen, requires_grad=True)
               for _ in range(3))
    g = torch.randn(batch, heads, seq_len, head_dim, generator=gen)

    def fwd_bwd():
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return torch.autograd.grad(out, (q, k, v), g)

    return fwd_bwd


def measure(model: str = "gpt_tiny", batch: int = 16, seq_len: int = 256, repeats: int = 20,
            use_torch: bool = True, max_wait: float = 10.0) -> dict:
    import jax

    import zoo

    cfg = zoo.create_model(model).config
    L, D, F, V, N = cfg.num_layers, cfg.emb_dim, cfg.mlp_dim, cfg.vocab_size, cfg.num_heads
    tokens = batch * seq_len
    sides = {"jax": (jax_products, jax_attention, jax.block_until_ready)}
    if use_torch:
        try:
            import torch  # noqa: F401
            sides["torch"] = (torch_products, torch_attention, lambda x: x)
        except ImportError:
            print("PyTorch not installed: JAX side only.")
    rows, totals = [], {k: 0.0 for k in sides}
    for name, m, k, n, count in step_matmuls(L, D, F, V, tokens):
        gflop = 2 * m * k * n / 1e9
        row = {"name": name, "m": m, "k": k, "n": n, "count": count, "gflop": gflop}
        for side, (products, _, sync) in sides.items():
            wait_for_quiet(max_wait)
            t = _median_time(products(m, k, n, name.split()[1]), sync, repeats)
            row[f"{side}_ms"], row[f"{side}_gflops"] = t * 1e3, gflop / t
            totals[side] += count * t
        rows.append(row)
    attn_gflop = 12 * seq_len * D * tokens / 1e9  # per layer, full T x T (the analytic count)
    attn = {"name": "causal attention fwd+bwd", "count": L, "gflop": attn_gflop}
    for side, (_, attention, sync) in sides.items():
        wait_for_quiet(max_wait)
        t = _median_time(attention(batch, seq_len, N, D // N), sync, repeats)
        attn[f"{side}_ms"], attn[f"{side}_gflops"] = t * 1e3, attn_gflop / t
        totals[side] += L * t
    rows.append(attn)
    flops = step_flops(L, D, F, V, batch, seq_len)["per_step"]
    return {"model": model, "batch": batch, "seq_len": seq_len, "rows": rows,
            "matmul_ms_per_step": {k: v * 1e3 for k, v in totals.items()},
            "step_gflop": flops / 1e9,
            "ceiling_gflops": {k: flops / v / 1e9 for k, v in totals.items()}}


def print_table(r: dict, peak_gflops: float | None = None) -> None:
    sides = list(r["matmul_ms_per_step"])
    print("| product (M, K, N) | x per step | " +
          " | ".join(f"{s} ms (GFLOP/s)" for s in sides) + " |")
    print("|---|---|" + "---|" * len(sides))
    for row in r["rows"]:
        shape = f" ({row['m']}, {row['k']}, {row['n']})" if "m" in row else ""
        print(f"| {row['name']}{shape} | {row['count']} | " + " | ".join(
            f"{row[f'{s}_ms']:.2f} ({row[f'{s}_gflops']:.0f})" for s in sides) + " |")
    for s in sides:
        line = (f"{s}: the step's matmuls alone take {r['matmul_ms_per_step'][s]:.0f} ms "
                f"-> {r['ceiling_gflops'][s]:.1f} GFLOP/s over the step's "
                f"{r['step_gflop']:.2f} analytic GFLOP")
        if peak_gflops:
            line += f" = {100 * r['ceiling_gflops'][s] / peak_gflops:.0f}% of {peak_gflops:.1f}"
        print(line)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="gpt_tiny")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--peak", type=float, default=None,
                   help="GFLOP/s to express the ceiling against (default: jnp.dot 2048² now)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from benchmarks.gpt_step import jax_matmul

    peak = args.peak
    if peak is None:
        once, best = jax_matmul(2048), float("inf")
        for _ in range(10):
            wait_for_quiet(5.0)
            best = min(best, once())
        peak = 2 * 2048**3 / best / 1e9
    r = measure(args.model, args.batch, args.seq_len, args.repeats, not args.no_torch)
    r["peak_gflops"] = peak
    print_table(r, peak)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)
    return r


if __name__ == "__main__":
    main(sys.argv[1:])
