"""Complete models, one file per family; importing a family registers its presets."""
from zoo.models import bert, elmo, gpt, rnn_classifier, rnn_lm, seq2seq, transformer  # noqa: F401
