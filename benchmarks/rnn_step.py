"""Recurrent LM workloads (`python -m benchmarks.train_step --workload lstm gru rnn_tanh`):
the zoo's scanned layers (`zoo.create_model("<cell>_lm")`), the same LM from Flax's own `nn.RNN`
cells (the "flax" side, also through the zoo's `jit_train_step`) and `nn.LSTM / nn.GRU /
nn.RNN` in PyTorch (AdamW without weight decay). On a GPU, `--variant
cudnn:rnn_implementation=cudnn` adds the zoo's cuDNN LSTM (float32 only).
"""
from __future__ import annotations

from typing import Any

from benchmarks.harness import TorchSide, Workload, ZooStep, lm_batch, lm_loss

TORCH_CLASSES = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN"}


def flax_rnn_lm(cfg: Any):
    """The zoo's RNN LM (config `cfg`) from Flax's own recurrent cells (`nn.RNN` over each
    cell); with `output_head=True` it returns the output layer as the zoo's LMs do."""
    import flax.linen as nn
    import jax.numpy as jnp

    from zoo.models.rnn_lm import OutputProjection

    cell = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell, "rnn_tanh": nn.SimpleCell}[cfg.cell]
    dtype = jnp.dtype(cfg.compute_dtype)

    class FlaxRNNLM(nn.Module):
        @nn.compact
        def __call__(self, tokens, *, train: bool = False, output_head: bool = False):
            x = nn.Embed(cfg.vocab_size, cfg.emb_dim, dtype=dtype)(tokens)  # (B, T, E)
            for _ in range(cfg.num_layers):
                x = nn.RNN(cell(cfg.hidden_size, dtype=dtype))(x)  # (B, T, H)
            head = OutputProjection(cfg.vocab_size, dtype)(x)
            return head if output_head else head.logits()  # (B, T, V) float32

    return FlaxRNNLM()


class TorchRNNStep(TorchSide):
    """An nn.LSTM / nn.GRU / nn.RNN language model's train step (`TorchSide`, no weight decay)."""

    def __init__(self, cfg: Any, batch: dict[str, Any], **kwargs: Any):
        from torch import nn

        class TorchRNNLM(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
                self.rnn = getattr(nn, TORCH_CLASSES[cfg.cell])(
                    cfg.emb_dim, cfg.hidden_size, num_layers=cfg.num_layers, batch_first=True)
                self.out = nn.Linear(cfg.hidden_size, cfg.vocab_size)

            def forward(self, tokens):
                return self.out(self.rnn(self.embed(tokens))[0])

        super().__init__(TorchRNNLM, lm_loss, batch, weight_decay=0.0, **kwargs)


WORKLOADS = {cell: Workload(
    model, "causal_lm", 32, 128, lambda cfg, b, t, _: lm_batch(b, t, cfg.vocab_size),
    lambda zoo, **kw: TorchRNNStep(zoo.model.config, zoo.host_batch, **kw),
    dict(vocab_size=256, emb_dim=512, hidden_size=512, num_layers=2), has_max_len=False,
    flax_side=lambda zoo: ZooStep(flax_rnn_lm(zoo.model.config), zoo.host_batch))
    for cell, model in {"lstm": "lstm_lm", "gru": "gru_lm", "rnn_tanh": "rnn_lm"}.items()}


if __name__ == "__main__":
    raise SystemExit("rnn_step holds workloads; run them with "
                     "python -m benchmarks.train_step --workload lstm gru rnn_tanh")
