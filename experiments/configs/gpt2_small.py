"""GPT-2 small (124M parameters at vocab 50257) on the embedded corpus, bytes as tokens.

Sized for one GPU (bf16 compute; attention picks cuDNN flash attention there by itself):
    python -m experiments.train --config experiments/configs/gpt2_small.py --workdir /tmp/gpt2s
(`--config.scan_layers=true` compiles the 12 blocks once: faster to start, slower per step.)

`get_config("runlocal")` keeps the architecture but shrinks widths and depth for a CPU smoke test.
"""
from experiments.configs._runlocal import runlocal
from zoo.train.config import base_config


def get_config(arg: str | None = None):
    config = base_config(
        "gpt2_small",
        num_train_steps=5000,
        per_device_batch_size=16,
        seq_len=1024,
        learning_rate=6e-4,
        schedule="cosine",
        warmup_steps=500,
        adam_b2=0.95,
        weight_decay=0.1,
        compute_dtype="bfloat16",
        eval_every_steps=500,
        checkpoint_every_steps=500,
    )
    if runlocal(arg):
        config.unlock()
        config.update(num_train_steps=4, per_device_batch_size=2, seq_len=32, warmup_steps=2,
                      emb_dim=64, num_heads=4, num_layers=2, mlp_dim=128, vocab_size=512,
                      compute_dtype="float32", eval_every_steps=2, checkpoint_every_steps=2,
                      num_eval_batches=2, sample_length=8, log_every_steps=1)
        config.lock()
    return config
