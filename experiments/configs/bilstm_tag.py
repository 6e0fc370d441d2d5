"""bilstm_tagger on zoo_code_tags: the tokenize token type of every character of Python source.

    python -m experiments.train --config experiments/configs/bilstm_tag.py --workdir /tmp/tag

Tags: OTHER, NAME, KEYWORD, OP, NUMBER, STRING, COMMENT. Test lines come from files never seen
in training; per-character accuracy is printed next to the majority-tag baseline.
`get_config("runlocal")` shrinks everything.
"""
from experiments.configs._runlocal import runlocal, shrink
from zoo.train.config import base_config


def get_config(arg: str | None = None):
    config = base_config(
        "bilstm_tagger",
        dataset="zoo_code_tags",
        eval_split="test",
        num_classes=7,
        seq_len=128,
        num_train_steps=300,
        per_device_batch_size=32,
        learning_rate=3e-3,
        warmup_steps=20,
        weight_decay=0.01,
        emb_dim=32,
        hidden_size=128,
        num_layers=2,
        dropout_rate=0.1,
        eval_every_steps=100,
        checkpoint_every_steps=100,
        num_eval_batches=50,
        num_samples=0,
    )
    if runlocal(arg):
        shrink(config, hidden_size=16, emb_dim=8)
    return config
