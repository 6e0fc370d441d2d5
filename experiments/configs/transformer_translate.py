"""transformer_tiny on zoo_num2words/en_fr: numbers written in English -> French, characters.

    python -m experiments.train --config experiments/configs/transformer_translate.py \
        --workdir workdirs/transformer_translate
    python -m experiments.evaluate --workdir workdirs/transformer_translate   # exact match, BLEU

The paper's recipe at a small size: post-LN encoder-decoder, shared embeddings, label smoothing
0.1, Adam(0.9, 0.98, 1e-9) on the Noam schedule (`learning_rate` is its multiplier). Test
numbers never appear in training. `get_config("runlocal")` runs a few steps on a synthetic task.
"""
from experiments.configs._runlocal import runlocal, shrink
from zoo.train.config import base_config


def get_config(arg: str | None = None):
    config = base_config(
        "transformer_tiny",
        dataset="zoo_num2words/en_fr",
        eval_split="validation",
        seq_len=80,
        num_train_steps=1000,
        per_device_batch_size=64,
        schedule="rsqrt",
        learning_rate=1.0,
        warmup_steps=300,
        adam_b2=0.98,
        adam_eps=1e-9,
        weight_decay=0.0,
        dropout_rate=0.1,
        label_smoothing=0.1,
        eval_every_steps=500,
        checkpoint_every_steps=500,
        num_eval_batches=8,
        num_samples=3,
    )
    if runlocal(arg):
        shrink(config, dataset="zoo_synthetic_seq2seq/reverse", seq_len=24, emb_dim=32,
               mlp_dim=64, num_heads=2)
    return config
