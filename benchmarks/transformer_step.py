"""Encoder-decoder transformer and BERT training steps: the zoo's jitted JAX step vs PyTorch.

    python -m benchmarks.transformer_step [--workload transformer bert | all]
                                          [--steps 10 --repeats 5] [--json PATH]

Two workloads, measured in one process after one measurement of the f32 matmul peak (best-of-N
`jnp.dot` / `np.matmul` / `torch.mm`, as in `benchmarks.gpt_step`; the machinery is
`benchmarks.harness`'s):

transformer  the zoo's `Transformer` (post-LN, ReLU FFN, sinusoidal positions, one embedding
    matrix for source, target and output, scaled by sqrt(D)) through
    `jit_train_step(get_task("seq2seq", config))`: label smoothing 0.1, dropout 0, decoder fed
    the targets shifted right behind BOS. Defaults: D=256, 4 heads, 3 + 3 layers, F=1024,
    V=64 (character-level translation), B=32, S=T=64. PyTorch: `nn.Transformer(D, 4, 3, 3,
    F, dropout=0, batch_first=True, norm_first=False)` with its final encoder/decoder
    LayerNorms removed (the zoo's post-LN stack has none), a shared `nn.Embedding` * sqrt(D),
    the zoo's sinusoidal table, `src_key_padding_mask` / `memory_key_padding_mask`, a causal
    `tgt_mask` (with `tgt_is_causal=True`, so SDPA gets `is_causal`), logits through the
    embedding weight, `F.cross_entropy(label_smoothing=0.1)` weighted by the target mask.
bert  the zoo's `Bert(head="mlm")` (word + learned position + segment embeddings, LayerNorm,
    post-LN encoder with exact GELU and LN eps 1e-12, MLM head Dense -> GELU -> LayerNorm ->
    tied decoder + bias) through `jit_train_step(get_task("masked_lm", config))`, which
    chooses round(15%) of each row's real tokens (80% [MASK], 10% random, 10% kept) with the
    step's rng and runs the MLM head at the chosen positions only, as the original BERT does.
    Defaults: D=256, 4 heads, 4 layers, F=1024, V=8192, B=32, T=128. PyTorch: embeddings +
    LayerNorm + `nn.TransformerEncoder(nn.TransformerEncoderLayer(D, 4, F, dropout=0,
    activation="gelu", layer_norm_eps=1e-12, batch_first=True, norm_first=False), 4)` with a
    key padding mask, the same choice of positions and 80-10-10 corruption drawn with torch's
    RNG every step, the same MLM head on the hidden states gathered at those positions, cross
    entropy over them. `--mlm-head-everywhere` runs torch's head over every position instead
    (Hugging Face `BertForMaskedLM`'s way; the loss is the same). `benchmarks.mfu` runs the
    same model on a GPU, the masks drawn on the device.

Both sides run the full step: forward, backward, global-norm clipping to 1.0, AdamW (weight
decay on >= 2-D parameters; torch's default AdamW, or `fused=True` with `--torch-fused-adamw`;
the zoo's schedule is `harness.OPT_CONFIG`'s cosine, torch a constant lr; the update's cost
does not depend on the value). The zoo's step also computes its
metrics (accuracy, unsmoothed nll, gradient and parameter norms), which torch does not: a few
elementwise passes. Batches are random tokens; each source/target/BERT sequence has a random
length in [`--min-len-frac` * length, length] followed by padding (PAD = 0), so every mask is
exercised; tokens/s counts all B * length positions, padding included (both sides compute them).
Timing, waiting for an idle CPU, load metering from /proc/stat and the "clean round" medians are
those of `benchmarks.gpt_step` (`harness.time_rounds`; JAX and PyTorch rounds alternate per workload), with one
addition: after `--repeats` rounds, more rounds run (up to `--max-rounds` in all) while either
side has fewer than half of its rounds clean, because a busy core slows torch's OpenMP threads
5-10x but XLA's only 1.5-2x, so a loaded round would bias the ratio.

The parameter counts of the two sides are printed and must be equal. Both counts include the
zoo BERT's pooler (D*D + D), which the MLM loss does not use: the torch model carries the same
unused `nn.Linear` (no gradient, skipped by its AdamW; XLA removes its dead forward). Before
timing, the zoo's initial parameters are copied into the torch model and the loss of one batch
(the same corrupted BERT batch) is compared (`--no-check` skips this).

FLOPs per training step (matmul FLOPs only: forward 2x + backward 4x per weight use, embedding
lookups and their scatter-add gradients not counted), as in `benchmarks.gpt_step`; attention
scores q.k and values p.v counted over the full T x S matrix, 2 matmuls x 2*D per query and key,
x 3 for forward + backward (the causal self-attention too, although both sides skip some of the
masked blocks). L layers, D = emb_dim, F = mlp_dim, V = vocab_size, B batch:

transformer (Le encoder, Ld decoder layers, S source, T target length):
    per source position  6*Le*(4*D*D + 2*D*F)              # encoder qkv, out, fc, proj
                         + 12*Le*S*D                       # encoder self-attention
                         + 6*Ld*2*D*D                      # cross-attention k, v of memory
    per target position  6*Ld*(3*D*D + D*D + 2*D*D + 2*D*F) # self qkv, out; cross q, out; FFN
                         + 12*Ld*T*D + 12*Ld*S*D           # self- and cross-attention
                         + 6*D*V                           # logits via the shared embedding
    per step             B*S*(per source) + B*T*(per target)
  defaults: 17.10 + 17.79 MFLOP per source + target position, 71.47 GFLOP per step.

bert (T sequence length):
    per position         6*L*(4*D*D + 2*D*F) + 12*L*T*D    # encoder
                         + 6*D*D + 6*D*V                   # MLM dense, tied decoder (all T)
    per step             B*T*(per position)
  defaults: 33.42 MFLOP per position, 136.90 GFLOP per step.

XLA's own count (`cost_analysis()["flops"]` of the compiled step, which also counts elementwise
ops, softmax, LayerNorm and the optimizer) is printed next to each as a check.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import sys
from typing import Any

import numpy as np

from benchmarks.harness import (CLEAN_LOAD, TorchSide, ZooStep, add_timing_arguments,
                                cross_entropy, race, start, summarize, table_cells, to_torch,
                                write_json)
from zoo.special_tokens import BOS_ID, EOS_ID, NUM_SPECIAL, PAD_ID

WORKLOADS = ("transformer", "bert")


# --------------------------------------------------------------------------------------------
# FLOPs (see the module docstring)


def transformer_flops(enc_layers: int, dec_layers: int, emb_dim: int, mlp_dim: int,
                      vocab_size: int, batch: int, src_len: int, tgt_len: int
                      ) -> dict[str, float]:
    Le, Ld, D, F, V, S, T = enc_layers, dec_layers, emb_dim, mlp_dim, vocab_size, src_len, tgt_len
    per_source = 6 * Le * (4 * D * D + 2 * D * F) + 12 * Le * S * D + 6 * Ld * 2 * D * D
    per_target = (6 * Ld * (3 * D * D + D * D + 2 * D * D + 2 * D * F)
                  + 12 * Ld * T * D + 12 * Ld * S * D + 6 * D * V)
    return {"per_source_position": per_source, "per_target_position": per_target,
            "per_step": batch * (S * per_source + T * per_target)}


def bert_flops(num_layers: int, emb_dim: int, mlp_dim: int, vocab_size: int, batch: int,
               seq_len: int, head_positions: int) -> dict[str, float]:
    """Encoder FLOPs at every position; the MLM head's at `head_positions` per row."""
    L, D, F, V, T = num_layers, emb_dim, mlp_dim, vocab_size, seq_len
    per_position = 6 * L * (4 * D * D + 2 * D * F) + 12 * L * T * D
    per_prediction = 6 * D * D + 6 * D * V
    return {"per_position": per_position, "per_prediction": per_prediction,
            "per_step": batch * (T * per_position + head_positions * per_prediction)}


