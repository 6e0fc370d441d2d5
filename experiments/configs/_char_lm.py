"""Shared settings of the recurrent character-level LM configs (rnn_char, lstm_char, gru_char)."""
from experiments.configs._runlocal import runlocal, shrink
from zoo.train.config import base_config


def char_lm_config(model: str, arg: str | None, **overrides):
    """Bytes of the embedded corpus, T=128, B=32; `arg="runlocal"` shrinks everything."""
    settings = dict(
        num_train_steps=400,
        per_device_batch_size=32,
        seq_len=128,
        learning_rate=3e-3,
        schedule="cosine",
        warmup_steps=40,
        weight_decay=0.0,
        adam_b2=0.99,
        emb_dim=128,
        hidden_size=512,
        num_layers=2,
        dropout_rate=0.1,
        eval_every_steps=200,
        checkpoint_every_steps=200,
    )
    config = base_config(model, **{**settings, **overrides})
    if runlocal(arg):
        shrink(config, hidden_size=32, emb_dim=16)
    return config
