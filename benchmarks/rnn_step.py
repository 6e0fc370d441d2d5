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
load metering of `benchmarks.gpt_step` applies (`benchmarks.harness`). The torch side's AdamW has
no weight decay. Speed is reported as tokens/s and as the ratio
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
import sys
from typing import Any

from benchmarks.harness import (TorchSide, ZooStep, lm_batch, lm_loss, machine_info, num_cores,
                                ratio_text, summarize, time_rounds, to_torch, torch_device,
                                write_json)

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


class TorchRNNStep(TorchSide):
    """An nn.LSTM / nn.GRU / nn.RNN language model's train step (`TorchSide`, no weight decay),
    on "cuda" when torch sees a GPU (cuDNN's RNNs), under bf16 autocast with
    `compute_dtype="bfloat16"`."""

    def __init__(self, cell: str, batch: dict[str, Any], vocab: int, emb: int, hidden: int,
                 layers: int, threads: int, compute_dtype: str = "float32"):
        from torch import nn

        class TorchRNNLM(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Embedding(vocab, emb)
                self.rnn = getattr(nn, TORCH_CLASSES[cell])(emb, hidden, num_layers=layers,
                                                            batch_first=True)
                self.out = nn.Linear(hidden, vocab)

            def forward(self, tokens):
                return self.out(self.rnn(self.embed(tokens))[0])

        device = torch_device()
        b = to_torch(batch, device)
        super().__init__(TorchRNNLM, lm_loss, lambda: (b["inputs"], b["targets"], b["weights"]),
                         device=device, dtype=compute_dtype, threads=threads, weight_decay=0.0)


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

    threads = num_cores()
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    if torch_version is None or args.no_torch:
        args.sides = [s for s in args.sides if s != "torch"]
    gpu = jax.default_backend() == "gpu"
    info = {**machine_info(torch_version), "device": jax.devices()[0].device_kind,
            "compute_dtype": args.compute_dtype}
    print(f"# {info['cpu']}, {threads} cores; jax {info['jax']} ({info['backend']}), "
          f"torch {torch_version}; B={args.batch} T={args.seq_len} emb={args.emb} "
          f"hidden={args.hidden} layers={args.layers} vocab={args.vocab}")
    if gpu or args.compute_dtype != "float32":
        print(f"# device {info['device']}; compute dtype {args.compute_dtype}")
    batch = lm_batch(args.batch, args.seq_len, args.vocab)
    results: dict[str, Any] = {}
    for cell in args.cells:
        sides: dict[str, Any] = {}
        for side in cell_sides(cell, args.sides, gpu, args.compute_dtype):
            if side in ("zoo", "zoo-cudnn"):
                overrides = {} if args.unroll is None else {"unroll": args.unroll}
                if side == "zoo-cudnn":
                    overrides["rnn_implementation"] = "cudnn"
                sides[side] = ZooStep(ZOO_MODELS[cell], batch, vocab_size=args.vocab,
                                      emb_dim=args.emb, hidden_size=args.hidden,
                                      num_layers=args.layers, compute_dtype=args.compute_dtype,
                                      **overrides)
            elif side == "flax":
                sides[side] = ZooStep(flax_rnn_lm(cell, args.vocab, args.emb, args.hidden,
                                                  args.layers, args.compute_dtype), batch)
            else:
                sides[side] = TorchRNNStep(cell, batch, args.vocab, args.emb, args.hidden,
                                           args.layers, threads, args.compute_dtype)
        print(f"{cell}: params " + ", ".join(f"{k} {s.num_params:,}" for k, s in sides.items())
              + "; first loss " + ", ".join(f"{k} {s.first_loss:.4f}" for k, s in sides.items()))
        for s in sides.values():
            s.run(1)
        times, loads = time_rounds(sides, args.repeats, args.steps, args.max_wait)
        results[cell] = summarize(times, loads, args.batch * args.seq_len)
        for k, r in results[cell].items():
            r["times_s"] = times[k]

    print("\n| cell | side | ms/step | tokens/s | vs PyTorch |\n|---|---|---|---|---|")
    for cell, cell_res in results.items():
        for k, r in cell_res.items():
            print(f"| {cell} | {k} | {r['ms_per_step']:.0f} | {r['tokens_per_s']:,.0f} | "
                  f"{ratio_text(r['vs_torch'])} |")
    out = {"info": info, "args": vars(args), "results": results}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
