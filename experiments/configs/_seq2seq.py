"""Shared settings of the RNN seq2seq configs: zoo_num2words/en_fr, characters, B=64.

Numbers below 1,000,000 written in English -> French; validation during training, then
`python -m experiments.evaluate --workdir DIR` decodes the held-out test numbers.
"""
from experiments.configs._runlocal import runlocal, shrink
from zoo.train.config import base_config


def seq2seq_config(model: str, arg: str | None, **overrides):
    """`arg="runlocal"` shrinks everything onto the synthetic reverse task."""
    settings = dict(
        dataset="zoo_num2words/en_fr",
        eval_split="validation",
        seq_len=75,  # longest en_fr source 73 characters, target 73 + EOS
        num_train_steps=600,  # seq2seq_lstm_bahdanau: ~10 min on 2 cores, 100% test exact match
        per_device_batch_size=64,
        learning_rate=3e-3,
        schedule="cosine",
        warmup_steps=100,
        weight_decay=0.0,
        adam_b2=0.99,
        dropout_rate=0.1,
        eval_every_steps=200,
        checkpoint_every_steps=200,
        num_eval_batches=8,
        num_samples=3,
    )
    config = base_config(model, **{**settings, **overrides})
    if runlocal(arg):
        shrink(config, dataset="zoo_synthetic_seq2seq/reverse", seq_len=24, hidden_size=32,
               emb_dim=16)
    return config
