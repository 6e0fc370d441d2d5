"""The `runlocal` shrink shared by the config files: a few tiny steps for a smoke test.

Every config file's `get_config(arg)` takes `arg` = "runlocal" or nothing (`runlocal(arg)`
refuses anything else, so a typo never trains the full config by surprise).
"""
from zoo.errors import ConfigError

CONFIG_ARGS = ("runlocal",)

RUNLOCAL = dict(num_train_steps=4, per_device_batch_size=4, seq_len=32, warmup_steps=2,
                eval_every_steps=2, checkpoint_every_steps=2, num_eval_batches=2,
                sample_length=8, log_every_steps=1)


def shrink(config, **model_overrides):
    """Applies RUNLOCAL (and the config's own smaller model fields) to a locked config."""
    config.unlock()
    config.update({**RUNLOCAL, **model_overrides})
    config.lock()
    return config


def runlocal(arg: str | None) -> bool:
    """True for `arg` "runlocal", False for none; a ConfigError naming the valid arguments for
    any other."""
    if not arg:
        return False
    if arg not in CONFIG_ARGS:
        raise ConfigError(f"unknown config argument {arg!r}; the config files take "
                          f"{', '.join(map(repr, CONFIG_ARGS))} (a few tiny steps for a smoke "
                          "test) or no argument.")
    return True