# --------------------------------------------------------------------------------------------
# data and the zoo's BERT step


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


# --------------------------------------------------------------------------------------------
# the PyTorch side


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
            self.transformer.encoder.norm = None
            self.transformer.decoder.norm = None
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
            x = (self.word(tokens) + self.position[:T]
                 + self.segment(torch.zeros_like(tokens)))
            x = self.encoder(self.ln_embeddings(x), src_key_padding_mask=~valid)
            if positions is not None:  # (B, P): the head runs at those positions only
                x = torch.gather(x, 1, positions[..., None].expand(-1, -1, D))
            h = self.mlm_ln(F.gelu(self.mlm_dense(x)))
            return F.linear(h, self.word.weight, self.mlm_bias)  # (B, P or T, V), tied decoder

    return BertMLM()


def _np(x) -> np.ndarray:
    return np.asarray(x, np.float32)


def _attention_state(prefix: str, qkv_kernel, qkv_bias, out: dict) -> dict[str, np.ndarray]:
    """zoo (D, 3|2+1, N, H) projections -> torch MultiheadAttention in_proj / out_proj."""
    d = qkv_kernel.shape[0]
    return {f"{prefix}.in_proj_weight": qkv_kernel.reshape(d, -1).T,
            f"{prefix}.in_proj_bias": qkv_bias.reshape(-1),
            f"{prefix}.out_proj.weight": _np(out["kernel"]).reshape(-1, d).T,
            f"{prefix}.out_proj.bias": _np(out["bias"])}


