"""Encoder-decoder transformer and BERT training steps: the zoo's jitted JAX step vs PyTorch.

    python -m benchmarks.transformer_step [--workload transformer bert | all]
                                          [--steps 10 --repeats 5] [--json PATH]

transformer: the zoo's post-LN `Transformer` vs `nn.Transformer` without its final LayerNorms.
bert: `Bert(head="mlm")`, the head at the 15% of positions the task chooses, vs
`nn.TransformerEncoder` with the same head and masking drawn by torch every step
(`--mlm-head-everywhere`: torch's head at every position, Hugging Face's way). Sequences have
random lengths in [`--min-len-frac` * length, length], then padding (counted in tokens/s).
After `--repeats` rounds more run (up to `--max-rounds`) while a side has under half of its
rounds clean. Both sides hold the same parameters and compute the same loss
(tests/test_benchmarks.py). FLOPs count matmuls only, attention over the full length.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import sys
from typing import Any

import numpy as np

from benchmarks.harness import (CLEAN_LOAD, TorchSide, ZooStep, add_options, add_timing_arguments,
                                cross_entropy, print_table, race, start, summarize, table_cells,
                                to_torch, write_json)
from zoo.special_tokens import BOS_ID, EOS_ID, NUM_SPECIAL, PAD_ID

WORKLOADS = ("transformer", "bert")


def transformer_flops(enc_layers: int, dec_layers: int, emb_dim: int, mlp_dim: int,
                      vocab_size: int, batch: int, src_len: int, tgt_len: int
                      ) -> dict[str, float]:
    Le, Ld, D, F, V, S, T = enc_layers, dec_layers, emb_dim, mlp_dim, vocab_size, src_len, tgt_len
    # encoder qkv, out, fc, proj; its self-attention; the decoders' cross-attention k, v
    per_source = 6 * Le * (4 * D * D + 2 * D * F) + 12 * Le * S * D + 6 * Ld * 2 * D * D
    # self qkv, out; cross q, out; FFN; self- and cross-attention; logits via the embedding
    per_target = (6 * Ld * (3 * D * D + D * D + 2 * D * D + 2 * D * F)
                  + 12 * Ld * T * D + 12 * Ld * S * D + 6 * D * V)
    return {"per_source_position": per_source, "per_target_position": per_target,
            "per_step": batch * (S * per_source + T * per_target)}


def bert_flops(num_layers: int, emb_dim: int, mlp_dim: int, vocab_size: int, batch: int,
               seq_len: int, head_positions: int) -> dict[str, float]:
    """Encoder FLOPs at every position; the MLM head's (dense, tied decoder) at
    `head_positions` per row."""
    L, D, F, V, T = num_layers, emb_dim, mlp_dim, vocab_size, seq_len
    per_position = 6 * L * (4 * D * D + 2 * D * F) + 12 * L * T * D
    per_prediction = 6 * D * D + 6 * D * V
    return {"per_position": per_position, "per_prediction": per_prediction,
            "per_step": batch * (T * per_position + head_positions * per_prediction)}


def padded_tokens(rng: np.random.Generator, batch: int, length: int, vocab: int,
                  min_frac: float, eos: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Random tokens in [NUM_SPECIAL, vocab) of random lengths, then PAD -> (tokens, weights)."""
    lengths = rng.integers(max(1, math.ceil(min_frac * length)), length + 1, size=batch)
    weights = (np.arange(length)[None, :] < lengths[:, None]).astype(np.float32)
    tokens = rng.integers(NUM_SPECIAL, vocab, size=(batch, length), dtype=np.int32)
    if eos:
        tokens[np.arange(batch), lengths - 1] = EOS_ID
    return np.where(weights > 0, tokens, PAD_ID).astype(np.int32), weights


