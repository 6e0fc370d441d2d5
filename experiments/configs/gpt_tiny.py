"""gpt_tiny on the embedded English corpus (bytes): the main job, minutes on a 2-core CPU.

    python -m experiments.train --config experiments/configs/gpt_tiny.py --workdir /tmp/gpt_tiny

`get_config("runlocal")` shrinks everything for a smoke test.
"""
from experiments.configs._runlocal import runlocal, shrink
from zoo.train.config import base_config


def get_config(arg: str | None = None):
    config = base_config(
        "gpt_tiny",
        num_train_steps=450,
        per_device_batch_size=16,
        seq_len=256,
        learning_rate=2e-3,
        schedule="cosine",
        warmup_steps=40,
        dropout_rate=0.0,
        eval_every_steps=150,
        checkpoint_every_steps=150,
    )
    if runlocal(arg):
        shrink(config)
    return config