def _dense(prefix: str, p: dict) -> dict[str, np.ndarray]:
    return {f"{prefix}.weight": _np(p["kernel"]).T, f"{prefix}.bias": _np(p["bias"])}


def _ln(prefix: str, p: dict) -> dict[str, np.ndarray]:
    return {f"{prefix}.weight": _np(p["scale"]), f"{prefix}.bias": _np(p["bias"])}


def _layer(t: str, layer: dict, norms: tuple[str, ...] = ("ln_attn", "ln_mlp")
           ) -> dict[str, np.ndarray]:
    """A zoo encoder (or decoder) layer's self-attention, LayerNorms (norm1, norm2, ...) and
    MLP under the names of torch's nn.TransformerEncoderLayer (DecoderLayer) `t`."""
    a = layer["attn"]
    sd = _attention_state(f"{t}.self_attn", _np(a["qkv"]["kernel"]), _np(a["qkv"]["bias"]),
                          a["out"])
    for i, norm in enumerate(norms):
        sd |= _ln(f"{t}.norm{i + 1}", layer[norm])
    return sd | _dense(f"{t}.linear1", layer["mlp"]["fc"]) | _dense(f"{t}.linear2",
                                                                    layer["mlp"]["proj"])


def seq2seq_state_dict(params: dict, cfg: Any) -> dict[str, np.ndarray]:
    """The zoo Transformer's parameters under the torch model's names."""
    sd = {"embed.weight": _np(params["embedding"]["embedding"])}
    for i in range(cfg.num_encoder_layers):
        sd |= _layer(f"transformer.encoder.layers.{i}", params["encoder"][f"layers_{i}"])
    for i in range(cfg.num_decoder_layers):
        layer, t = params["decoder"][f"layers_{i}"], f"transformer.decoder.layers.{i}"
        sd |= _layer(t, layer, ("ln_attn", "ln_cross", "ln_mlp"))
        c, d = layer["cross_attn"], cfg.emb_dim
        kernel = np.concatenate([_np(c["query"]["kernel"]).reshape(d, -1),
                                 _np(c["kv"]["kernel"]).reshape(d, -1)], axis=1)
        bias = np.concatenate([_np(c["query"]["bias"]).reshape(-1),
                               _np(c["kv"]["bias"]).reshape(-1)])
        sd |= _attention_state(f"{t}.multihead_attn", kernel, bias, c["out"])
    return sd


def bert_state_dict(params: dict, cfg: Any) -> dict[str, np.ndarray]:
    """The zoo Bert(head="mlm")'s parameters under the torch model's names."""
    b = params["bert"]
    sd = {"word.weight": _np(b["word_embeddings"]["embedding"]),
          "position": _np(b["position_embeddings"]),
          "segment.weight": _np(b["segment_embeddings"]["embedding"])}
    sd |= _ln("ln_embeddings", b["ln_embeddings"]) | _dense("pooler", b["pooler"])
    for i in range(cfg.num_layers):
        sd |= _layer(f"encoder.layers.{i}", b[f"layers_{i}"])
    sd |= _dense("mlm_dense", params["mlm_dense"]) | _ln("mlm_ln", params["mlm_ln"])
    sd["mlm_bias"] = _np(params["mlm_bias"])
    return sd


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
    """`build_torch_bert(cfg)`'s MLM train step (`TorchSide`) on `batch` (`mlm_batch`: "inputs"
    (B, T), "weights" (B, T), 0 = padding). Every step draws new masks with torch's RNG on the
    device, the zoo task's way: round(`mask_rate`) of each row's real tokens (P =
    round(mask_rate * T) slots per row), 80% [MASK] / 10% random / 10% kept."""

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
        """`zoo.tasks.masked_lm.mask_tokens` with torch's RNG on the device ->
        (corrupted (B, T), valid (B, T), positions (B, P), targets (B, P), weights (B, P))."""
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


