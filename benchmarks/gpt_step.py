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
rounds are clean, else over all rounds (the JSON keeps every round).

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
import datetime
import json
import os
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable
from typing import Any


def num_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def step_flops(num_layers: int, emb_dim: int, mlp_dim: int, vocab_size: int,
               batch: int, seq_len: int) -> dict[str, float]:
    """Analytic matmul FLOPs of one training step (see the module docstring)."""
    L, D, F, V, T = num_layers, emb_dim, mlp_dim, vocab_size, seq_len
    n_matmul = L * (3 * D * D + D * D + 2 * D * F)
    per_token = 6 * n_matmul + 6 * D * V + 12 * L * T * D
    return {"matmul_params": n_matmul, "per_token": per_token, "per_step": per_token * batch * T}


def write_json(path: str | None, results: dict[str, Any]) -> None:
    """The benchmarks' `--json PATH` output (nothing when PATH is None)."""
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=2, default=str)
        print(f"wrote {path}")


def median(xs: list[float]) -> float:
    return statistics.median(xs)


_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
CLEAN_LOAD = 0.25  # cores used by other processes below which a round counts as clean


def _cpu_busy_s() -> float | None:
    """CPU seconds all processes spent busy (incl. steal), from /proc/stat; None off Linux."""
    try:
        with open("/proc/stat") as f:
            v = list(map(int, f.readline().split()[1:]))
        return (sum(v) - v[3] - v[4]) / _HZ
    except (OSError, ValueError):
        return None


def _self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


class LoadMeter:
    """Cores used by *other* processes over an interval (None where /proc/stat is missing)."""

    def __enter__(self):
        self.b0, self.s0, self.t0 = _cpu_busy_s(), _self_cpu_s(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        b1, dt = _cpu_busy_s(), time.perf_counter() - self.t0
        self.others = (None if b1 is None or self.b0 is None else
                       max(0.0, (b1 - self.b0 - (_self_cpu_s() - self.s0)) / dt))


def wait_for_quiet(max_wait: float, window: float = 0.5) -> None:
    """Sleeps until other processes use < CLEAN_LOAD cores over `window` s, or `max_wait` s."""
    deadline = time.perf_counter() + max_wait
    while time.perf_counter() < deadline:
        with LoadMeter() as m:
            time.sleep(window)
        if m.others is None or m.others < CLEAN_LOAD:
            return


# --------------------------------------------------------------------------------------------
# (a) matmul peak


def call_timer(call: Callable[[], object]) -> Callable[[], float]:
    """Runs `call` once (warm-up) and returns a function timing one more call, in seconds."""
    call()

    def once() -> float:
        t0 = time.perf_counter()
        call()
        return time.perf_counter() - t0

    return once


def jax_matmul(n: int, dtype: str = "float32") -> Callable[[], float]:
    """n x n @ n x n on JAX's default device, operands in `dtype`, float32 accumulation."""
    import jax
    import jax.numpy as jnp

    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), dtype)
    b = jax.random.normal(kb, (n, n), dtype)
    f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    return call_timer(lambda: f(a, b).block_until_ready())


def torch_matmul(n: int) -> Callable[[], float]:
    import torch

    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    c = torch.empty(n, n)
    return call_timer(lambda: torch.mm(a, b, out=c))


