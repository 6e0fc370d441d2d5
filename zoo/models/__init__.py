"""Complete models, one file per family; importing this package registers every family's
presets, so the registry lookups are used from here:

    from zoo.models import create_model, get_config, get_spec, list_models
"""
from zoo.models import bert, elmo, gpt, rnn_classifier, rnn_lm, seq2seq, transformer  # noqa: F401
from zoo.models.checked import checked_apply, checked_jit
from zoo.registry import (ModelSpec, create_model, get_config, get_spec, list_models,
                          model_config_fields, saved_config_fields)

__all__ = ["ModelSpec", "create_model", "get_config", "get_spec", "list_models",
           "model_config_fields", "saved_config_fields", "checked_apply", "checked_jit"]
