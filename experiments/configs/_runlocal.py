"""The `runlocal` shrink shared by the config files: a few tiny steps for a smoke test."""

RUNLOCAL = dict(num_train_steps=4, per_device_batch_size=4, seq_len=32, warmup_steps=2,
                eval_every_steps=2, checkpoint_every_steps=2, num_eval_batches=2,
                sample_length=8, log_every_steps=1)


def shrink(config, **model_overrides):
    """Applies RUNLOCAL (and the config's own smaller model fields) to a locked config."""
    config.unlock()
    config.update({**RUNLOCAL, **model_overrides})
    config.lock()
    return config