def numpy_matmul(n: int) -> Callable[[], float]:
    """numpy's BLAS (OpenBLAS in the PyPI wheels): a third library in the machine's peak."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    return call_timer(lambda: np.matmul(a, b, out=c))


def measure_peak(sizes: list[int], repeats: int, max_wait: float, use_torch: bool):
    """Best-of-`repeats` f32 matmul GFLOP/s per library and size, the libraries interleaved;
    returns ({library: {n: GFLOP/s}}, the largest of them all)."""
    peak: dict[str, dict[int, float]] = {"jax": {}, "numpy": {}, "torch": {}}
    for n in sizes:
        fns = {"jax": jax_matmul(n), "numpy": numpy_matmul(n)}
        if use_torch:
            fns["torch"] = torch_matmul(n)
        best = {k: float("inf") for k in fns}
        for _ in range(repeats):
            for k, f in fns.items():
                if max_wait > 0:
                    wait_for_quiet(min(max_wait, 5.0))
                best[k] = min(best[k], f())
        for k in fns:
            peak[k][n] = 2 * n**3 / best[k] / 1e9
        print(f"matmul f32 {n}x{n}: " + ", ".join(f"{k} {peak[k][n]:.1f} GFLOP/s" for k in fns))
    peak_gflops = max(v for d in peak.values() for v in d.values())
    print(f"peak (max of the above): {peak_gflops:.1f} GFLOP/s")
    return peak, peak_gflops


# --------------------------------------------------------------------------------------------
# (b) the zoo's JAX train step


def make_batch_np(batch: int, seq_len: int, vocab: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, size=(batch, seq_len + 1), dtype=np.int32)
    return {
        "inputs": tokens[:, :-1].copy(),
        "targets": tokens[:, 1:].copy(),
        "weights": np.ones((batch, seq_len), np.float32),
    }


OPT_CONFIG = types.SimpleNamespace(  # zoo.train.config.TRAIN_DEFAULTS / experiments gpt_tiny
    grad_clip_norm=1.0, adam_b1=0.9, adam_b2=0.95, adam_eps=1e-8, weight_decay=0.1,
    learning_rate=2e-3, warmup_steps=60, num_train_steps=600,
)


class JaxStep:
    """The zoo's jitted train step on gpt_tiny-shaped data; `run(n)` -> seconds per step."""

    def __init__(self, model_name: str, batch: int, seq_len: int, **model_overrides: Any):
        import jax
        import jax.numpy as jnp

        import zoo
        from zoo.tasks.causal_lm import CausalLM
        from zoo.train import step as step_lib
        from zoo.train.optimizer import create_optimizer
        from zoo.train.schedules import create_schedule

        self.jax = jax
        self.model = zoo.create_model(model_name, dropout_rate=0.0, max_len=max(seq_len, 1),
                                      **model_overrides)
        cfg = self.model.config
        schedule = create_schedule("cosine", learning_rate=OPT_CONFIG.learning_rate,
                                   warmup_steps=OPT_CONFIG.warmup_steps,
                                   total_steps=OPT_CONFIG.num_train_steps)
        tx = create_optimizer(OPT_CONFIG, schedule)
        init = jax.jit(lambda r: self.model.init(r, jnp.zeros((1, seq_len), jnp.int32)))
        params = init(jax.random.key(0))["params"]
        self.num_params = sum(x.size for x in jax.tree.leaves(params))
        self.state = step_lib.TrainState.create(apply_fn=self.model.apply, params=params, tx=tx)
        self.batch = jax.device_put(make_batch_np(batch, seq_len, cfg.vocab_size))
        self.rng = jax.random.key(1)
        self.step = step_lib.jit_train_step(CausalLM(), learning_rate_fn=schedule)

        t0 = time.perf_counter()
        lowered = self.step.lower(self.state, self.batch, self.rng)
        compiled = lowered.compile()
        self.compile_s = time.perf_counter() - t0
        self.xla_flops = None
        try:
            ca = compiled.cost_analysis()
            if isinstance(ca, (list, tuple)):
                ca = ca[0] if ca else None
            if ca and ca.get("flops", -1) > 0:
                self.xla_flops = float(ca["flops"])
        except Exception as e:  # noqa: BLE001  (backend without cost analysis)
            print(f"  (XLA cost_analysis unavailable: {e})")
        self.state, metrics = self.step(self.state, self.batch, self.rng)  # compile + warm up
        self.first_loss = float(metrics["loss"])

    def run(self, n: int) -> float:
        t0 = time.perf_counter()
        state, metrics = self.state, None
        for _ in range(n):
            state, metrics = self.step(state, self.batch, self.rng)
        self.jax.block_until_ready((state, metrics))
        self.state = state
        return (time.perf_counter() - t0) / max(n, 1)


