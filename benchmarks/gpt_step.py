"""GPT workloads: the zoo's causal-LM step and the same model in PyTorch (pre-LN, fused qkv, SDPA
causal attention, tanh-GELU, tied output). Run them with `python -m benchmarks.train_step
--workload gpt_tiny` (or gpt2_small). FLOPs per step count matmuls only
(`zoo.models.gpt.train_flops`): gpt_tiny at B=16, T=256 runs 91.8 GFLOP per step.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from benchmarks.harness import TorchSide, Workload, lm_batch, lm_inputs, lm_loss


def build_torch_gpt(cfg: Any):
    import torch
    import torch.nn.functional as F
    from torch import nn

    D, N, L = cfg.emb_dim, cfg.num_heads, cfg.num_layers

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_attn, self.ln_mlp = nn.LayerNorm(D, eps=1e-5), nn.LayerNorm(D, eps=1e-5)
            self.qkv = nn.Linear(D, 3 * D)  # output features ordered (3, N, H), as the zoo's
            self.out, self.fc, self.proj = (nn.Linear(D, D), nn.Linear(D, cfg.mlp_dim),
                                            nn.Linear(cfg.mlp_dim, D))
            for lin, std in ((self.qkv, 0.02), (self.fc, 0.02), (self.out, 0.02 / math.sqrt(2 * L)),
                             (self.proj, 0.02 / math.sqrt(2 * L))):
                nn.init.normal_(lin.weight, std=std)
                nn.init.zeros_(lin.bias)

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
            self.blocks = nn.Sequential(*(Block() for _ in range(L)))
            self.ln_f = nn.LayerNorm(D, eps=1e-5)
            nn.init.normal_(self.wte.weight, std=0.02)
            nn.init.normal_(self.wpe, std=0.01)

        def forward(self, tokens):
            x = self.blocks(self.wte(tokens) + self.wpe[:tokens.shape[1]])
            return F.linear(self.ln_f(x), self.wte.weight)  # tied output

    return GPT()


class TorchGPTStep(TorchSide):
    """`build_torch_gpt(cfg)`'s train step on `batch`; `nanogpt=True` (gpt2_small):
    nanoGPT's, the vocabulary padded to a multiple of 128 and the mean loss over B*T."""

    def __init__(self, cfg: Any, batch: dict[str, Any], nanogpt: bool = False, **kwargs: Any):
        from zoo.nn.vocab_head import PAD_MULTIPLE, padded_size  # jax: imported once it runs

        self.vocab_size = padded_size(cfg.vocab_size, PAD_MULTIPLE) if nanogpt else cfg.vocab_size
        super().__init__(
            lambda: build_torch_gpt(dataclasses.replace(cfg, vocab_size=self.vocab_size)),
            lm_loss, batch, (lambda b: lm_inputs(b)[:2]) if nanogpt else lm_inputs, **kwargs)


def gpt_workload(model: str, batch: int, seq_len: int, nanogpt: bool) -> Workload:
    return Workload(
        model, "causal_lm", batch, seq_len, lambda cfg, b, t, _: lm_batch(b, t, cfg.vocab_size),
        lambda zoo, **kw: TorchGPTStep(zoo.model.config, zoo.host_batch, nanogpt, **kw))


WORKLOADS = {"gpt_tiny": gpt_workload("gpt_tiny", 16, 256, nanogpt=False),
             "gpt2_small": gpt_workload("gpt2_small", 8, 1024, nanogpt=True)}


if __name__ == "__main__":
    raise SystemExit("gpt_step holds workloads; run them with "
                     "python -m benchmarks.train_step --workload gpt_tiny")
