"""Encoder-decoder transformer and BERT workloads: the zoo's steps and PyTorch's (`python -m
benchmarks.train_step --workload transformer bert`, or bert_base).

transformer: the zoo's post-LN `Transformer` vs `nn.Transformer` without its final LayerNorms.
bert: `Bert(head="mlm")`, the head at the 15% of positions the task chooses, vs
`nn.TransformerEncoder` with the same head and masking drawn by torch every step (RESULTS.md
has the older variant with torch's head at every position, Hugging Face's way). Sequences have
random lengths in [`min_len_frac` * length, length], then padding (counted in tokens/s).
Both sides hold the same parameters and compute the same loss (tests/test_benchmarks.py).
FLOPs count matmuls only, attention over the full length (`train_flops` in zoo.models).
"""
from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from benchmarks.harness import TorchSide, Workload, cross_entropy
from zoo.special_tokens import BOS_ID, EOS_ID, NUM_SPECIAL, PAD_ID


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


def mlm_loss(model, corrupted, valid, positions, targets, weights):
    """Weighted CE at the chosen positions."""
    return cross_entropy(model(corrupted, valid, positions), targets, weights)


class TorchSeq2SeqStep(TorchSide):
    """`build_torch_seq2seq(cfg)`'s train step (`TorchSide`) on `batch` (`seq2seq_batch`)."""

    def __init__(self, cfg: Any, batch: dict[str, np.ndarray], label_smoothing: float,
                 **kwargs: Any):
        super().__init__(lambda: build_torch_seq2seq(cfg),
                         functools.partial(seq2seq_loss, label_smoothing=label_smoothing), batch,
                         **kwargs)


class TorchBertStep(TorchSide):
    """`build_torch_bert(cfg)`'s MLM train step (`TorchSide`) on `batch` (`mlm_batch`), new
    masks drawn every step with torch's RNG on the device, as the zoo's task draws them."""

    def __init__(self, cfg: Any, batch: dict[str, np.ndarray], mask_rate: float, **kwargs: Any):
        import torch

        self.cfg, self.vocab_size, self.mask_rate = cfg, cfg.vocab_size, mask_rate
        self.gen = torch.Generator(kwargs.get("device", "cpu")).manual_seed(1)
        super().__init__(lambda: build_torch_bert(cfg), mlm_loss,
                         {"inputs": batch["inputs"], "valid": batch["weights"] > 0},
                         self.masked_batch, **kwargs)

    def masked_batch(self, batch: dict[str, Any]):
        """`zoo.tasks.masked_lm.mask_tokens` in torch -> (corrupted (B, T), valid (B, T),
        positions (B, P), targets (B, P), weights (B, P)), P = round(mask_rate * T)."""
        t, tokens, valid, device = self.torch, batch["inputs"], batch["valid"], self.device
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


def _bert(model: str, batch: int, seq_len: int, min_len_frac: float,
          **overrides: Any) -> Workload:
    return Workload(
        model, "masked_lm", batch, seq_len,
        lambda cfg, b, t, frac: mlm_batch(b, t, cfg.vocab_size, frac),
        lambda zoo, **kw: TorchBertStep(zoo.model.config, zoo.host_batch, zoo.task.mask_rate,
                                        **kw), overrides, min_len_frac)


WORKLOADS = {  # transformer and bert: the tiny presets reshaped; sources and targets of length T
    "transformer": Workload(
        "transformer_tiny", "seq2seq", 32, 64,
        lambda cfg, b, t, frac: seq2seq_batch(b, t, t, cfg.vocab_size, frac),
        lambda zoo, **kw: TorchSeq2SeqStep(zoo.model.config, zoo.host_batch,
                                           zoo.task.label_smoothing, **kw),
        dict(emb_dim=256, num_heads=4, num_encoder_layers=3, num_decoder_layers=3, mlp_dim=1024,
             vocab_size=64, label_smoothing=0.1), 0.75, tokens=lambda b, t: 2 * b * t),
    "bert": _bert("bert_tiny", 32, 128, 0.75, emb_dim=256, num_heads=4, num_layers=4,
                  mlp_dim=1024, vocab_size=8192, mask_token_id=103),
    "bert_base": _bert("bert_base", 8, 512, 1.0)}


if __name__ == "__main__":
    raise SystemExit("transformer_step holds workloads; run them with "
                     "python -m benchmarks.train_step --workload transformer bert")
