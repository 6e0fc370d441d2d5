"""Recurrent LM training-step throughput: the zoo's scanned layers vs PyTorch vs Flax nn.RNN.

    python -m benchmarks.rnn_step [--cells lstm gru rnn_tanh] [--batch 32 --seq-len 128]
                                  [--hidden 512 --emb 512 --layers 2] [--json PATH]
                                  [--compute-dtype bfloat16] [--no-torch]

Per cell, three sides with the same shapes train through a full step: `zoo`
(`zoo.create_model("<cell>_lm")`), `flax` (Flax's own `nn.RNN` cells in the same LM; both through
the zoo's `jit_train_step`) and `torch` (`nn.LSTM / nn.GRU / nn.RNN`, eager, AdamW without weight
decay), in alternating rounds (`benchmarks.harness`). On a GPU the LSTM gets a fourth side,
`zoo-cudnn` (`rnn_implementation="cudnn"`, float32 only), and torch runs on "cuda".
`--compute-dtype bfloat16`: bf16 compute for zoo and flax, bf16 autocast for torch.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from benchmarks.harness import (TorchSide, ZooStep, add_options, lm_batch, lm_loss, machine_info,
                                num_cores, print_table, ratio_text, summarize, time_rounds,
                                to_torch, torch_device, torch_version, write_json)

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
    on "cuda" when torch sees a GPU, under bf16 autocast with `compute_dtype="bfloat16"`."""

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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", nargs="+", default=["lstm", "gru", "rnn_tanh"],
                   choices=list(ZOO_MODELS))
    p.add_argument("--sides", nargs="+", default=["zoo", "flax", "torch"])
    add_options(p, batch=32, seq_len=128, emb=512, hidden=512, layers=2, vocab=256, steps=5,
                repeats=3, max_wait=10.0)
    p.add_argument("--unroll", type=int, default=None, help="zoo scan unroll (default: preset)")
    p.add_argument("--compute-dtype", default="float32", choices=["float32", "bfloat16"],
                   help="zoo / flax compute dtype; bfloat16 runs torch under bf16 autocast")
    p.add_argument("--no-torch", action="store_true", help="leave out the torch side")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    version = torch_version(skip=args.no_torch)
    if version is None:
        args.sides = [s for s in args.sides if s != "torch"]
    info = {**machine_info(version), "compute_dtype": args.compute_dtype}
    print(f"# {info['cpu']}, {info['cores']} cores; jax {info['jax']} ({info['backend']}, "
          f"{info['device']}), torch {version}; {args.compute_dtype}, B={args.batch} "
          f"T={args.seq_len} emb={args.emb} hidden={args.hidden} layers={args.layers} "
          f"vocab={args.vocab}")
    batch = lm_batch(args.batch, args.seq_len, args.vocab)
    shapes = dict(vocab_size=args.vocab, emb_dim=args.emb, hidden_size=args.hidden,
                  num_layers=args.layers, compute_dtype=args.compute_dtype)
    # On a GPU the LSTM gets a fourth side, the zoo's cuDNN path, after "zoo".
    cudnn = info["backend"] == "gpu" and "zoo" in args.sides and "lstm" in args.cells
    if cudnn and args.compute_dtype != "float32":
        print("# zoo-cudnn left out: the cuDNN LSTM runs float32 only")
    results: dict[str, Any] = {}
    for cell in args.cells:
        names = list(args.sides)
        if cudnn and cell == "lstm" and args.compute_dtype == "float32":
            names.insert(names.index("zoo") + 1, "zoo-cudnn")
        sides: dict[str, Any] = {}
        for side in names:
            if side in ("zoo", "zoo-cudnn"):
                overrides = {} if args.unroll is None else {"unroll": args.unroll}
                if side == "zoo-cudnn":
                    overrides["rnn_implementation"] = "cudnn"
                sides[side] = ZooStep(ZOO_MODELS[cell], batch, **shapes, **overrides)
            elif side == "flax":
                sides[side] = ZooStep(flax_rnn_lm(cell, args.vocab, args.emb, args.hidden,
                                                  args.layers, args.compute_dtype), batch)
            else:
                sides[side] = TorchRNNStep(cell, batch, args.vocab, args.emb, args.hidden,
                                           args.layers, num_cores(), args.compute_dtype)
        print(f"{cell}: params " + ", ".join(f"{k} {s.num_params:,}" for k, s in sides.items())
              + "; first loss " + ", ".join(f"{k} {s.first_loss:.4f}" for k, s in sides.items()))
        for s in sides.values():
            s.run(1)
        times, loads = time_rounds(sides, args.repeats, args.steps, args.max_wait)
        results[cell] = summarize(times, loads, args.batch * args.seq_len)
        for k, r in results[cell].items():
            r["times_s"] = times[k]

    print_table(["cell", "side", "ms/step", "tokens/s", "vs PyTorch"], [
        [cell, k, f"{r['ms_per_step']:.0f}", f"{r['tokens_per_s']:,.0f}", ratio_text(r["vs_torch"])]
        for cell, cell_results in results.items() for k, r in cell_results.items()])
    out = {"info": info, "args": vars(args), "results": results}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
