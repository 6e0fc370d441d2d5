"""Encoder-decoder transformer and BERT training steps: the zoo's jitted JAX step vs PyTorch.

    python -m benchmarks.transformer_step [--workload transformer bert | all]
                                          [--steps 10 --repeats 5] [--json PATH]

Two workloads, measured in one process after one measurement of the f32 matmul peak (best-of-N
`jnp.dot` / `torch.mm`, as in `benchmarks.gpt_step`, whose helpers this script imports):

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
    (Hugging Face `BertForMaskedLM`'s way; the loss is the same).

Both sides run the full step: forward, backward, global-norm clipping to 1.0, AdamW (weight
decay on >= 2-D parameters; torch's default AdamW, or `fused=True` with `--torch-fused-adamw`;
the zoo's schedule is `gpt_step.OPT_CONFIG`'s cosine, torch a constant lr; the update's cost
does not depend on the value). The zoo's step also computes its
metrics (accuracy, unsmoothed nll, gradient and parameter norms), which torch does not: a few
elementwise passes. Batches are random tokens; each source/target/BERT sequence has a random
length in [`--min-len-frac` * length, length] followed by padding (PAD = 0), so every mask is
exercised; tokens/s counts all B * length positions, padding included (both sides compute them).
Timing, waiting for an idle CPU, load metering from /proc/stat and the "clean round" medians are
those of `benchmarks.gpt_step` (JAX and PyTorch rounds alternate per workload), with one
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
import datetime
import math
import os
import platform
import sys
import time
from typing import Any

import numpy as np

from benchmarks.gpt_step import (
    CLEAN_LOAD,
    OPT_CONFIG,
    JaxStep,
    LoadMeter,
    TorchStep,
    _fmt_load,
    add_timing_arguments,
    cpu_model,
    measure_peak,
    median,
    num_cores,
    wait_for_quiet,
    write_json,
)

PAD_ID, BOS_ID, EOS_ID, FIRST_TOKEN = 0, 1, 2, 4  # zoo.data.vocab: ids 0-3 are special
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
# data


def padded_tokens(rng: np.random.Generator, batch: int, length: int, vocab: int,
                  min_frac: float, eos: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Random tokens in [FIRST_TOKEN, vocab) of random lengths, then PAD -> (tokens, weights)."""
    lengths = rng.integers(max(1, math.ceil(min_frac * length)), length + 1, size=batch)
    weights = (np.arange(length)[None, :] < lengths[:, None]).astype(np.float32)
    tokens = rng.integers(FIRST_TOKEN, vocab, size=(batch, length), dtype=np.int32)
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


# --------------------------------------------------------------------------------------------
# the zoo's side


def _xla_flops(compiled: Any) -> float | None:
    try:
        ca = compiled.cost_analysis()
        if isinstance(ca, (list, tuple)):
            ca = ca[0] if ca else None
        if ca and ca.get("flops", -1) > 0:
            return float(ca["flops"])
    except Exception as e:  # noqa: BLE001  (backend without cost analysis)
        print(f"  (XLA cost_analysis unavailable: {e})")
    return None


