"""The run config is three sections (train, model, task) that share no name."""
import dataclasses

import ml_collections
import pytest

from zoo import registry
from zoo.train.config import base_config, model_overrides, run_sections, task_overrides


def test_task_settings_are_config_fields_with_the_presets_defaults():
    assert base_config("transformer_tiny").label_smoothing == 0.1
    assert base_config("seq2seq_lstm").label_smoothing == 0.0
    config = base_config("bert_tiny", mask_rate=0.3)
    assert task_overrides(config) == {"mask_rate": 0.3}
    assert "mask_rate" not in model_overrides(config)


@dataclasses.dataclass(frozen=True)
class _ClashingConfig:
    vocab_size: int = 8
    seed: int = 0  # also a training field


def test_a_name_in_two_sections_is_an_error():
    registry.register_model("_clash_test", _ClashingConfig, object, {}, task="causal_lm")
    try:
        with pytest.raises(ValueError, match="'seed' is defined by both the train and the model"):
            run_sections("_clash_test")
    finally:
        registry._REGISTRY.pop("_clash_test")


def test_old_run_configs_keep_their_compute_dtype():
    """A run config written before `dtype` became `compute_dtype` still selects bf16."""
    old = ml_collections.ConfigDict({**base_config("gpt_tiny").to_dict(), "dtype": "bfloat16"})
    del old["compute_dtype"]
    assert model_overrides(old)["compute_dtype"] == "bfloat16"