def seq2seq_batch(batch: int, src_len: int, tgt_len: int, vocab: int, min_frac: float,
                  seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs, _ = padded_tokens(rng, batch, src_len, vocab, min_frac)
    targets, weights = padded_tokens(rng, batch, tgt_len, vocab, min_frac, eos=True)
    return {"inputs": inputs, "targets": targets, "weights": weights}


def mlm_batch(batch: int, seq_len: int, vocab: int, min_frac: float,
              seed: int = 0) -> dict[str, np.ndarray]:
    inputs, weights = padded_tokens(np.random.default_rng(seed), batch, seq_len, vocab, min_frac)
    return {"inputs": inputs, "targets": inputs.copy(), "weights": weights}


def bert_zoo_step(model: str, batch: int, seq_len: int, min_len_frac: float,
                  **overrides: Any) -> tuple[ZooStep, dict[str, float]]:
    """(the zoo's masked-LM step of registry model `model` on an `mlm_batch`, its FLOPs)."""
    step = ZooStep(model, lambda cfg: mlm_batch(batch, seq_len, cfg.vocab_size, min_len_frac),
                   "masked_lm", **overrides)
    cfg = step.model.config
    return step, bert_flops(cfg.num_layers, cfg.emb_dim, cfg.mlp_dim, cfg.vocab_size, batch,
                            seq_len, max(1, round(seq_len * step.task.mask_rate)))


# --- the PyTorch side


def build_torch_seq2seq(cfg: Any):
    import torch
    import torch.nn.functional as F
    from torch import nn

    from zoo.nn.transformer import sinusoidal_positions

    D, table = cfg.emb_dim, torch.from_numpy(sinusoidal_positions(cfg.max_len, cfg.emb_dim))

    class Seq2SeqTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(cfg.vocab_size, D)
            nn.init.normal_(self.embed.weight, std=D**-0.5)
            self.transformer = nn.Transformer(
                D, cfg.num_heads, cfg.num_encoder_layers, cfg.num_decoder_layers, cfg.mlp_dim,
                dropout=0.0, activation="relu", batch_first=True, norm_first=False)
            # nn.Transformer ends both stacks with a LayerNorm; the post-LN zoo model does not.
            self.transformer.encoder.norm = self.transformer.decoder.norm = None
            self.register_buffer("positions", table, persistent=False)

        def forward(self, inputs, decoder_inputs):
            S, T = inputs.shape[1], decoder_inputs.shape[1]
            source_pad = inputs == PAD_ID  # True = ignore
            x = self.embed(inputs) * math.sqrt(D) + self.positions[:S]
            y = self.embed(decoder_inputs) * math.sqrt(D) + self.positions[:T]
            memory = self.transformer.encoder(x, src_key_padding_mask=source_pad)
            causal = nn.Transformer.generate_square_subsequent_mask(T, dtype=x.dtype)
            y = self.transformer.decoder(y, memory, tgt_mask=causal, tgt_is_causal=True,
                                         memory_key_padding_mask=source_pad)
            return F.linear(y, self.embed.weight)  # (B, T, V) via the shared embedding

    return Seq2SeqTransformer()


def build_torch_bert(cfg: Any):
    import torch
    import torch.nn.functional as F
    from torch import nn

    D = cfg.emb_dim

    class BertMLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.word = nn.Embedding(cfg.vocab_size, D)
            self.position = nn.Parameter(torch.empty(cfg.max_len, D))
            self.segment = nn.Embedding(cfg.type_vocab_size, D)
            self.ln_embeddings = nn.LayerNorm(D, eps=cfg.ln_epsilon)
            layer = nn.TransformerEncoderLayer(
                D, cfg.num_heads, cfg.mlp_dim, dropout=0.0, activation="gelu",
                layer_norm_eps=cfg.ln_epsilon, batch_first=True, norm_first=False)
            self.encoder = nn.TransformerEncoder(layer, cfg.num_layers,
                                                 enable_nested_tensor=False)
            self.pooler = nn.Linear(D, D)  # the zoo model's pooler: unused by the MLM loss
            self.mlm_dense = nn.Linear(D, D)
            self.mlm_ln = nn.LayerNorm(D, eps=cfg.ln_epsilon)
            self.mlm_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
            for name, p in self.named_parameters():  # BERT's init, as the zoo's
                if p.ndim >= 2:
                    nn.init.normal_(p, std=0.02)
                elif not name.endswith("weight"):  # biases; LayerNorm weights stay 1
                    nn.init.zeros_(p)

        def forward(self, tokens, valid, positions=None):
            T = tokens.shape[1]
            x = self.word(tokens) + self.position[:T] + self.segment(torch.zeros_like(tokens))
            x = self.encoder(self.ln_embeddings(x), src_key_padding_mask=~valid)
            if positions is not None:  # (B, P): the head runs at those positions only
                x = torch.gather(x, 1, positions[..., None].expand(-1, -1, D))
            h = self.mlm_ln(F.gelu(self.mlm_dense(x)))
            return F.linear(h, self.word.weight, self.mlm_bias)  # (B, P or T, V), tied decoder

    return BertMLM()


def seq2seq_loss(model, inputs, targets, weights, label_smoothing: float = 0.0):
    """Teacher forcing (the decoder reads BOS + targets[:, :-1]), label-smoothed weighted CE."""
    import torch

    bos = torch.full_like(targets[:, :1], BOS_ID)
    logits = model(inputs, torch.cat([bos, targets[:, :-1]], dim=1))
    return cross_entropy(logits, targets, weights, label_smoothing)


def mlm_loss(model, corrupted, valid, positions, targets, weights, head_everywhere=False):
    """Weighted CE at the chosen positions; `head_everywhere`: the head at every position, then
    the chosen ones (Hugging Face's way)."""
    if not head_everywhere:
        return cross_entropy(model(corrupted, valid, positions), targets, weights)
    logits = model(corrupted, valid)
    logits = logits.gather(1, positions[..., None].expand(-1, -1, logits.shape[-1]))
    return cross_entropy(logits, targets, weights)


class TorchSeq2SeqStep(TorchSide):
    """`build_torch_seq2seq(cfg)`'s train step (`TorchSide`) on `batch` (`seq2seq_batch`)."""

    def __init__(self, cfg: Any, batch: dict[str, np.ndarray], label_smoothing: float,
                 **kwargs: Any):
        b = to_torch(batch)
        super().__init__(lambda: build_torch_seq2seq(cfg),
                         functools.partial(seq2seq_loss, label_smoothing=label_smoothing),
                         lambda: (b["inputs"], b["targets"], b["weights"]), **kwargs)


class TorchBertStep(TorchSide):
    """`build_torch_bert(cfg)`'s MLM train step (`TorchSide`) on `batch` (`mlm_batch`), new
    masks drawn every step with torch's RNG on the device, as the zoo's task draws them."""

    def __init__(self, cfg: Any, batch: dict[str, np.ndarray], mask_rate: float,
                 head_everywhere: bool = False, **kwargs: Any):
        import torch

        self.cfg, self.vocab_size, self.mask_rate = cfg, cfg.vocab_size, mask_rate
        b = to_torch(batch, kwargs.get("device", "cpu"))
        self.tokens, self.valid = b["inputs"], b["weights"] > 0  # (B, T) each
        self.gen = torch.Generator(kwargs.get("device", "cpu")).manual_seed(1)
        super().__init__(lambda: build_torch_bert(cfg),
                         functools.partial(mlm_loss, head_everywhere=head_everywhere),
                         self.masked_batch, **kwargs)

    def masked_batch(self):
        """`zoo.tasks.masked_lm.mask_tokens` in torch -> (corrupted (B, T), valid (B, T),
        positions (B, P), targets (B, P), weights (B, P)), P = round(mask_rate * T)."""
        t, tokens, valid, device = self.torch, self.tokens, self.valid, self.device
        budget = max(1, round(tokens.shape[1] * self.mask_rate))  # P
        lengths = valid.sum(1)
        count = t.where(lengths > 0, t.round(lengths * self.mask_rate).clamp_min(1), 0)
        scores = t.where(valid, t.rand(tokens.shape, generator=self.gen, device=device),
                         2.0)  # padding sorts last
        positions = t.topk(-scores, budget, dim=1).indices  # the P lowest scores
        weights = (t.arange(budget, device=device)[None, :] < count[:, None]).float()
        original = t.gather(tokens, 1, positions)
        kind = t.rand(positions.shape, generator=self.gen, device=device)
        random_tokens = t.randint(0, self.vocab_size, positions.shape, generator=self.gen,
                                  device=device)
        new = t.where(kind < 0.8, self.cfg.mask_token_id,
                      t.where(kind < 0.9, random_tokens, original))
        new = t.where(weights > 0, new, original)
        return tokens.scatter(1, positions, new), valid, positions, original, weights


# --- the workloads: (zoo side, torch side or None, FLOPs, shapes)


def setup_transformer(args, torch_kwargs: dict[str, Any] | None):
    S, T, B = args.tf_src_len, args.tf_tgt_len, args.tf_batch
    batch = seq2seq_batch(B, S, T, args.tf_vocab, args.min_len_frac)
    zoo_side = ZooStep(
        "transformer_tiny", batch, "seq2seq", vocab_size=args.tf_vocab, emb_dim=args.tf_emb_dim,
        num_heads=args.tf_heads, num_encoder_layers=args.tf_enc_layers,
        num_decoder_layers=args.tf_dec_layers, mlp_dim=args.tf_mlp_dim, max_len=max(S, T),
        label_smoothing=args.tf_label_smoothing)
    cfg = zoo_side.model.config
    flops = transformer_flops(cfg.num_encoder_layers, cfg.num_decoder_layers, cfg.emb_dim,
                              cfg.mlp_dim, cfg.vocab_size, B, S, T)
    torch_side = None if torch_kwargs is None else TorchSeq2SeqStep(
        cfg, batch, zoo_side.task.label_smoothing, **torch_kwargs)
    return zoo_side, torch_side, flops, {"B": B, "S": S, "T": T}


def setup_bert(args, torch_kwargs: dict[str, Any] | None):
    B, T = args.bert_batch, args.bert_seq_len
    zoo_side, flops = bert_zoo_step(
        "bert_tiny", B, T, args.min_len_frac, vocab_size=args.bert_vocab,
        emb_dim=args.bert_emb_dim, num_heads=args.bert_heads, num_layers=args.bert_layers,
        mlp_dim=args.bert_mlp_dim, max_len=T, mask_token_id=args.bert_mask_token)
    torch_side = None if torch_kwargs is None else TorchBertStep(
        zoo_side.model.config, zoo_side.host_batch, zoo_side.task.mask_rate,
        args.mlm_head_everywhere, **torch_kwargs)
    return zoo_side, torch_side, flops, {"B": B, "T": T}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", nargs="+", default=["all"], choices=[*WORKLOADS, "all"])
    for title, prefix, shape in (
            ("transformer workload (zoo transformer_tiny, reshaped)", "tf", dict(
                emb_dim=256, heads=4, enc_layers=3, dec_layers=3, mlp_dim=1024, vocab=64,
                batch=32, src_len=64, tgt_len=64, label_smoothing=0.1)),
            ("bert workload (zoo bert_tiny, reshaped; head mlm)", "bert", dict(
                emb_dim=256, heads=4, layers=4, mlp_dim=1024, vocab=8192, mask_token=103,
                batch=32, seq_len=128))):
        add_options(p.add_argument_group(title), **{f"{prefix}_{k}": v for k, v in shape.items()})
    p.add_argument("--mlm-head-everywhere", action="store_true",
                   help="torch's MLM head at every position (Hugging Face's way)")
    p.add_argument("--torch-fused-adamw", action="store_true",
                   help="torch's AdamW(fused=True), its fastest CPU update, instead of the default")
    add_options(p, min_len_frac=0.75, max_rounds=8)
    add_timing_arguments(p, steps=10, warmup=2)
    args = p.parse_args(argv)
    info, threads, use_torch, peak, peak_gflops = start(args, "benchmarks.transformer_step", argv)
    torch_kwargs = {"threads": threads, "fused": args.torch_fused_adamw} if use_torch else None
    out: dict[str, Any] = {"info": info, "args": vars(args), "matmul_gflops": peak,
                           "peak_gflops": peak_gflops, "workloads": {}}
    names = {"jax": f"JAX zoo jit_train_step (jax {info['jax']})",
             "torch": f"PyTorch eager (torch {info['torch']})"}
    rows = []
    for name in (w for w in WORKLOADS if w in args.workload or "all" in args.workload):
        setup = setup_transformer if name == "transformer" else setup_bert
        zoo_side, torch_side, flops, shapes = setup(args, torch_kwargs)
        sides = {"jax": zoo_side, **({"torch": torch_side} if torch_side else {})}
        cfg, task = zoo_side.model.config, zoo_side.task
        print(f"\n## {name}: {shapes}, {cfg}")
        print("params: " + ", ".join(f"{k} {s.num_params:,}" for k, s in sides.items()))
        print(zoo_side.flops_text(flops["per_step"]))
        tokens = shapes["B"] * (shapes.get("S", 0) + shapes["T"])
        times, loads = race(sides, args, max(args.repeats, args.max_rounds))
        results = summarize(times, loads, tokens, flops["per_step"], peak_gflops)
        out["workloads"][name] = {
            "shapes": shapes, "config": {**dataclasses.asdict(cfg), **{  # and the task settings
                k: getattr(task, k) for k in ("label_smoothing", "mask_rate") if hasattr(task, k)}},
            "tokens_per_step": tokens, "flops": flops,
            "xla_cost_analysis_flops": zoo_side.xla_flops, "jax_compile_s": zoo_side.compile_s,
            "num_params": {k: s.num_params for k, s in sides.items()},
            "first_loss": {k: s.first_loss for k, s in sides.items()},
            "step_times_s": times, "other_load_cores": loads,
            "results": results}
        rows += [[name, names[k], table_cells(r), f"{r['clean_rounds']}/{r['rounds']}"]
                 for k, r in results.items()]
        del zoo_side, torch_side, sides

    print(f"\npeak = {peak_gflops:.1f} GFLOP/s (f32 matmul); medians over the clean rounds "
          f"(others < {CLEAN_LOAD} cores; all rounds where fewer than half are clean) of "
          f">= {args.repeats} rounds x {args.steps} steps, JAX and PyTorch rounds interleaved")
    print_table(["workload", "implementation", "ms/step (min-max)", "tokens/s", "GFLOP/s",
                 "% of peak", "zoo / PyTorch", "clean rounds"], rows)
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