class ZooStep(JaxStep):
    """`JaxStep` (timing) around a registry model and its task instead of gpt_tiny/CausalLM."""

    def __init__(self, model_name: str, task_name: str, batch: dict[str, np.ndarray],
                 init_inputs: tuple[Any, ...], **overrides: Any):
        import jax

        import zoo
        from zoo.tasks import get_task
        from zoo.train import step as step_lib
        from zoo.train.optimizer import create_optimizer
        from zoo.train.schedules import create_schedule

        self.jax = jax
        self.model = zoo.create_model(model_name, dropout_rate=0.0, **overrides)
        self.task = get_task(task_name, self.model.config)
        schedule = create_schedule("cosine", learning_rate=OPT_CONFIG.learning_rate,
                                   warmup_steps=OPT_CONFIG.warmup_steps,
                                   total_steps=OPT_CONFIG.num_train_steps)
        params = jax.jit(lambda r: self.model.init(r, *init_inputs))(jax.random.key(0))["params"]
        self.num_params = sum(x.size for x in jax.tree.leaves(params))
        # A host copy for the numerical check: the step donates (invalidates) the state.
        self.init_params = jax.tree.map(lambda x: np.array(x, copy=True), params)
        self.state = step_lib.TrainState.create(apply_fn=self.model.apply, params=params,
                                                tx=create_optimizer(OPT_CONFIG, schedule))
        self.batch = jax.device_put(batch)
        self.rng = jax.random.key(1)
        step = step_lib.jit_train_step(self.task, learning_rate_fn=schedule)
        t0 = time.perf_counter()
        self.step = step.lower(self.state, self.batch, self.rng).compile()
        self.compile_s = time.perf_counter() - t0
        self.xla_flops = _xla_flops(self.step)
        self.state, metrics = self.step(self.state, self.batch, self.rng)
        self.first_loss = float(metrics["loss"])

    def loss(self, batch: dict[str, np.ndarray], rng: Any) -> float:
        """Mean loss of `batch` under the initial parameters (the task's loss, train=False)."""
        loss_sum, sums = self.jax.jit(
            lambda p, b: self.task.loss(self.model.apply, p, b, rng, train=False))(
            self.init_params, batch)
        return float(loss_sum / sums["weight"])


# --------------------------------------------------------------------------------------------
# the PyTorch side


