"""gpt_tiny on the embedded English corpus with a SentencePiece vocabulary instead of bytes.

    python -m experiments.train --config experiments/configs/gpt_tiny_spm.py --workdir /tmp/spm

A 2,048-piece unigram model is trained on zoo_text's train split (a few seconds, then cached in
the data dir) and saved in the workdir as tokenizer.model, which experiments.generate uses. The
final report gives the validation loss per token and per UTF-8 byte, the number to compare with
the byte-level gpt_tiny.py. Its window of 256 pieces covers about 3 times the text of 256 bytes.
`get_config("runlocal")` shrinks everything for a smoke test.
"""
from experiments.configs import gpt_tiny


def get_config(arg: str | None = None):
    config = gpt_tiny.get_config(arg)  # the byte model's run, with only the vocabulary changed
    config.unlock()
    config.update(tokenizer="sentencepiece", spm_model_type="unigram",
                  vocab_size=2048)  # = the SentencePiece model's pieces (spm_vocab_size unset)
    config.lock()
    return config
