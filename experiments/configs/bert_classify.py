"""bert_tiny_classifier fine-tuned on zoo_docstrings (12 stdlib areas) from a bert_mlm run.

    python -m experiments.train --config experiments/configs/bert_mlm.py --workdir workdirs/bert_mlm
    python -m experiments.train --config experiments/configs/bert_classify.py \
        --workdir workdirs/bert_classify [--config.init_from=workdirs/bert_mlm]

The encoder (`bert` parameters) starts from the MLM checkpoint in `init_from`; the classifier
head is new. `--config.init_from=` (empty) trains from scratch, for comparison. Held-out
accuracy is printed next to the majority-class baseline. `get_config("runlocal")` shrinks
everything and trains from scratch.
"""
from experiments.configs._runlocal import runlocal, shrink
from zoo.train.config import base_config


def get_config(arg: str | None = None):
    config = base_config(
        "bert_tiny_classifier",
        dataset="zoo_docstrings",
        eval_split="test",
        num_classes=12,
        seq_len=128,
        num_train_steps=600,
        per_device_batch_size=32,
        learning_rate=1e-3,
        schedule="cosine",
        warmup_steps=60,
        weight_decay=0.01,
        dropout_rate=0.1,
        eval_every_steps=200,
        checkpoint_every_steps=200,
        num_eval_batches=100,
        num_samples=0,
    )
    config.init_from = "workdirs/bert_mlm"
    if runlocal(arg):
        shrink(config, emb_dim=32, mlp_dim=64)
        config.init_from = None
    return config
