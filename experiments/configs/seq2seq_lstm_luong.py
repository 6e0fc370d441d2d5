"""seq2seq_lstm_luong on zoo_num2words/en_fr (English number words -> French), characters.

LSTM encoder-decoder with Luong general attention and input feeding (Luong et al. 2015).

    python -m experiments.train --config experiments/configs/seq2seq_lstm_luong.py --workdir workdirs/seq2seq_lstm_luong
    python -m experiments.evaluate --workdir workdirs/seq2seq_lstm_luong   # exact match, BLEU on test

`get_config("runlocal")` shrinks everything onto the synthetic reverse task.
"""
from experiments.configs._seq2seq import seq2seq_config


def get_config(arg: str | None = None):
    return seq2seq_config("seq2seq_lstm_luong", arg)
