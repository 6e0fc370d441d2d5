"""Run configs the end-to-end tests share: gpt_tiny's runlocal config on a smaller model."""
from experiments.configs import gpt_tiny

TINY_MODEL = dict(emb_dim=32, num_heads=2, num_layers=2, mlp_dim=64, max_len=32)


def tiny_config(**overrides):
    config = gpt_tiny.get_config("runlocal")
    config.unlock()
    config.update(TINY_MODEL)
    config.update(num_samples=0, num_eval_batches=1)
    config.update(overrides)
    config.lock()
    return config
