"""rnn_lm on the embedded English corpus (bytes), through the shared training step.

    python -m experiments.train --config experiments/configs/rnn_char.py --workdir /tmp/rnn_char

`get_config("runlocal")` shrinks everything for a smoke test.
"""
from experiments.configs._char_lm import char_lm_config


def get_config(arg: str | None = None):
    return char_lm_config("rnn_lm", arg)
