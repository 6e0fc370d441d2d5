"""lstm_classifier on zoo_docstrings: which stdlib area a docstring comes from (12 classes).

    python -m experiments.train --config experiments/configs/lstm_classify.py --workdir /tmp/cls

Bytes in, a bidirectional LSTM, the final states of both directions pooled. Accuracy on the
held-out test split is printed next to the majority-class baseline. `--config.model=
gru_classifier` trains the GRU version. `get_config("runlocal")` shrinks everything.
"""
from experiments.configs._runlocal import runlocal, shrink
from zoo.train.config import base_config


def get_config(arg: str | None = None):
    config = base_config(
        "lstm_classifier",
        dataset="zoo_docstrings",
        eval_split="test",
        num_classes=12,
        seq_len=256,
        num_train_steps=600,
        per_device_batch_size=32,
        learning_rate=3e-3,
        warmup_steps=30,
        weight_decay=0.01,
        emb_dim=64,
        hidden_size=256,
        bidirectional=True,
        pooling="max",
        dropout_rate=0.2,
        eval_every_steps=200,
        checkpoint_every_steps=200,
        num_eval_batches=100,
        num_samples=0,
    )
    if runlocal(arg):
        shrink(config, hidden_size=16, emb_dim=8)
    return config
