"""seq2seq_lstm on zoo_num2words/en_fr (English number words -> French), characters.

LSTM encoder-decoder without attention (Sutskever et al. 2014): the decoder starts from the encoder's final state.

    python -m experiments.train --config experiments/configs/seq2seq_lstm.py --workdir workdirs/seq2seq_lstm
    python -m experiments.evaluate --workdir workdirs/seq2seq_lstm   # exact match, BLEU on test

`get_config("runlocal")` shrinks everything onto the synthetic reverse task.
"""
from experiments.configs._seq2seq import seq2seq_config


def get_config(arg: str | None = None):
    return seq2seq_config("seq2seq_lstm", arg)