# --------------------------------------------------------------------------------------------
# (c) the same model and step in PyTorch


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


class TorchStep:
    def __init__(self, cfg: Any, batch: int, seq_len: int, threads: int):
        import torch
        import torch.nn.functional as F

        torch.set_num_threads(threads)
        # XLA's CPU backend flushes denormals to zero; without the same setting torch slows
        # down by up to 10x once repeated steps on one batch shrink the gradients (measured).
        torch.set_flush_denormal(True)
        torch.manual_seed(0)
        self.torch, self.F = torch, F
        self.model = build_torch_gpt(cfg)
        self.num_params = sum(p.numel() for p in self.model.parameters())
        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.model.parameters() if p.ndim < 2]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": OPT_CONFIG.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=OPT_CONFIG.learning_rate * 0.5, betas=(OPT_CONFIG.adam_b1, OPT_CONFIG.adam_b2),
            eps=OPT_CONFIG.adam_eps,
        )
        b = make_batch_np(batch, seq_len, cfg.vocab_size)
        self.inputs = torch.from_numpy(b["inputs"]).long()
        self.targets = torch.from_numpy(b["targets"]).long()
        self.weights = torch.from_numpy(b["weights"])
        self.vocab = cfg.vocab_size
        self.first_loss = self._step()

    def _step(self) -> float:
        self.opt.zero_grad(set_to_none=True)
        logits = self.model(self.inputs)
        token_loss = self.F.cross_entropy(logits.view(-1, self.vocab), self.targets.view(-1),
                                          reduction="none")
        w = self.weights.view(-1)
        loss = (token_loss * w).sum() / w.sum().clamp_min(1e-9)
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), OPT_CONFIG.grad_clip_norm)
        self.opt.step()
        return float(loss.detach())

    def run(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            self._step()
        return (time.perf_counter() - t0) / max(n, 1)


# --------------------------------------------------------------------------------------------


def _fmt_load(x: float | None) -> str:
    return "?" if x is None else f"{x:.2f}"


def time_rounds(sides: dict[str, Any], repeats: int, steps: int, max_wait: float):
    """Alternating timed rounds (A B C A B C ...) of `side.run(steps)` -> (times, loads).

    times[k]: seconds per step of each round; loads[k]: cores other processes used meanwhile.
    """
    times: dict[str, list[float]] = {k: [] for k in sides}
    loads: dict[str, list[float | None]] = {k: [] for k in sides}
    for r in range(repeats):
        for k, s in sides.items():
            if max_wait > 0:
                wait_for_quiet(max_wait)
            with LoadMeter() as m:
                times[k].append(s.run(steps))
            loads[k].append(m.others)
        print(f"  round {r + 1}/{repeats}: " + ", ".join(
            f"{k} {times[k][-1] * 1e3:.1f} ms/step (others {_fmt_load(loads[k][-1])} cores)"
            for k in sides), flush=True)
    return times, loads


def add_timing_arguments(p: argparse.ArgumentParser, steps: int, warmup: int) -> None:
    """The options every side-by-side benchmark shares: rounds, matmul peak, torch, output."""
    p.add_argument("--steps", type=int, default=steps, help="train steps per timed round")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (A B A B ...)")
    p.add_argument("--warmup", type=int, default=warmup,
                   help="untimed steps per side before timing")
    p.add_argument("--matmul-sizes", type=int, nargs="*", default=[2048, 4096])
    p.add_argument("--matmul-repeats", type=int, default=5)
    p.add_argument("--max-wait", type=float, default=30.0,
                   help="seconds to wait for an idle CPU before each round (0: never wait)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: cores)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--json", default=None, help="write the numbers to this file")


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

    import jax

    cores = num_cores()
    threads = args.threads or cores
    try:
        if args.no_torch:
            raise ImportError("--no-torch")
        import torch
        torch.set_num_threads(threads)
        torch_version = torch.__version__
    except ImportError as e:
        torch = None
        torch_version = None
        print(f"PyTorch skipped ({e}): only the JAX side is measured.")

    info = {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_model(), "cores": cores, "python": platform.python_version(),
        "jax": jax.__version__, "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()], "torch": torch_version,
        "torch_threads": threads if torch else None,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
    }
    print(f"# {info['cpu']}, {cores} cores; jax {info['jax']} ({info['backend']}), "
          f"torch {torch_version} ({threads} threads); XLA_FLAGS={info['XLA_FLAGS']!r}")

    # (a) matmul peak, interleaved.
    peak, peak_gflops = measure_peak(args.matmul_sizes, args.matmul_repeats, args.max_wait,
                                     torch is not None)

    # (b), (c): train steps.
    jax_sides = {}
    for impl in args.jax_attention:
        name = "jax" if impl == "auto" else f"jax-{impl}"
        overrides = {} if impl == "auto" else {"attention_implementation": impl}
        jax_sides[name] = JaxStep(args.model, args.batch, args.seq_len, **overrides)
    jstep = next(iter(jax_sides.values()))
    cfg = jstep.model.config
    flops = step_flops(cfg.num_layers, cfg.emb_dim, cfg.mlp_dim, cfg.vocab_size,
                       args.batch, args.seq_len)
    xla = f"{jstep.xla_flops / 1e9:.2f} GFLOP" if jstep.xla_flops else "n/a"
    print(f"{args.model}: {jstep.num_params:,} params, B={args.batch} T={args.seq_len}; "
          f"FLOPs/step analytic {flops['per_step'] / 1e9:.2f} GFLOP, XLA cost_analysis {xla}; "
          f"JAX compile {jstep.compile_s:.1f}s")
    sides: dict[str, Any] = dict(jax_sides)
    if torch:
        sides["torch"] = TorchStep(cfg, args.batch, args.seq_len, threads)
    print("first-step loss: " + ", ".join(f"{k} {s.first_loss:.4f}" for k, s in sides.items()))
    for s in sides.values():
        s.run(args.warmup)
    times, loads = time_rounds(sides, args.repeats, args.steps, args.max_wait)

    tokens = args.batch * args.seq_len
    results = {}
    for k in sides:
        clean = [t for t, o in zip(times[k], loads[k]) if o is not None and o < CLEAN_LOAD]
        use_clean = 2 * len(clean) >= len(times[k]) and clean
        t = median(clean if use_clean else times[k])
        results[k] = {
            "clean_rounds": len(clean), "median_over": "clean rounds" if use_clean else "all rounds",
            "ms_per_step": t * 1e3, "ms_per_step_min": min(times[k]) * 1e3,
            "ms_per_step_max": max(times[k]) * 1e3, "tokens_per_s": tokens / t,
            "gflops": flops["per_step"] / t / 1e9,
            "pct_peak": 100 * flops["per_step"] / t / 1e9 / peak_gflops,
        }
    ref = results.get("torch")
    names = {k: f"JAX zoo jit_train_step, attention {k[4:] or 'auto'} (jax {jax.__version__})"
             for k in jax_sides}
    names["torch"] = f"PyTorch eager (torch {torch_version})"
    print()
    print("| implementation | ms/step (min-max) | tokens/s | GFLOP/s | % of peak | vs PyTorch |")
    print("|---|---|---|---|---|---|")
    for k, r in results.items():
        ratio = f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}x" if ref else "n/a"
        print(f"| {names[k]} | {r['ms_per_step']:.0f} ({r['ms_per_step_min']:.0f}-"
              f"{r['ms_per_step_max']:.0f}) | {r['tokens_per_s']:,.0f} | {r['gflops']:.1f} | "
              f"{r['pct_peak']:.0f}% | {ratio} |")
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
