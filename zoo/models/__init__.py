"""Complete models, one file per family; importing a family registers its presets."""
from zoo.models import elmo, gpt, rnn_classifier, rnn_lm  # noqa: F401
