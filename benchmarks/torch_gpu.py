"""PyTorch reference train steps for `benchmarks.mfu`: GPT-2 (nanoGPT's way) and BERT MLM.

    python -m benchmarks.mfu --torch both        # the zoo's steps and these, interleaved

They run on "cuda" when PyTorch sees a GPU, else on the CPU (the tests run them tiny there).
Each is the full training step as a PyTorch user would write it for speed on a GPU:

* bf16 autocast (`--dtype float32`: none; TF32 allowed for float32 matmuls on the GPU, as
  nanoGPT does), the loss computed inside the module that is compiled (nanoGPT's `forward`
  returns it), backward, `clip_grad_norm_(1.0)`, AdamW (`fused=True` on the GPU) with weight
  decay on the >= 2-D parameters, `zoo.train.optimizer.decay_mask`'s rule, and a constant
  learning rate (the update's cost does not depend on its value).
* Two sides of each model: eager, and `torch.compile(loss_module, dynamic=False)` (inductor's
  default mode, as nanoGPT's `compile=True`).

GPT (`TorchGPTStep`): `benchmarks.gpt_step.build_torch_gpt`, the zoo GPT's architecture
(pre-LN, fused qkv, `F.scaled_dot_product_attention(is_causal=True)`, which picks a fused
kernel such as FlashAttention on a GPU, tanh GELU, tied output), with the vocabulary padded to
a multiple of 128 as nanoGPT does (50257 -> 50304): the extra rows are never a target and only
make the logits matmul tensor-core friendly. Inputs and targets are the zoo side's random
tokens (`make_batch_np`); the loss is the mean cross entropy over all B*T positions.

BERT (`TorchBertStep`): `benchmarks.transformer_step.build_torch_bert` (word + position +
segment embeddings, LayerNorm, post-LN `nn.TransformerEncoderLayer`s with exact GELU, whose
attention runs `F.scaled_dot_product_attention` with the key padding mask, and the MLM head
Dense -> GELU -> LayerNorm -> tied decoder + bias at the chosen positions only, as the zoo's
masked_lm task does). Every step draws new masks on the device, the zoo task's way: round(15%)
of each row's real tokens (P = round(0.15 T) slots per row), 80% [MASK] / 10% random / 10% kept;
the loss is the weighted cross entropy over the chosen positions.

Each side has `run(n)` -> seconds per step (synchronizing the device before reading the clock),
`first_loss` (the loss of the first step, at the initial parameters: about ln(vocab)),
`compile_s` (the wall time of that first step: inductor's compile on the compiled side, CUDA and
cuBLAS start-up on the eager one) and `num_params`.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from benchmarks.gpt_step import OPT_CONFIG, build_torch_gpt, make_batch_np
from benchmarks.transformer_step import build_torch_bert

VOCAB_MULTIPLE = 128  # nanoGPT pads GPT-2's 50257 to 50304


def padded_vocab(vocab_size: int, multiple: int = VOCAB_MULTIPLE) -> int:
    """The vocabulary rounded up to a multiple of `multiple` (50257 -> 50304)."""
    return -(-vocab_size // multiple) * multiple


def torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TorchTrainStep:
    """One training step of `loss_module(*inputs())` -> scalar loss, eager or compiled.

    `inputs` is called every step (the MLM side draws its masks there, outside the compiled
    module, as the zoo's task does inside its jitted step).
    """

    def __init__(self, loss_module: Any, inputs: Any, device: str, dtype: str, compile: bool):
        import torch

        if dtype not in ("bfloat16", "float32"):
            raise ValueError(f"the PyTorch sides run bfloat16 autocast or float32; got {dtype}.")
        self.torch, self.device = torch, device
        if device == "cuda":  # nanoGPT's settings: TF32 for the float32 matmuls that remain
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.params = [p for p in loss_module.parameters() if p.requires_grad]
        self.num_params = sum(p.numel() for p in loss_module.parameters())
        self.opt = torch.optim.AdamW(
            [{"params": [p for p in self.params if p.ndim >= 2],
              "weight_decay": OPT_CONFIG.weight_decay},
             {"params": [p for p in self.params if p.ndim < 2], "weight_decay": 0.0}],
            lr=OPT_CONFIG.learning_rate * 0.5, betas=(OPT_CONFIG.adam_b1, OPT_CONFIG.adam_b2),
            eps=OPT_CONFIG.adam_eps, fused=True if device == "cuda" else None)
        if compile:
            # A fresh compile per side: dynamo caches per code object, and the same model at a
            # second batch size would otherwise be recompiled with dynamic shapes.
            torch.compiler.reset()
            loss_module = torch.compile(loss_module, dynamic=False)
        self.loss_module, self.inputs = loss_module, inputs
        self.autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
        t0 = time.perf_counter()
        self.first_loss = float(self._step())  # float() waits for the device
        self.compile_s = time.perf_counter() - t0

    def _step(self):
        self.opt.zero_grad(set_to_none=True)
        with self.autocast:
            loss = self.loss_module(*self.inputs())
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.params, OPT_CONFIG.grad_clip_norm)
        self.opt.step()
        return loss.detach()

    def run(self, n: int) -> float:
        """Seconds per step of `n` steps."""
        return time_steps(self.torch, self.device, self._step, n)


def time_steps(torch: Any, device: str, step: Any, n: int) -> float:
    """Seconds per call of `step` over `n` calls, the device synchronized before each clock."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    sync()
    return (time.perf_counter() - t0) / max(n, 1)


class TorchGPTStep(TorchTrainStep):
    """nanoGPT-style train step of the zoo GPT `cfg` (a `GPTConfig`) on B x T random tokens."""

    def __init__(self, cfg: Any, batch: int, seq_len: int, dtype: str = "bfloat16",
                 compile: bool = False):
        import torch
        import torch.nn.functional as F
        from torch import nn

        device = torch_device()
        self.vocab_size = padded_vocab(cfg.vocab_size)
        torch.manual_seed(0)
        model = build_torch_gpt(dataclasses.replace(cfg, vocab_size=self.vocab_size))

        class CausalLMLoss(nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, inputs, targets):  # (B, T) int64 each
                logits = self.model(inputs)  # (B, T, V padded)
                return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

        tokens = make_batch_np(batch, seq_len, cfg.vocab_size)  # the zoo side's tokens
        inputs = torch.from_numpy(tokens["inputs"]).long().to(device)
        targets = torch.from_numpy(tokens["targets"]).long().to(device)
        super().__init__(CausalLMLoss().to(device), lambda: (inputs, targets), device, dtype,
                         compile)


class TorchBertStep(TorchTrainStep):
    """BERT MLM train step of the zoo BERT `cfg` (a `BertConfig`, head "mlm") on `batch`
    (`transformer_step.mlm_batch`: "inputs" (B, T) int32, "weights" (B, T), 0 = padding)."""

    def __init__(self, cfg: Any, batch: dict[str, np.ndarray], dtype: str = "bfloat16",
                 compile: bool = False):
        import torch
        import torch.nn.functional as F
        from torch import nn

        device = torch_device()
        torch.manual_seed(0)
        model = build_torch_bert(cfg)

        class MaskedLMLoss(nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, corrupted, valid, positions, targets, weights):
                logits = self.model(corrupted, valid, positions)  # (B, P, V)
                token_loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                             reduction="none")  # (B * P,)
                return (token_loss * weights.flatten()).sum() / weights.sum().clamp_min(1.0)

        self.cfg, self.vocab_size = cfg, cfg.vocab_size
        self.tokens = torch.from_numpy(batch["inputs"]).long().to(device)  # (B, T)
        self.valid = torch.from_numpy(batch["weights"]).to(device) > 0  # (B, T)
        self.gen = torch.Generator(device).manual_seed(1)
        super().__init__(MaskedLMLoss().to(device), self.masked_batch, device, dtype, compile)

    def masked_batch(self):
        """`zoo.tasks.masked_lm.mask_tokens` with torch's RNG on the device ->
        (corrupted (B, T), valid (B, T), positions (B, P), targets (B, P), weights (B, P))."""
        t, cfg, tokens, valid = self.torch, self.cfg, self.tokens, self.valid
        budget = max(1, round(tokens.shape[1] * cfg.mask_rate))  # P
        lengths = valid.sum(1)
        count = t.where(lengths > 0, t.round(lengths * cfg.mask_rate).clamp_min(1), 0)
        scores = t.where(valid, t.rand(tokens.shape, generator=self.gen, device=self.device),
                         2.0)  # padding sorts last
        positions = t.topk(-scores, budget, dim=1).indices  # the P lowest scores
        weights = (t.arange(budget, device=self.device)[None, :] < count[:, None]).float()
        original = t.gather(tokens, 1, positions)
        kind = t.rand(positions.shape, generator=self.gen, device=self.device)
        random_tokens = t.randint(0, cfg.vocab_size, positions.shape, generator=self.gen,
                                  device=self.device)
        new = t.where(kind < 0.8, cfg.mask_token_id, t.where(kind < 0.9, random_tokens, original))
        new = t.where(weights > 0, new, original)
        return tokens.scatter(1, positions, new), valid, positions, original, weights
