"""How fast can the GPT step's own matmuls go? Each one timed alone, in JAX and in PyTorch.

    python -m benchmarks.matmul_ceiling [--batch 16 --seq-len 256 --rounds 15] [--json PATH]

Every dense product of the gpt_tiny step (forward `X @ W`, input gradient `dY @ Wᵀ`, weight
gradient `Xᵀ @ dY`) at the step's shapes, plus the causal attention core (forward + backward),
is timed alone; the sum of the medians is the time the step would take if nothing but its
matmuls cost anything, and its FLOPs over that sum the highest "% of peak" the step can show
with these kernels. Every item (the products, the attention, the 2048² peak matmul and the
zoo's full step) is timed once per round, round-robin, so all see the same machine state.
JAX: `zoo.nn.dense.matmul_2d` (what every Dense runs) forward or under `jax.vjp`, attention
`zoo.nn.attention.causal_attention`. PyTorch: `torch.mm` on the transposed-view operands
autograd uses, SDPA attention. `--numpy`: `np.matmul` on those operands (the JAX attention).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable

from benchmarks.gpt_step import gpt_zoo_step, step_flops
from benchmarks.harness import (add_options, call_timer, matmul_timer, print_table,
                                torch_version, wait_for_quiet, write_json)

KINDS = ("X@W", "dY@Wt", "Xt@dY")


def step_matmuls(num_layers: int, emb_dim: int, mlp_dim: int, vocab_size: int,
                 tokens: int) -> list[tuple[str, int, int, int, int]]:
    """(name, M, K, N, count) of every dense product (M, K) @ (K, N) in one training step."""
    L, D, F, V, M = num_layers, emb_dim, mlp_dim, vocab_size, tokens
    dense = [("qkv", D, 3 * D, L), ("out", D, D, L), ("fc", D, F, L), ("proj", F, D, L),
             ("logits", D, V, 1)]
    shapes = {"X@W": lambda k, n: (M, k, n), "dY@Wt": lambda k, n: (M, n, k),
              "Xt@dY": lambda k, n: (k, M, n)}  # forward, input and weight gradient
    return [(f"{name} {kind}", *shapes[kind](k, n), count)
            for name, k, n, count in dense for kind in KINDS]


def jax_product(m: int, k: int, n: int, kind: str) -> Callable[[], object]:
    """The product as the zoo's step computes it: forward or one gradient of `matmul_2d`
    (which runs some weight gradients in the transposed orientation)."""
    import jax

    from zoo.nn.dense import matmul_2d

    rows, d_in, d_out = {"X@W": (m, k, n), "dY@Wt": (m, n, k), "Xt@dY": (k, m, n)}[kind]
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x, w = jax.random.normal(kx, (rows, d_in)), jax.random.normal(kw, (d_in, d_out))
    dy = jax.random.normal(kg, (rows, d_out))
    if kind == "X@W":
        f = jax.jit(lambda x, w, dy: matmul_2d(x, w))
    elif kind == "dY@Wt":
        f = jax.jit(lambda x, w, dy: jax.vjp(lambda x: matmul_2d(x, w), x)[1](dy)[0])
    else:
        f = jax.jit(lambda x, w, dy: jax.vjp(lambda w: matmul_2d(x, w), w)[1](dy)[0])
    return lambda: jax.block_until_ready(f(x, w, dy))


def blas_product(library: str, m: int, k: int, n: int, kind: str) -> Callable[[], object]:
    """`np.matmul` or `torch.mm` of random float32 operands laid out as autograd has them
    (Wᵀ in dY @ Wᵀ and Xᵀ in Xᵀ @ dY are transposed views)."""
    import numpy as np

    rng = np.random.default_rng(0)
    shapes = {"X@W": ((m, k), (k, n)), "dY@Wt": ((m, k), (n, k)), "Xt@dY": ((k, m), (k, n))}
    a, b = (rng.standard_normal(shape, dtype=np.float32) for shape in shapes[kind])
    a, b = (a.T if kind == "Xt@dY" else a), (b.T if kind == "dY@Wt" else b)
    if library == "numpy":
        return lambda: np.matmul(a, b)
    import torch

    a, b = torch.from_numpy(a), torch.from_numpy(b)
    return lambda: torch.mm(a, b)


def attention(library: str, batch: int, seq_len: int, heads: int,
              head_dim: int) -> Callable[[], object]:
    """Forward + backward of causal attention: the zoo's (JAX) or torch's SDPA."""
    if library == "jax":
        import jax

        from zoo.nn.attention import causal_attention

        q, k, v, g = (jax.random.normal(r, (batch, seq_len, heads, head_dim))
                      for r in jax.random.split(jax.random.key(0), 4))
        f = jax.jit(lambda q, k, v, g: jax.vjp(causal_attention, q, k, v)[1](g))
        return lambda: jax.block_until_ready(f(q, k, v, g))
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    q, k, v, g = (torch.randn(batch, heads, seq_len, head_dim, generator=gen, requires_grad=i < 3)
                  for i in range(4))
    return lambda: torch.autograd.grad(F.scaled_dot_product_attention(q, k, v, is_causal=True),
                                       (q, k, v), g)


def measure(model: str = "gpt_tiny", batch: int = 16, seq_len: int = 256, rounds: int = 15,
            use_torch: bool = True, with_step: bool = True, use_numpy: bool = False) -> dict:
    """Times every product, the attention core, the 2048² peak matmul and (`with_step`) the
    zoo's full train step once per round, round-robin; each figure is the median of `rounds`."""
    import zoo

    cfg = zoo.create_model(model).config
    L, D, F, V, N = cfg.num_layers, cfg.emb_dim, cfg.mlp_dim, cfg.vocab_size, cfg.num_heads
    use_torch = torch_version(skip=not use_torch) is not None
    sides = [s for s, on in (("jax", True), ("torch", use_torch), ("numpy", use_numpy)) if on]
    products = step_matmuls(L, D, F, V, batch * seq_len)
    timers: dict[tuple[str, str], Callable[[], float]] = {}  # (side, item) -> seconds
    for side in sides:
        timers[side, "peak"] = matmul_timer(side, 2048)
        for name, m, k, n, _ in products:
            kind = name.split()[1]
            timers[side, name] = call_timer(jax_product(m, k, n, kind) if side == "jax" else
                                            blas_product(side, m, k, n, kind))
        if side != "numpy":  # numpy has no attention: its sum takes JAX's
            timers[side, "attention"] = call_timer(attention(side, batch, seq_len, N, D // N))
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

    rows = [{"name": name, "m": m, "k": k, "n": n, "count": count, "gflop": 2 * m * k * n / 1e9}
            for name, m, k, n, count in products]
    rows.append({"name": "causal attention fwd+bwd", "count": L,  # per layer, full T x T
                 "gflop": 12 * seq_len * D * batch * seq_len / 1e9})
    for row in rows:
        key = "attention" if "m" not in row else row["name"]
        for side in sides:
            row[f"{side}_ms"], row[f"{side}_gflops"] = (med[side, key] * 1e3,
                                                        row["gflop"] / med[side, key])
    flops = step_flops(L, D, F, V, batch, seq_len)["per_step"]
    totals = {s: sum(med[s, name] * count for name, *_, count in products)
              + L * med[s, "attention"] for s in sides}
    out = {"model": model, "batch": batch, "seq_len": seq_len, "rounds": rounds, "rows": rows,
           "peak_gflops": max(2 * 2048**3 / med[s, "peak"] / 1e9 for s in sides),
           "step_gflop": flops / 1e9, "matmul_ms_per_step": {k: v * 1e3 for k, v in totals.items()},
           "ceiling_gflops": {k: flops / v / 1e9 for k, v in totals.items()}}
    if with_step:
        out["zoo_step_ms"] = med["jax", "step"] * 1e3
    return out


def print_results(r: dict) -> None:
    sides, peak = list(r["matmul_ms_per_step"]), r["peak_gflops"]
    print_table(["product (M, K, N)", "x per step"] + [f"{s} ms (GFLOP/s)" for s in sides], [
        [row["name"] + (f" ({row['m']}, {row['k']}, {row['n']})" if "m" in row else ""),
         row["count"]] + [f"{row[f'{s}_ms']:.2f} ({row[f'{s}_gflops']:.0f})" for s in sides]
        for row in r["rows"]])
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
    add_options(p, model="gpt_tiny", batch=16, seq_len=256, rounds=15, json=None)
    p.add_argument("--no-step", action="store_true", help="skip timing the zoo's full step")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--numpy", action="store_true", help="also time the products in numpy")
    args = p.parse_args(argv)
    r = measure(args.model, args.batch, args.seq_len, args.rounds, not args.no_torch,
                not args.no_step, args.numpy)
    print_results(r)
    write_json(args.json, r)
    return r


if __name__ == "__main__":
    main(sys.argv[1:])
