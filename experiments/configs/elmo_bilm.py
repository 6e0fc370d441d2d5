"""elmo_bilm: forward + backward LSTM LMs sharing embedding and softmax, on the embedded corpus.

    python -m experiments.train --config experiments/configs/elmo_bilm.py --workdir /tmp/elmo

The trained biLM's params load into `zoo.models.elmo.ELMoEmbedder` (under "bilm") to give
contextual embeddings. `get_config("runlocal")` shrinks everything for a smoke test.
"""
from experiments.configs._char_lm import char_lm_config
from experiments.configs._runlocal import runlocal


def get_config(arg: str | None = None):
    config = char_lm_config("elmo_bilm", arg, emb_dim=256, hidden_size=256, num_samples=0)
    if runlocal(arg):
        config.unlock()
        config.emb_dim = config.hidden_size  # layer 0 is [x; x]
        config.lock()
    return config