def _adamw(torch: Any, model: Any, fused: bool = False) -> Any:
    """AdamW with decay on >= 2-D parameters; `fused=True` is PyTorch's one-kernel CPU update
    (6.1 against 13.4 ms for BERT's 5.4M parameters, benchmarks/RESULTS.md)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [{"params": [p for p in params if p.ndim >= 2], "weight_decay": OPT_CONFIG.weight_decay},
         {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
        lr=OPT_CONFIG.learning_rate * 0.5, betas=(OPT_CONFIG.adam_b1, OPT_CONFIG.adam_b2),
        eps=OPT_CONFIG.adam_eps, fused=fused or None)


def _torch_setup(threads: int):
    import torch

    torch.set_num_threads(threads)
    # XLA's CPU backend flushes denormals to zero; torch slows down badly without it once
    # repeated steps on one batch shrink the gradients (see benchmarks/gpt_step.py).
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    return torch


def build_torch_seq2seq(cfg: Any):
    import torch
    import torch.nn.functional as F
    from torch import nn

    from zoo.nn.transformer import sinusoidal_positions

    D = cfg.emb_dim

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
            self.register_buffer("positions", torch.from_numpy(
                sinusoidal_positions(cfg.max_len, D)), persistent=False)

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


def _self_attention(prefix: str, layer: dict) -> dict[str, np.ndarray]:
    a = layer["attn"]
    return _attention_state(prefix, _np(a["qkv"]["kernel"]), _np(a["qkv"]["bias"]), a["out"])


def seq2seq_state_dict(params: dict, cfg: Any) -> dict[str, np.ndarray]:
    """The zoo Transformer's parameters under the torch model's names."""
    sd = {"embed.weight": _np(params["embedding"]["embedding"])}
    for i in range(cfg.num_encoder_layers):
        layer, t = params["encoder"][f"layers_{i}"], f"transformer.encoder.layers.{i}"
        sd |= _self_attention(f"{t}.self_attn", layer)
        sd |= _ln(f"{t}.norm1", layer["ln_attn"]) | _ln(f"{t}.norm2", layer["ln_mlp"])
        sd |= _dense(f"{t}.linear1", layer["mlp"]["fc"]) | _dense(f"{t}.linear2",
                                                                  layer["mlp"]["proj"])
    for i in range(cfg.num_decoder_layers):
        layer, t = params["decoder"][f"layers_{i}"], f"transformer.decoder.layers.{i}"
        sd |= _self_attention(f"{t}.self_attn", layer)
        c, d = layer["cross_attn"], cfg.emb_dim
        kernel = np.concatenate([_np(c["query"]["kernel"]).reshape(d, -1),
                                 _np(c["kv"]["kernel"]).reshape(d, -1)], axis=1)
        bias = np.concatenate([_np(c["query"]["bias"]).reshape(-1),
                               _np(c["kv"]["bias"]).reshape(-1)])
        sd |= _attention_state(f"{t}.multihead_attn", kernel, bias, c["out"])
        sd |= (_ln(f"{t}.norm1", layer["ln_attn"]) | _ln(f"{t}.norm2", layer["ln_cross"])
               | _ln(f"{t}.norm3", layer["ln_mlp"]))
        sd |= _dense(f"{t}.linear1", layer["mlp"]["fc"]) | _dense(f"{t}.linear2",
                                                                  layer["mlp"]["proj"])
    return sd


def bert_state_dict(params: dict, cfg: Any) -> dict[str, np.ndarray]:
    """The zoo Bert(head="mlm")'s parameters under the torch model's names."""
    b = params["bert"]
    sd = {"word.weight": _np(b["word_embeddings"]["embedding"]),
          "position": _np(b["position_embeddings"]),
          "segment.weight": _np(b["segment_embeddings"]["embedding"])}
    sd |= _ln("ln_embeddings", b["ln_embeddings"]) | _dense("pooler", b["pooler"])
    for i in range(cfg.num_layers):
        layer, t = b[f"layers_{i}"], f"encoder.layers.{i}"
        sd |= _self_attention(f"{t}.self_attn", layer)
        sd |= _ln(f"{t}.norm1", layer["ln_attn"]) | _ln(f"{t}.norm2", layer["ln_mlp"])
        sd |= _dense(f"{t}.linear1", layer["mlp"]["fc"]) | _dense(f"{t}.linear2",
                                                                  layer["mlp"]["proj"])
    sd |= _dense("mlm_dense", params["mlm_dense"]) | _ln("mlm_ln", params["mlm_ln"])
    sd["mlm_bias"] = _np(params["mlm_bias"])
    return sd


class TorchSeq2SeqStep(TorchStep):
    """`TorchStep` (timing) around `build_torch_seq2seq`: label-smoothed, weighted CE."""

    def __init__(self, cfg: Any, batch: dict[str, np.ndarray], threads: int,
                 label_smoothing: float, fused_adamw: bool = False):
        torch = _torch_setup(threads)
        import torch.nn.functional as F

        self.torch, self.F, self.cfg = torch, F, cfg
        self.label_smoothing = label_smoothing
        self.model = build_torch_seq2seq(cfg)
        self.num_params = sum(p.numel() for p in self.model.parameters())
        self.opt = _adamw(torch, self.model, fused_adamw)
        self.inputs, self.targets, self.weights = self._tensors(batch)
        self.first_loss = self._step()

    def _tensors(self, batch):
        t = self.torch
        return (t.from_numpy(batch["inputs"]).long(), t.from_numpy(batch["targets"]).long(),
                t.from_numpy(batch["weights"]))

    def _loss(self, inputs, targets, weights):
        bos = self.torch.full_like(targets[:, :1], BOS_ID)
        logits = self.model(inputs, self.torch.cat([bos, targets[:, :-1]], dim=1))
        token_loss = self.F.cross_entropy(logits.reshape(-1, self.cfg.vocab_size),
                                          targets.reshape(-1), reduction="none",
                                          label_smoothing=self.label_smoothing)
        w = weights.reshape(-1)
        return (token_loss * w).sum() / w.sum().clamp_min(1e-9)

    def _step(self) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss = self._loss(self.inputs, self.targets, self.weights)
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), OPT_CONFIG.grad_clip_norm)
        self.opt.step()
        return float(loss.detach())

    def loss_with(self, state_dict: dict[str, np.ndarray], batch: dict[str, np.ndarray]) -> float:
        """Loss of `batch` in a fresh model holding `state_dict` (the timed model is untouched)."""
        model = build_torch_seq2seq(self.cfg)
        model.load_state_dict({k: self.torch.from_numpy(np.ascontiguousarray(v))
                               for k, v in state_dict.items()}, strict=True)
        timed, self.model = self.model, model
        try:
            with self.torch.no_grad():
                return float(self._loss(*self._tensors(batch)))
        finally:
            self.model = timed


class TorchMLMStep(TorchStep):
    """`TorchStep` (timing) around `build_torch_bert`; chooses and corrupts 15% every step."""

    def __init__(self, cfg: Any, batch: dict[str, np.ndarray], threads: int,
                 head_everywhere: bool = False, fused_adamw: bool = False):
        torch = _torch_setup(threads)
        import torch.nn.functional as F

        self.torch, self.F, self.cfg = torch, F, cfg
        self.head_everywhere = head_everywhere
        self.model = build_torch_bert(cfg)
        self.num_params = sum(p.numel() for p in self.model.parameters())
        self.opt = _adamw(torch, self.model, fused_adamw)
        self.tokens = torch.from_numpy(batch["inputs"]).long()
        self.valid = torch.from_numpy(batch["weights"]) > 0
        self.gen = torch.Generator().manual_seed(1)
        self.first_loss = self._step()

    def mask_tokens(self, tokens, valid):
        """zoo.tasks.masked_lm.mask_tokens with torch's RNG -> (corrupted, positions, weights)."""
        t, cfg = self.torch, self.cfg
        budget = max(1, round(tokens.shape[1] * cfg.mask_rate))
        lengths = valid.sum(1)
        count = t.where(lengths > 0, t.round(lengths * cfg.mask_rate).clamp_min(1), 0)
        scores = t.where(valid, t.rand(tokens.shape, generator=self.gen), 2.0)
        positions = t.topk(-scores, budget, dim=1).indices  # (B, P)
        weights = (t.arange(budget)[None, :] < count[:, None]).float()
        original = t.gather(tokens, 1, positions)
        kind = t.rand(positions.shape, generator=self.gen)
        random_tokens = t.randint(0, cfg.vocab_size, positions.shape, generator=self.gen)
        new = t.where(kind < 0.8, cfg.mask_token_id, t.where(kind < 0.9, random_tokens, original))
        new = t.where(weights > 0, new, original)
        return tokens.scatter(1, positions, new), positions, weights

    def _loss(self, corrupted, tokens, valid, positions, weights):
        targets = self.torch.gather(tokens, 1, positions)  # (B, P)
        if self.head_everywhere:  # logits at every position, then the chosen ones
            logits = self.model(corrupted, valid)
            logits = self.torch.gather(logits, 1, positions[..., None].expand(
                -1, -1, self.cfg.vocab_size))
        else:
            logits = self.model(corrupted, valid, positions)  # (B, P, V)
        token_loss = self.F.cross_entropy(logits.reshape(-1, self.cfg.vocab_size),
                                          targets.reshape(-1), reduction="none")
        w = weights.reshape(-1)
        return (token_loss * w).sum() / w.sum().clamp_min(1e-9)

    def _step(self) -> float:
        self.opt.zero_grad(set_to_none=True)
        corrupted, positions, weights = self.mask_tokens(self.tokens, self.valid)
        loss = self._loss(corrupted, self.tokens, self.valid, positions, weights)
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), OPT_CONFIG.grad_clip_norm)
        self.opt.step()
        return float(loss.detach())

    def loss_with(self, state_dict: dict[str, np.ndarray], corrupted: np.ndarray,
                  tokens: np.ndarray, valid: np.ndarray, positions: np.ndarray,
                  weights: np.ndarray) -> float:
        t = self.torch
        model = build_torch_bert(self.cfg)
        model.load_state_dict({k: t.from_numpy(np.ascontiguousarray(v))
                               for k, v in state_dict.items()}, strict=True)
        timed, self.model = self.model, model
        try:
            with t.no_grad():
                return float(self._loss(t.from_numpy(np.array(corrupted)).long(),
                                        t.from_numpy(np.array(tokens)).long(),
                                        t.from_numpy(np.array(valid)),
                                        t.from_numpy(np.array(positions)).long(),
                                        t.from_numpy(np.array(weights))))
        finally:
            self.model = timed