# --------------------------------------------------------------------------------------------
# the workloads


def setup_transformer(args, threads: int, use_torch: bool) -> dict[str, Any]:
    S, T = args.tf_src_len, args.tf_tgt_len
    batch = seq2seq_batch(args.tf_batch, S, T, args.tf_vocab, args.min_len_frac)
    zoo_side = ZooStep(
        "transformer_tiny", batch, "seq2seq", vocab_size=args.tf_vocab, emb_dim=args.tf_emb_dim,
        num_heads=args.tf_heads, num_encoder_layers=args.tf_enc_layers,
        num_decoder_layers=args.tf_dec_layers, mlp_dim=args.tf_mlp_dim, max_len=max(S, T),
        label_smoothing=args.tf_label_smoothing)
    cfg = zoo_side.model.config
    w = {"name": "transformer", "config": cfg, "zoo": zoo_side,
         "tokens_per_step": args.tf_batch * (S + T),
         "shapes": {"B": args.tf_batch, "S": S, "T": T},
         "flops": transformer_flops(cfg.num_encoder_layers, cfg.num_decoder_layers, cfg.emb_dim,
                                    cfg.mlp_dim, cfg.vocab_size, args.tf_batch, S, T)}
    if use_torch:
        w["torch"] = TorchSeq2SeqStep(cfg, batch, zoo_side.task.label_smoothing, threads=threads,
                                      fused=args.torch_fused_adamw)
        if args.check:
            import jax

            check = seq2seq_batch(args.tf_batch, S, T, args.tf_vocab, args.min_len_frac, seed=7)
            params = zoo_side.initial_state().params
            zoo_loss = zoo_side.loss(params, check, jax.random.key(3))
            torch_loss = w["torch"].loss_with(seq2seq_state_dict(params, cfg), check["inputs"],
                                              check["targets"], check["weights"])
            w["check"] = {"zoo_loss": zoo_loss, "torch_loss": torch_loss,
                          "rel_diff": abs(zoo_loss - torch_loss) / abs(zoo_loss)}
    return w


