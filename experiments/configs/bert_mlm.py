"""bert_tiny masked-LM pretraining on the embedded English corpus (bytes; [MASK] = 256).

    python -m experiments.train --config experiments/configs/bert_mlm.py --workdir workdirs/bert_mlm

15% of the bytes are chosen (80% -> [MASK], 10% random, 10% kept) and predicted; the eval
loss is printed next to the corpus's unigram entropy. `experiments/configs/bert_classify.py`
fine-tunes from this workdir. `get_config("runlocal")` shrinks everything.
"""
from experiments.configs._runlocal import runlocal, shrink
from zoo.train.config import base_config


def get_config(arg: str | None = None):
    config = base_config(
        "bert_tiny",
        dataset="zoo_text",
        seq_len=128,
        num_train_steps=1500,
        per_device_batch_size=32,
        learning_rate=2e-3,
        schedule="cosine",
        warmup_steps=100,
        weight_decay=0.01,
        dropout_rate=0.1,
        eval_every_steps=500,
        checkpoint_every_steps=500,
        num_samples=0,
    )
    if runlocal(arg):
        shrink(config, emb_dim=32, mlp_dim=64)
    return config
