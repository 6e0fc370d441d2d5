"""seq2seq_gru on zoo_num2words/en_fr (English number words -> French), characters.

GRU encoder-decoder without attention: the decoder starts from the encoder's final state.

    python -m experiments.train --config experiments/configs/seq2seq_gru.py --workdir workdirs/seq2seq_gru
    python -m experiments.evaluate --workdir workdirs/seq2seq_gru   # exact match, BLEU on test

`get_config("runlocal")` shrinks everything onto the synthetic reverse task.
"""
from experiments.configs._seq2seq import seq2seq_config


def get_config(arg: str | None = None):
    return seq2seq_config("seq2seq_gru", arg)
