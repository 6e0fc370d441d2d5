"""How fast can the GPT step's own matmuls go? Each one timed alone, in JAX and in PyTorch.

    python -m benchmarks.matmul_ceiling [--batch 16 --seq-len 256 --rounds 15] [--json PATH]

A training step's "% of the matmul peak" compares its analytic FLOPs with the best GFLOP/s of a
large square matmul (benchmarks/gpt_step.py). The step's matmuls are not square: gpt_tiny's are
(B*T, D) @ (D, 3D | D | F) and (B*T, F) @ (F, D) with D = 256, and each appears three times (the
forward `X @ W`, the input gradient `dY @ Wᵀ`, the weight gradient `Xᵀ @ dY`, a contraction
over all B*T rows). This script runs every one of them alone, at the step's shapes, plus the
causal attention core (forward + backward of q, k, v -> output), and sums the medians: the time
the step would take if nothing but its matmuls cost anything. Its FLOPs over that sum is the
highest "% of peak" the step can show with these kernels, whatever the code around them does.
Every item (each product, the attention, the 2048² peak matmul of gpt_step and the zoo's full
train step) is timed once per round, round-robin, and reported as its median over the rounds,
so that the ceiling, the peak and the step are compared under the same machine state.

JAX side: each product as its own jitted forward or gradient of `zoo.nn.dense.matmul_2d`, the
2-D matmul every Dense of the zoo runs (zoo/nn/dense.py); attention: `zoo.nn.attention.causal_attention` (blocked on CPU)
under `jax.vjp`. PyTorch side: `torch.mm` on the same (transposed-view) operands autograd uses;
attention: `F.scaled_dot_product_attention(is_causal=True)` forward + backward. numpy side
(`--numpy`): `np.matmul` (OpenBLAS in the PyPI wheels) on those operands; numpy has no attention,
so its sum takes the JAX side's attention time.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable

from benchmarks.gpt_step import gpt_zoo_step, step_flops
from benchmarks.harness import call_timer, matmul_timer, wait_for_quiet, write_json


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


def jax_products(m: int, k: int, n: int, kind: str) -> Callable[[], object]:
    """The product as the zoo's step computes it: forward or one gradient of
    `zoo.nn.dense.matmul_2d`, the 2-D matmul behind every Dense (which, for a kernel with
    more inputs than outputs, computes the weight gradient in the transposed orientation)."""
    import jax

    from zoo.nn.dense import matmul_2d

    rows, d_in, d_out = {"X@W": (m, k, n), "dY@Wt": (m, n, k), "Xt@dY": (k, m, n)}[kind]
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x, w = jax.random.normal(kx, (rows, d_in)), jax.random.normal(kw, (d_in, d_out))
    dy = jax.random.normal(kg, (rows, d_out))
    if kind == "X@W":
        f = jax.jit(matmul_2d)
        return lambda: f(x, w)
    if kind == "dY@Wt":
        f = jax.jit(lambda x, w, dy: jax.vjp(lambda x: matmul_2d(x, w), x)[1](dy)[0])
    else:
        f = jax.jit(lambda x, w, dy: jax.vjp(lambda w: matmul_2d(x, w), w)[1](dy)[0])
    return lambda: f(x, w, dy)


def numpy_operands(m: int, k: int, n: int, kind: str):
    """Random float32 (A, B) of the product, laid out as autograd has them (Wᵀ in dY @ Wᵀ and
    Xᵀ in Xᵀ @ dY are transposed views)."""
    import numpy as np

    rng = np.random.default_rng(0)
    shapes = {"X@W": ((m, k), (k, n)), "dY@Wt": ((m, k), (n, k)), "Xt@dY": ((k, m), (k, n))}
    a, b = (rng.standard_normal(shape, dtype=np.float32) for shape in shapes[kind])
    return (a.T if kind == "Xt@dY" else a), (b.T if kind == "dY@Wt" else b)


def torch_products(m: int, k: int, n: int, kind: str) -> Callable[[], object]:
    import torch

    a, b = (torch.from_numpy(x) for x in numpy_operands(m, k, n, kind))
    return lambda: torch.mm(a, b)


def numpy_products(m: int, k: int, n: int, kind: str) -> Callable[[], object]:
    import numpy as np

    a, b = numpy_operands(m, k, n, kind)
    return lambda: np.matmul(a, b)


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


def measure(model: str = "gpt_tiny", batch: int = 16, seq_len: int = 256, rounds: int = 15,
            use_torch: bool = True, with_step: bool = True, use_numpy: bool = False) -> dict:
    """Times every product, the attention core, the 2048² peak matmul and (`with_step`) the
    zoo's full train step once per round, round-robin, so that all of them see the same machine
    state; each figure is the median over `rounds`."""
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
    if use_numpy:
        sides["numpy"] = (numpy_products, None, lambda x: x)
    timers: dict[tuple[str, str], Callable[[], float]] = {}  # (side, item) -> seconds

    def timed(fn: Callable[[], object], sync: Callable[[object], object]):
        return call_timer(lambda: sync(fn()))

    products = step_matmuls(L, D, F, V, tokens)
    for side, (prod, attention, sync) in sides.items():
        timers[side, "peak"] = matmul_timer(side, 2048)
        for name, m, k, n, _ in products:
            timers[side, name] = timed(prod(m, k, n, name.split()[1]), sync)
        if attention is not None:
            timers[side, "attention"] = timed(attention(batch, seq_len, N, D // N), sync)
    if with_step:
        step, _ = gpt_zoo_step(model, batch, seq_len)
        timers["jax", "step"] = lambda: step.run(1)
    for t in timers.values():  # warm up
        t()
    times: dict[tuple[str, str], list[float]] = {k: [] for k in timers}
    for _ in range(rounds):
        wait_for_quiet(10.0)
        for key, t in timers.items():
            times[key].append(t())
    med = {k: statistics.median(v) for k, v in times.items()}
    for side in sides:
        med.setdefault((side, "attention"), med["jax", "attention"])

    rows = []
    for name, m, k, n, count in products:
        gflop = 2 * m * k * n / 1e9
        row = {"name": name, "m": m, "k": k, "n": n, "count": count, "gflop": gflop}
        for side in sides:
            row[f"{side}_ms"], row[f"{side}_gflops"] = med[side, name] * 1e3, gflop / med[side, name]
        rows.append(row)
    attn = {"name": "causal attention fwd+bwd", "count": L,
            "gflop": 12 * seq_len * D * tokens / 1e9}  # per layer, full T x T (analytic count)
    for side in sides:
        attn[f"{side}_ms"] = med[side, "attention"] * 1e3
        attn[f"{side}_gflops"] = attn["gflop"] / med[side, "attention"]
    rows.append(attn)
    flops = step_flops(L, D, F, V, batch, seq_len)["per_step"]
    totals = {s: sum(med[s, name] * count for name, *_, count in products) + L * med[s, "attention"]
              for s in sides}
    peak = max(2 * 2048**3 / med[s, "peak"] / 1e9 for s in sides)
    out = {"model": model, "batch": batch, "seq_len": seq_len, "rounds": rounds, "rows": rows,
           "peak_gflops": peak, "step_gflop": flops / 1e9,
           "matmul_ms_per_step": {k: v * 1e3 for k, v in totals.items()},
           "ceiling_gflops": {k: flops / v / 1e9 for k, v in totals.items()}}
    if with_step:
        out["zoo_step_ms"] = med["jax", "step"] * 1e3
    return out


def print_table(r: dict) -> None:
    sides = list(r["matmul_ms_per_step"])
    print("| product (M, K, N) | x per step | " +
          " | ".join(f"{s} ms (GFLOP/s)" for s in sides) + " |")
    print("|---|---|" + "---|" * len(sides))
    for row in r["rows"]:
        shape = f" ({row['m']}, {row['k']}, {row['n']})" if "m" in row else ""
        print(f"| {row['name']}{shape} | {row['count']} | " + " | ".join(
            f"{row[f'{s}_ms']:.2f} ({row[f'{s}_gflops']:.0f})" for s in sides) + " |")
    peak = r["peak_gflops"]
    print(f"peak (2048² matmul, median of the same rounds): {peak:.1f} GFLOP/s")
    for s in sides:
        print(f"{s}: the step's matmuls alone take {r['matmul_ms_per_step'][s]:.0f} ms -> "
              f"{r['ceiling_gflops'][s]:.1f} GFLOP/s over the step's {r['step_gflop']:.2f} "
              f"analytic GFLOP = {100 * r['ceiling_gflops'][s] / peak:.0f}% of the peak")
    if "zoo_step_ms" in r:
        gflops = r["step_gflop"] / r["zoo_step_ms"] * 1e3
        print(f"zoo train step (same rounds): {r['zoo_step_ms']:.0f} ms -> {gflops:.1f} GFLOP/s "
              f"= {100 * gflops / peak:.0f}% of the peak")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="gpt_tiny")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--no-step", action="store_true", help="skip timing the zoo's full step")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--numpy", action="store_true", help="also time the products in numpy")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    r = measure(args.model, args.batch, args.seq_len, args.rounds, not args.no_torch,
                not args.no_step, args.numpy)
    print_table(r)
    write_json(args.json, r)
    return r


if __name__ == "__main__":
    main(sys.argv[1:])
