"""Recurrent LM training-step throughput: the zoo's scanned layers vs PyTorch vs Flax nn.RNN.

    python -m benchmarks.rnn_step [--cells lstm gru rnn_tanh] [--batch 32 --seq-len 128]
                                  [--hidden 512 --emb 512 --layers 2] [--json PATH]
                                  [--compute-dtype bfloat16] [--no-torch]

For each cell, three sides with the same shapes (2 layers, emb and hidden 512, vocab 256,
dropout 0 by default) train through a full step (forward, backward, clipping, AdamW):
  zoo    `zoo.create_model("<cell>_lm")` through the zoo's `jit_train_step(CausalLM())`;
  flax   Flax's own `nn.RNN(nn.OptimizedLSTMCell / nn.GRUCell / nn.SimpleCell)` layers in the
         same LM, through the same zoo step;
  torch  `nn.Embedding` + `nn.LSTM / nn.GRU / nn.RNN(batch_first=True)` + `nn.Linear`, eager.
Rounds alternate between the sides (A B C A B C ...), medians are reported, and the waiting /
load metering of `benchmarks.gpt_step` applies. Speed is reported as tokens/s and as the ratio
to PyTorch.

On a GPU (JAX's default backend), the LSTM gets a fourth side, `zoo-cudnn`: the same zoo model
with `rnn_implementation="cudnn"` (`zoo.nn.cudnn_lstm`; float32 only), and the torch side runs
on "cuda" (cuDNN's RNNs, fused AdamW, TF32 allowed as JAX's default precision allows it; the
clock is read after `torch.cuda.synchronize()`). `--compute-dtype bfloat16` runs the zoo and
flax sides with bf16 compute over float32 parameters and the torch side under
`torch.autocast(dtype=torch.bfloat16)`.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import time
from typing import Any

from benchmarks.gpt_step import (CLEAN_LOAD, OPT_CONFIG, JaxStep, TorchStep, cpu_model,
                                 make_batch_np, median, num_cores, time_rounds, write_json)

TORCH_CLASSES = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN"}
ZOO_MODELS = {"lstm": "lstm_lm", "gru": "gru_lm", "rnn_tanh": "rnn_lm"}


def flax_rnn_lm(cell: str, vocab: int, emb: int, hidden: int, layers: int,
                compute_dtype: str = "float32"):
    """The same LM from Flax's own recurrent cells (`nn.RNN` over each cell); with
    `output_head=True` it returns the output layer as the zoo's LMs do (`zoo.nn.vocab_head`)."""
    import flax.linen as nn
    import jax.numpy as jnp

    from zoo.models.rnn_lm import OutputProjection

    cell_cls = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell, "rnn_tanh": nn.SimpleCell}[cell]
    dtype = jnp.dtype(compute_dtype)

    class FlaxRNNLM(nn.Module):
        @nn.compact
        def __call__(self, tokens, *, train: bool = False, output_head: bool = False):
            x = nn.Embed(vocab, emb, dtype=dtype)(tokens)  # (B, T, E)
            for _ in range(layers):
                x = nn.RNN(cell_cls(hidden, dtype=dtype))(x)  # (B, T, H)
            head = OutputProjection(vocab, dtype)(x)
            return head if output_head else head.logits()  # (B, T, V) float32

    return FlaxRNNLM()


class JaxSide(JaxStep):
    """`JaxStep` (timing) around any LM module instead of a registry name."""

    def __init__(self, model, batch: int, seq_len: int, vocab: int):
        import jax
        import jax.numpy as jnp

        from zoo.tasks.causal_lm import CausalLM
        from zoo.train import step as step_lib
        from zoo.train.optimizer import create_optimizer
        from zoo.train.schedules import create_schedule

        self.jax = jax
        schedule = create_schedule("cosine", learning_rate=OPT_CONFIG.learning_rate,
                                   warmup_steps=OPT_CONFIG.warmup_steps,
                                   total_steps=OPT_CONFIG.num_train_steps)
        params = jax.jit(lambda r: model.init(r, jnp.zeros((1, seq_len), jnp.int32)))(
            jax.random.key(0))["params"]
        self.num_params = sum(x.size for x in jax.tree.leaves(params))
        self.state = step_lib.TrainState.create(apply_fn=model.apply, params=params,
                                                tx=create_optimizer(OPT_CONFIG, schedule))
        self.batch = jax.device_put(make_batch_np(batch, seq_len, vocab))
        self.rng = jax.random.key(1)
        self.step = step_lib.jit_train_step(CausalLM(), learning_rate_fn=schedule)
        t0 = time.perf_counter()
        self.state, metrics = self.step(self.state, self.batch, self.rng)
        self.first_loss = float(metrics["loss"])
        self.compile_s = time.perf_counter() - t0


