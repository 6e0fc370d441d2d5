"""Short runs of the recurrent configs through the shared loop beat their held-out baselines."""
import os

import pytest

from experiments.config_check import load_config
from zoo.train.loop import train_and_evaluate

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "experiments", "configs")


def short_run(name: str, tmp_path, **overrides):
    config = load_config(os.path.join(CONFIGS, name))
    config.unlock()
    config.update(eval_every_steps=10_000, checkpoint_every_steps=10_000, log_every_steps=50,
                  **overrides)
    config.lock()
    return train_and_evaluate(config, str(tmp_path))


@pytest.mark.slow
def test_tagger_beats_the_majority_tag_on_held_out_files(tmp_path):
    summary = short_run("bilstm_tag.py", tmp_path, num_train_steps=60, per_device_batch_size=16,
                        hidden_size=32, emb_dim=16, seq_len=64, num_eval_batches=20)
    majority = summary["baselines"]["majority_accuracy"]
    assert summary["eval"]["accuracy"] > majority + 0.2, (summary["eval"], majority)


@pytest.mark.slow
def test_classifier_beats_the_majority_class_on_held_out_docstrings(tmp_path):
    summary = short_run("lstm_classify.py", tmp_path, num_train_steps=120,
                        per_device_batch_size=16, hidden_size=64, emb_dim=16, seq_len=96,
                        num_eval_batches=30)
    majority = summary["baselines"]["majority_accuracy"]
    assert summary["eval"]["accuracy"] > 1.5 * majority, (summary["eval"], majority)