def setup_bert(args, threads: int, use_torch: bool) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    zoo_side, flops = bert_zoo_step(
        "bert_tiny", args.bert_batch, args.bert_seq_len, args.min_len_frac,
        vocab_size=args.bert_vocab, emb_dim=args.bert_emb_dim, num_heads=args.bert_heads,
        num_layers=args.bert_layers, mlp_dim=args.bert_mlp_dim, max_len=args.bert_seq_len,
        mask_token_id=args.bert_mask_token)
    cfg, task = zoo_side.model.config, zoo_side.task
    w = {"name": "bert", "config": cfg, "zoo": zoo_side, "flops": flops,
         "tokens_per_step": args.bert_batch * args.bert_seq_len,
         "shapes": {"B": args.bert_batch, "T": args.bert_seq_len}}
    if use_torch:
        w["torch"] = TorchBertStep(cfg, zoo_side.host_batch, task.mask_rate,
                                   args.mlm_head_everywhere, threads=threads,
                                   fused=args.torch_fused_adamw)
        if args.check:
            from zoo.tasks.masked_lm import mask_tokens

            check = mlm_batch(args.bert_batch, args.bert_seq_len, args.bert_vocab,
                              args.min_len_frac, seed=7)
            rng = jax.random.key(3)
            params = zoo_side.initial_state().params
            zoo_loss = zoo_side.loss(params, check, rng)
            valid = check["weights"] > 0  # the task's own masking of this batch and rng:
            corrupted, positions, weights = (np.asarray(x) for x in mask_tokens(
                jax.random.split(rng)[0], jnp.asarray(check["inputs"]), jnp.asarray(valid),
                vocab_size=task.vocab_size, mask_token_id=task.mask_token_id,
                mask_rate=task.mask_rate))
            torch_loss = w["torch"].loss_with(
                bert_state_dict(params, cfg), corrupted, valid, positions,
                np.take_along_axis(check["inputs"], positions, axis=1), weights)
            w["check"] = {"zoo_loss": zoo_loss, "torch_loss": torch_loss,
                          "rel_diff": abs(zoo_loss - torch_loss) / abs(zoo_loss),
                          "predicted_tokens": int(weights.sum())}
    return w


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
        g = p.add_argument_group(title)
        for key, default in shape.items():
            g.add_argument(f"--{prefix}-{key.replace('_', '-')}", type=type(default),
                           default=default)
    g.add_argument("--mlm-head-everywhere", action="store_true",
                   help="torch runs its MLM head at every position (Hugging Face's way), the "
                        "zoo at the chosen ones only")
    p.add_argument("--torch-fused-adamw", action="store_true",
                   help="torch's AdamW(fused=True), its fastest CPU update, instead of the default")
    p.add_argument("--min-len-frac", type=float, default=0.75,
                   help="each sequence's length is uniform in [frac * length, length]")
    add_timing_arguments(p, steps=10, warmup=2)
    p.add_argument("--max-rounds", type=int, default=8,
                   help="extra rounds, up to this many in all, while a side has fewer than half "
                        "of its rounds clean")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="skip the zoo-parameters-in-torch loss comparison")
    args = p.parse_args(argv)
    workloads = WORKLOADS if "all" in args.workload else tuple(
        w for w in WORKLOADS if w in args.workload)
    info, threads, use_torch, peak, peak_gflops = start(args, "benchmarks.transformer_step", argv)

    out: dict[str, Any] = {"info": info, "args": vars(args), "matmul_gflops": peak,
                           "peak_gflops": peak_gflops, "workloads": {}}
    names = {"jax": f"JAX zoo jit_train_step (jax {info['jax']})",
             "torch": f"PyTorch eager (torch {info['torch']})"}
    tables = []
    for name in workloads:
        setup = setup_transformer if name == "transformer" else setup_bert
        w = setup(args, threads, use_torch)
        zoo_side, flops = w["zoo"], w["flops"]
        sides: dict[str, Any] = {"jax": zoo_side}
        if "torch" in w:
            sides["torch"] = w["torch"]
        print(f"\n## {name}: {w['shapes']}, {w['config']}")
        print("params: " + ", ".join(f"{k} {s.num_params:,}" for k, s in sides.items()))
        if use_torch and sides["torch"].num_params != zoo_side.num_params:
            raise AssertionError(f"{name}: parameter counts differ: zoo {zoo_side.num_params:,}, "
                                 f"torch {sides['torch'].num_params:,}")
        print(zoo_side.flops_text(flops["per_step"]))
        if "check" in w:
            c = w["check"]
            print(f"numerical check (zoo init params in torch, same batch/masks): loss zoo "
                  f"{c['zoo_loss']:.6f}, torch {c['torch_loss']:.6f}, rel diff "
                  f"{c['rel_diff']:.1e}")
        times, loads = race(sides, args, max(args.repeats, args.max_rounds))
        results = summarize(times, loads, w["tokens_per_step"], flops["per_step"], peak_gflops)
        task = zoo_side.task  # its settings (label smoothing, mask rate) beside the model's
        out["workloads"][name] = {
            "shapes": w["shapes"], "config": {**dataclasses.asdict(w["config"]), **{
                k: getattr(task, k) for k in ("label_smoothing", "mask_rate") if hasattr(task, k)}},
            "tokens_per_step": w["tokens_per_step"], "flops": flops,
            "xla_cost_analysis_flops": zoo_side.xla_flops, "jax_compile_s": zoo_side.compile_s,
            "num_params": {k: s.num_params for k, s in sides.items()},
            "first_loss": {k: s.first_loss for k, s in sides.items()},
            "check": w.get("check"), "step_times_s": times, "other_load_cores": loads,
            "results": results}
        tables.append((name, results))
        del w, sides, zoo_side

    print(f"\npeak = {peak_gflops:.1f} GFLOP/s (f32 matmul); medians over the clean rounds "
          f"(others < {CLEAN_LOAD} cores; all rounds where fewer than half are clean) of "
          f">= {args.repeats} rounds x {args.steps} steps, JAX and PyTorch rounds interleaved")
    print("| workload | implementation | ms/step (min-max) | tokens/s | GFLOP/s | % of peak "
          "| zoo / PyTorch | clean rounds |")
    print("|---|---|---|---|---|---|---|---|")
    for name, results in tables:
        for k, r in results.items():
            print(f"| {name} | {names[k]} | {table_cells(r)} | {r['clean_rounds']}/{r['rounds']} |")
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