class TorchSide(TorchStep):
    """`TorchStep` (step and timing) around an nn.LSTM / nn.GRU / nn.RNN language model, on
    "cuda" when torch sees a GPU, under bf16 autocast with `compute_dtype="bfloat16"`."""

    def __init__(self, cell: str, batch: int, seq_len: int, vocab: int, emb: int, hidden: int,
                 layers: int, threads: int, compute_dtype: str = "float32"):
        import torch
        import torch.nn.functional as F
        from torch import nn

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda":
            torch.backends.cudnn.enabled = True  # nn.LSTM / GRU / RNN run cuDNN's kernels
            # JAX's default precision lets float32 matmuls (and its cuDNN LSTM) use TF32.
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        else:
            torch.set_num_threads(threads)
        # XLA's CPU backend flushes denormals to zero; without the same setting torch slows
        # down by up to 10x once repeated steps on one batch shrink the gradients (measured).
        torch.set_flush_denormal(True)
        torch.manual_seed(0)
        self.autocast = torch.autocast(self.device, dtype=torch.bfloat16,
                                       enabled=compute_dtype == "bfloat16")
        rnn_cls = getattr(nn, TORCH_CLASSES[cell])

        class TorchRNNLM(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Embedding(vocab, emb)
                self.rnn = rnn_cls(emb, hidden, num_layers=layers, batch_first=True)
                self.out = nn.Linear(hidden, vocab)

            def forward(self, tokens):
                return self.out(self.rnn(self.embed(tokens))[0])

        self.torch, self.F, self.vocab = torch, F, vocab
        self.model = TorchRNNLM().to(self.device)
        self.num_params = sum(p.numel() for p in self.model.parameters())
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=OPT_CONFIG.learning_rate * 0.5,
                                     betas=(OPT_CONFIG.adam_b1, OPT_CONFIG.adam_b2),
                                     eps=OPT_CONFIG.adam_eps, weight_decay=0.0,
                                     fused=True if self.device == "cuda" else None)
        b = make_batch_np(batch, seq_len, vocab)
        self.inputs = torch.from_numpy(b["inputs"]).long().to(self.device)
        self.targets = torch.from_numpy(b["targets"]).long().to(self.device)
        self.weights = torch.from_numpy(b["weights"]).to(self.device)
        self.first_loss = float(self._step())  # float() waits for the device

    def _step(self):
        """One step (the forward under autocast when asked) -> the loss, still on the device."""
        self.opt.zero_grad(set_to_none=True)
        with self.autocast:
            logits = self.model(self.inputs)  # (B, T, V)
        token_loss = self.F.cross_entropy(logits.float().view(-1, self.vocab),
                                          self.targets.view(-1), reduction="none")
        w = self.weights.view(-1)
        loss = (token_loss * w).sum() / w.sum().clamp_min(1e-9)
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), OPT_CONFIG.grad_clip_norm)
        self.opt.step()
        return loss.detach()

    def run(self, n: int) -> float:
        """Seconds per step of `n` steps, the device synchronized before reading the clock."""
        from benchmarks.torch_gpu import time_steps

        return time_steps(self.torch, self.device, self._step, n)


