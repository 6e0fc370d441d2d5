"""seq2seq_lstm_bahdanau on zoo_num2words/en_fr (English number words -> French), characters.

bidirectional LSTM encoder, LSTM decoder with Bahdanau (additive) attention (Bahdanau et al. 2015).

    python -m experiments.train --config experiments/configs/seq2seq_lstm_bahdanau.py --workdir workdirs/seq2seq_lstm_bahdanau
    python -m experiments.evaluate --workdir workdirs/seq2seq_lstm_bahdanau   # exact match, BLEU on test

`get_config("runlocal")` shrinks everything onto the synthetic reverse task.
"""
from experiments.configs._seq2seq import seq2seq_config


def get_config(arg: str | None = None):
    return seq2seq_config("seq2seq_lstm_bahdanau", arg)