# --------------------------------------------------------------------------------------------
# the workloads


def setup_transformer(args, threads: int, use_torch: bool) -> dict[str, Any]:
    import jax.numpy as jnp

    batch = seq2seq_batch(args.tf_batch, args.tf_src_len, args.tf_tgt_len, args.tf_vocab,
                          args.min_len_frac)
    zoo_side = ZooStep(
        "transformer_tiny", "seq2seq", batch,
        (jnp.zeros((1, args.tf_src_len), jnp.int32), jnp.zeros((1, args.tf_tgt_len), jnp.int32)),
        vocab_size=args.tf_vocab, emb_dim=args.tf_emb_dim, num_heads=args.tf_heads,
        num_encoder_layers=args.tf_enc_layers, num_decoder_layers=args.tf_dec_layers,
        mlp_dim=args.tf_mlp_dim, max_len=max(args.tf_src_len, args.tf_tgt_len),
        label_smoothing=args.tf_label_smoothing)
    cfg = zoo_side.model.config
    w = {"name": "transformer", "config": cfg, "zoo": zoo_side,
         "tokens_per_step": args.tf_batch * (args.tf_src_len + args.tf_tgt_len),
         "shapes": {"B": args.tf_batch, "S": args.tf_src_len, "T": args.tf_tgt_len},
         "flops": transformer_flops(cfg.num_encoder_layers, cfg.num_decoder_layers, cfg.emb_dim,
                                    cfg.mlp_dim, cfg.vocab_size, args.tf_batch, args.tf_src_len,
                                    args.tf_tgt_len)}
    if use_torch:
        w["torch"] = TorchSeq2SeqStep(cfg, batch, threads, cfg.label_smoothing,
                                      args.torch_fused_adamw)
        if args.check:
            check = seq2seq_batch(args.tf_batch, args.tf_src_len, args.tf_tgt_len, args.tf_vocab,
                                  args.min_len_frac, seed=7)
            import jax
            zoo_loss = zoo_side.loss(check, jax.random.key(3))
            torch_loss = w["torch"].loss_with(seq2seq_state_dict(zoo_side.init_params, cfg),
                                              check)
            w["check"] = {"zoo_loss": zoo_loss, "torch_loss": torch_loss,
                          "rel_diff": abs(zoo_loss - torch_loss) / abs(zoo_loss)}
    return w