def cell_sides(cell: str, sides: list[str], gpu: bool, compute_dtype: str) -> list[str]:
    """The sides run for `cell`: the requested ones, plus "zoo-cudnn" after "zoo" for the LSTM
    on a GPU in float32 (the cuDNN path has no bf16)."""
    out = []
    for side in sides:
        out.append(side)
        if side == "zoo" and cell == "lstm" and gpu:
            if compute_dtype == "float32":
                out.append("zoo-cudnn")
            else:
                print("# zoo-cudnn left out: the cuDNN LSTM runs float32 only")
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", nargs="+", default=["lstm", "gru", "rnn_tanh"],
                   choices=list(ZOO_MODELS))
    p.add_argument("--sides", nargs="+", default=["zoo", "flax", "torch"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--emb", type=int, default=512)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--unroll", type=int, default=None, help="zoo scan unroll (default: preset)")
    p.add_argument("--steps", type=int, default=5, help="train steps per timed round")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-wait", type=float, default=10.0)
    p.add_argument("--compute-dtype", default="float32", choices=["float32", "bfloat16"],
                   help="zoo / flax compute dtype; bfloat16 runs torch under bf16 autocast")
    p.add_argument("--no-torch", action="store_true", help="leave out the torch side")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import jax

    import zoo

    threads = num_cores()
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    if torch_version is None or args.no_torch:
        args.sides = [s for s in args.sides if s != "torch"]
    gpu = jax.default_backend() == "gpu"
    info = {"date": datetime.date.today().isoformat(), "cpu": cpu_model(), "cores": threads,
            "python": platform.python_version(), "jax": jax.__version__,
            "backend": jax.default_backend(), "torch": torch_version,
            "device": jax.devices()[0].device_kind, "compute_dtype": args.compute_dtype}
    print(f"# {info['cpu']}, {threads} cores; jax {info['jax']} ({info['backend']}), "
          f"torch {torch_version}; B={args.batch} T={args.seq_len} emb={args.emb} "
          f"hidden={args.hidden} layers={args.layers} vocab={args.vocab}")
    if gpu or args.compute_dtype != "float32":
        print(f"# device {info['device']}; compute dtype {args.compute_dtype}")
    tokens = args.batch * args.seq_len
    results: dict[str, Any] = {}
    for cell in args.cells:
        sides: dict[str, Any] = {}
        for side in cell_sides(cell, args.sides, gpu, args.compute_dtype):
            if side in ("zoo", "zoo-cudnn"):
                overrides = {} if args.unroll is None else {"unroll": args.unroll}
                if side == "zoo-cudnn":
                    overrides["rnn_implementation"] = "cudnn"
                model = zoo.create_model(ZOO_MODELS[cell], vocab_size=args.vocab,
                                         emb_dim=args.emb, hidden_size=args.hidden,
                                         num_layers=args.layers, dropout_rate=0.0,
                                         compute_dtype=args.compute_dtype, **overrides)
                sides[side] = JaxSide(model, args.batch, args.seq_len, args.vocab)
            elif side == "flax":
                model = flax_rnn_lm(cell, args.vocab, args.emb, args.hidden, args.layers,
                                    args.compute_dtype)
                sides[side] = JaxSide(model, args.batch, args.seq_len, args.vocab)
            else:
                sides[side] = TorchSide(cell, args.batch, args.seq_len, args.vocab, args.emb,
                                        args.hidden, args.layers, threads, args.compute_dtype)
        print(f"{cell}: params " + ", ".join(f"{k} {s.num_params:,}" for k, s in sides.items())
              + "; first loss " + ", ".join(f"{k} {s.first_loss:.4f}" for k, s in sides.items()))
        for s in sides.values():
            s.run(1)
        times, loads = time_rounds(sides, args.repeats, args.steps, args.max_wait)
        cell_res = {}
        for k in sides:
            clean = [t for t, o in zip(times[k], loads[k]) if o is not None and o < CLEAN_LOAD]
            t = median(clean if clean and 2 * len(clean) >= len(times[k]) else times[k])
            cell_res[k] = {"ms_per_step": t * 1e3, "tokens_per_s": tokens / t,
                           "clean_rounds": len(clean), "times_s": times[k]}
        ref = cell_res.get("torch")
        for k, r in cell_res.items():
            r["vs_torch"] = r["tokens_per_s"] / ref["tokens_per_s"] if ref else None
        results[cell] = cell_res

    print("\n| cell | side | ms/step | tokens/s | vs PyTorch |\n|---|---|---|---|---|")
    for cell, cell_res in results.items():
        for k, r in cell_res.items():
            ratio = f"{r['vs_torch']:.2f}x" if r["vs_torch"] else "n/a"
            print(f"| {cell} | {k} | {r['ms_per_step']:.0f} | {r['tokens_per_s']:,.0f} | {ratio} |")
    out = {"info": info, "args": vars(args), "results": results}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