def setup_bert(args, threads: int, use_torch: bool) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    batch = mlm_batch(args.bert_batch, args.bert_seq_len, args.bert_vocab, args.min_len_frac)
    zoo_side = ZooStep(
        "bert_tiny", "masked_lm", batch, (jnp.zeros((1, args.bert_seq_len), jnp.int32),),
        vocab_size=args.bert_vocab, emb_dim=args.bert_emb_dim, num_heads=args.bert_heads,
        num_layers=args.bert_layers, mlp_dim=args.bert_mlp_dim, max_len=args.bert_seq_len,
        mask_token_id=args.bert_mask_token)
    cfg = zoo_side.model.config
    w = {"name": "bert", "config": cfg, "zoo": zoo_side,
         "tokens_per_step": args.bert_batch * args.bert_seq_len,
         "shapes": {"B": args.bert_batch, "T": args.bert_seq_len},
         "flops": bert_flops(cfg.num_layers, cfg.emb_dim, cfg.mlp_dim, cfg.vocab_size,
                             args.bert_batch, args.bert_seq_len,
                             max(1, round(args.bert_seq_len * cfg.mask_rate)))}
    if use_torch:
        w["torch"] = TorchMLMStep(cfg, batch, threads, args.mlm_head_everywhere,
                                  args.torch_fused_adamw)
        if args.check:
            from zoo.tasks.masked_lm import mask_tokens

            check = mlm_batch(args.bert_batch, args.bert_seq_len, args.bert_vocab,
                              args.min_len_frac, seed=7)
            rng = jax.random.key(3)
            zoo_loss = zoo_side.loss(check, rng)
            valid = check["weights"] > 0  # the task's own masking of this batch and rng:
            corrupted, positions, weights = mask_tokens(
                jax.random.split(rng)[0], jnp.asarray(check["inputs"]), jnp.asarray(valid),
                vocab_size=cfg.vocab_size, mask_token_id=cfg.mask_token_id,
                mask_rate=cfg.mask_rate)
            torch_loss = w["torch"].loss_with(bert_state_dict(zoo_side.init_params, cfg),
                                              np.asarray(corrupted), check["inputs"], valid,
                                              np.asarray(positions), np.asarray(weights))
            w["check"] = {"zoo_loss": zoo_loss, "torch_loss": torch_loss,
                          "rel_diff": abs(zoo_loss - torch_loss) / abs(zoo_loss),
                          "predicted_tokens": int(np.asarray(weights).sum())}
    return w


def time_rounds_until_clean(sides: dict[str, Any], repeats: int, max_rounds: int, steps: int,
                            max_wait: float):
    """`gpt_step.time_rounds`, plus extra rounds (up to `max_rounds` in all) while a side has
    fewer than half of its rounds clean: others' load slows torch's OpenMP threads far more
    than XLA's (measured: 5-10x vs 1.5-2x with one core busy), so loaded rounds say little."""
    times: dict[str, list[float]] = {k: [] for k in sides}
    loads: dict[str, list[float | None]] = {k: [] for k in sides}

    def clean(k):
        return sum(o is not None and o < CLEAN_LOAD for o in loads[k])

    r = 0
    while r < repeats or (r < max_rounds and any(2 * clean(k) < r for k in sides)):
        for k, s in sides.items():
            if max_wait > 0:
                wait_for_quiet(max_wait)
            with LoadMeter() as m:
                times[k].append(s.run(steps))
            loads[k].append(m.others)
        r += 1
        print(f"  round {r} (>= {repeats}, <= {max_rounds}): " + ", ".join(
            f"{k} {times[k][-1] * 1e3:.1f} ms/step (others {_fmt_load(loads[k][-1])} cores)"
            for k in sides), flush=True)
    return times, loads


def summarize(times, loads, flops_per_step: float, tokens: int, peak: float) -> dict[str, Any]:
    results = {}
    for k in times:
        clean = [t for t, o in zip(times[k], loads[k]) if o is not None and o < CLEAN_LOAD]
        use_clean = bool(clean) and 2 * len(clean) >= len(times[k])
        t = median(clean if use_clean else times[k])
        results[k] = {
            "rounds": len(times[k]), "clean_rounds": len(clean), "median_over": "clean rounds" if use_clean else "all rounds",
            "ms_per_step": t * 1e3, "ms_per_step_min": min(times[k]) * 1e3,
            "ms_per_step_max": max(times[k]) * 1e3, "tokens_per_s": tokens / t,
            "gflops": flops_per_step / t / 1e9, "pct_peak": 100 * flops_per_step / t / 1e9 / peak,
        }
    ref = results.get("torch")
    for r in results.values():
        r["vs_torch"] = r["tokens_per_s"] / ref["tokens_per_s"] if ref else None
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", nargs="+", default=["all"], choices=[*WORKLOADS, "all"])
    g = p.add_argument_group("transformer workload (zoo transformer_tiny, reshaped)")
    g.add_argument("--tf-emb-dim", type=int, default=256)
    g.add_argument("--tf-heads", type=int, default=4)
    g.add_argument("--tf-enc-layers", type=int, default=3)
    g.add_argument("--tf-dec-layers", type=int, default=3)
    g.add_argument("--tf-mlp-dim", type=int, default=1024)
    g.add_argument("--tf-vocab", type=int, default=64)
    g.add_argument("--tf-batch", type=int, default=32)
    g.add_argument("--tf-src-len", type=int, default=64)
    g.add_argument("--tf-tgt-len", type=int, default=64)
    g.add_argument("--tf-label-smoothing", type=float, default=0.1)
    g = p.add_argument_group("bert workload (zoo bert_tiny, reshaped; head mlm)")
    g.add_argument("--bert-emb-dim", type=int, default=256)
    g.add_argument("--bert-heads", type=int, default=4)
    g.add_argument("--bert-layers", type=int, default=4)
    g.add_argument("--bert-mlp-dim", type=int, default=1024)
    g.add_argument("--bert-vocab", type=int, default=8192)
    g.add_argument("--bert-mask-token", type=int, default=103)
    g.add_argument("--bert-batch", type=int, default=32)
    g.add_argument("--bert-seq-len", type=int, default=128)
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

    import jax

    cores = num_cores()
    threads = args.threads or cores
    torch_version = None
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(threads)
            torch_version = torch.__version__
        except ImportError as e:
            print(f"PyTorch skipped ({e}): only the JAX side is measured.")
    use_torch = torch_version is not None
    info = {
        "date": datetime.date.today().isoformat(), "cpu": cpu_model(), "cores": cores,
        "python": platform.python_version(), "jax": jax.__version__,
        "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
        "torch": torch_version, "torch_threads": threads if use_torch else None,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "command": "python -m benchmarks.transformer_step " + " ".join(
            sys.argv[1:] if argv is None else argv),
    }
    print(f"# {info['cpu']}, {cores} cores; jax {info['jax']} ({info['backend']}), "
          f"torch {torch_version} ({threads} threads); XLA_FLAGS={info['XLA_FLAGS']!r}")

    peak, peak_gflops = measure_peak(args.matmul_sizes, args.matmul_repeats, args.max_wait,
                                     use_torch)

    out: dict[str, Any] = {"info": info, "args": vars(args), "matmul_gflops": peak,
                           "peak_gflops": peak_gflops, "workloads": {}}
    names = {"jax": f"JAX zoo jit_train_step (jax {jax.__version__})",
             "torch": f"PyTorch eager (torch {torch_version})"}
    tables = []
    for name in workloads:
        setup = setup_transformer if name == "transformer" else setup_bert
        w = setup(args, threads, use_torch)
        zoo_side, flops = w["zoo"], w["flops"]
        sides: dict[str, Any] = {"jax": zoo_side}
        if "torch" in w:
            sides["torch"] = w["torch"]
        xla = f"{zoo_side.xla_flops / 1e9:.2f} GFLOP" if zoo_side.xla_flops else "n/a"
        print(f"\n## {name}: {w['shapes']}, {w['config']}")
        print("params: " + ", ".join(f"{k} {s.num_params:,}" for k, s in sides.items()))
        if use_torch and sides["torch"].num_params != zoo_side.num_params:
            raise AssertionError(f"{name}: parameter counts differ: zoo {zoo_side.num_params:,}, "
                                 f"torch {sides['torch'].num_params:,}")
        print(f"FLOPs/step analytic {flops['per_step'] / 1e9:.2f} GFLOP, XLA cost_analysis {xla}; "
              f"JAX compile {zoo_side.compile_s:.1f}s")
        if "check" in w:
            c = w["check"]
            print(f"numerical check (zoo init params in torch, same batch/masks): loss zoo "
                  f"{c['zoo_loss']:.6f}, torch {c['torch_loss']:.6f}, rel diff "
                  f"{c['rel_diff']:.1e}")
        print("first-step loss: " + ", ".join(f"{k} {s.first_loss:.4f}" for k, s in sides.items()))
        for s in sides.values():
            s.run(args.warmup)
        times, loads = time_rounds_until_clean(sides, args.repeats,
                                               max(args.repeats, args.max_rounds), args.steps,
                                               args.max_wait)
        results = summarize(times, loads, flops["per_step"], w["tokens_per_step"], peak_gflops)
        out["workloads"][name] = {
            "shapes": w["shapes"], "config": {k: getattr(w["config"], k) for k in
                                              w["config"].__dataclass_fields__},
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
            ratio = f"{r['vs_torch']:.2f}x" if r["vs_torch"] else "n/a"
            print(f"| {name} | {names[k]} | {r['ms_per_step']:.0f} ({r['ms_per_step_min']:.0f}-"
                  f"{r['ms_per_step_max']:.0f}) | {r['tokens_per_s']:,.0f} | {r['gflops']:.1f} | "
                  f"{r['pct_peak']:.0f}% | {ratio} | {r['clean_rounds']}/{r['rounds']} |")
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
