"""The run config: training fields shared by every experiment + the chosen model's fields + its
task's settings.

`base_config("gpt_tiny")` returns a locked `ml_collections.ConfigDict` holding every training
field below, every field of the model's config dataclass (preset values) and every run setting
of the model's task (`zoo.tasks.base.setting` fields: label smoothing, masking rate, ...), so any
of them can be overridden from the command line (`--config.dropout_rate=0.0`). The three
sections share no name (`run_sections` checks it). `validate(config)`, run before training
starts, refuses an unknown key or an out-of-range value of any section with a ConfigError that
names the field, the value and the allowed range.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable

import ml_collections

from zoo.errors import ConfigError
from zoo.models import get_config, get_spec, list_models, model_config_fields
from zoo.registry import upgrade_fields
from zoo.tasks import get_task_settings
from zoo.train.schedules import SCHEDULES

TRAIN_DEFAULTS: dict[str, Any] = dict(
    model="gpt_tiny",  # a name from zoo.list_models()
    seed=0,
    # Data.
    # The embedded corpus, or any TFDS dataset name ("lm1b", "ted_hrlr_translate/pt_to_en")
    # prepared as array_record in data_dir; runs never download.
    dataset="zoo_text",
    # None: $ZOO_DATA_DIR, else ~/.cache/zoo/tensorflow_datasets (embedded and TFDS datasets)
    data_dir=None,
    tokenizer="byte",
    eval_split="validation",
    seq_len=256,
    reverse_source=False,  # seq2seq: feed each source reversed (Sutskever et al. 2014)
    source_key=None,  # seq2seq on a real TFDS dataset: its source / target feature names
    target_key=None,
    text_key=None,  # the text feature (None: "text", or a classification dataset's usual one)
    label_key=None,  # classification: the label feature (None: "label")
    tags_key=None,  # tagging: the per-token tag feature
    init_from=None,  # a workdir whose latest checkpoint initialises the matching parameters
    # Optimisation.
    num_train_steps=1000,
    per_device_batch_size=16,
    grad_accum_steps=1,  # micro-batches per step (per_device_batch_size must divide by it)
    learning_rate=1e-3,
    schedule="cosine",  # cosine | linear | rsqrt (noam) | constant | wsd
    warmup_steps=100,
    weight_decay=0.1,
    grad_clip_norm=1.0,  # 0 disables clipping
    adam_b1=0.9,
    adam_b2=0.95,
    adam_eps=1e-8,
    # A step whose loss or gradient norm is NaN / inf never updates the parameters. "stop": the
    # run stops at the next log, eval or checkpoint naming that step; "skip": the update is
    # skipped and counted (metric "nonfinite_steps") and training goes on.
    nonfinite_policy="stop",
    # Parallelism: "auto" = pmap over all local devices when there are several, else jit.
    parallel="auto",
    # JAX's persistent compilation cache (zoo/jax_runtime.py); False: compile afresh this run.
    compilation_cache=True,
    # Bookkeeping.
    log_every_steps=10,
    eval_every_steps=200,
    num_eval_batches=20,
    checkpoint_every_steps=200,
    keep_checkpoints=3,
    # Samples printed at the end of training.
    num_samples=2,
    sample_prompt="The ",
    sample_length=200,
    sample_temperature=0.8,
    sample_top_k=0,
    sample_top_p=0.95,
)


def run_sections(model: str) -> dict[str, dict[str, Any]]:
    """The three sections a run config is made of, {field: default} each: "train"
    (TRAIN_DEFAULTS), "model" (the preset's config dataclass) and "task" (the model's task's
    run settings, with the preset's defaults). A name in two sections is an error: one
    `--config.<name>` must never set two things."""
    spec = get_spec(model)
    sections = {
        "train": dict(TRAIN_DEFAULTS, model=model),
        "model": dataclasses.asdict(get_config(model)),
        "task": {**get_task_settings(spec.task), **spec.task_settings},
    }
    names = [(name, section) for section, fields in sections.items() for name in fields]
    seen: dict[str, str] = {}
    for name, section in names:
        if name in seen:
            raise ConfigError(f"config field {name!r} is defined by both the {seen[name]} and "
                              f"the {section} section of model {model!r}; rename one of them.")
        seen[name] = section
    return sections


def base_config(model: str, **overrides: Any) -> ml_collections.ConfigDict:
    """Training defaults + the model preset's fields + its task's settings, with `overrides`,
    locked against typos."""
    sections = run_sections(model)
    config = ml_collections.ConfigDict()
    for fields in sections.values():
        for key, value in fields.items():
            config[key] = value
    # Fields that may be None need a declared type so overrides like --config.data_dir=/x work.
    for key in ("data_dir", "source_key", "target_key", "text_key", "label_key", "tags_key",
                "init_from"):
        config[key] = ml_collections.FieldReference(None, field_type=str)
    for key, field_type in (("attention_implementation", str), ("vocab_pad_multiple", int)):
        if key in config:
            config[key] = ml_collections.FieldReference(sections["model"][key],
                                                        field_type=field_type)
    unknown = sorted(set(overrides) - set(config.keys()))
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; valid keys: "
                          f"{', '.join(sorted(config))}.")
    for key, value in overrides.items():
        try:
            config[key] = value
        except (TypeError, ValueError):  # ml_collections keeps each field's type (ints may
            # become floats); a dict it cannot turn into a ConfigDict is a ValueError
            default = next(fields[key] for fields in sections.values() if key in fields)
            raise ConfigError(f"config.{key} must be of type {config.get_type(key).__name__} (default "
                              f"{default!r}); got {value!r} of type {type(value).__name__}."
                              ) from None
    config.lock()
    return config


# The ranges `validate` holds the run config's numeric fields to (the task settings among them
# only for the models whose task has them).
_POSITIVE_INTS = ("num_train_steps", "per_device_batch_size", "grad_accum_steps", "seq_len",
                  "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
                  "keep_checkpoints", "loss_chunk_size")
_NON_NEGATIVE_INTS = ("warmup_steps", "num_eval_batches", "num_samples", "sample_length",
                      "sample_top_k")
# field -> (test, the allowed range as the error states it); the value must also be finite.
_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "learning_rate": (lambda v: v > 0, "> 0"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "grad_clip_norm": (lambda v: v >= 0, ">= 0 (0 disables clipping)"),
    "adam_b1": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "adam_b2": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "adam_eps": (lambda v: v > 0, "> 0"),
    "sample_temperature": (lambda v: v >= 0, ">= 0 (0 samples greedily)"),
    "sample_top_p": (lambda v: 0 < v <= 1, "in (0, 1] (1 disables nucleus sampling)"),
    "label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "mask_rate": (lambda v: 0 <= v < 1, "in [0, 1)"),
}
_CHOICES = {"nonfinite_policy": ("stop", "skip"), "parallel": ("auto", "pmap", "jit")}


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first field of the run config that is unknown or out of
    range (the message gives the allowed range), and checks the model config it builds (the
    model's ranges and allowed values, `zoo.models.config_checks`)."""
    if config.model not in list_models():
        raise ConfigError(f"unknown model {config.model!r}; available models: "
                          f"{', '.join(list_models())}.")
    known = set().union(*(fields for fields in run_sections(config.model).values()))
    unknown = sorted(set(config.keys()) - known)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {unknown} for model {config.model!r}; valid keys: "
            f"{', '.join(sorted(known))}."
        )
    for key in _POSITIVE_INTS:
        if key in config and not (_is_int(config[key]) and config[key] > 0):
            raise ConfigError(f"config.{key} must be an integer > 0; got {config[key]!r}.")
    for key in _NON_NEGATIVE_INTS:
        if key in config and not (_is_int(config[key]) and config[key] >= 0):
            raise ConfigError(f"config.{key} must be an integer >= 0; got {config[key]!r}.")
    for key, (test, allowed) in _RANGES.items():
        if key in config and not (_is_real(config[key]) and test(config[key])):
            raise ConfigError(f"config.{key} must be {allowed}; got {config[key]!r}.")
    if config.per_device_batch_size % config.grad_accum_steps:
        raise ConfigError(
            f"per_device_batch_size={config.per_device_batch_size} does not divide into "
            f"grad_accum_steps={config.grad_accum_steps} micro-batches; make it a multiple."
        )
    schedule = config.schedule.strip().lower() if isinstance(config.schedule, str) else None
    if schedule not in SCHEDULES + ("noam",):
        raise ConfigError(f"config.schedule must be one of {', '.join(map(repr, SCHEDULES))} "
                          f"(or 'noam', an alias of 'rsqrt'); got {config.schedule!r}.")
    decaying = ("cosine", "linear", "wsd")  # create_schedule refuses a warm-up longer than these
    if schedule in decaying and config.warmup_steps > config.num_train_steps:
        raise ConfigError(f"config.warmup_steps={config.warmup_steps} exceeds num_train_steps="
                          f"{config.num_train_steps} for the decaying schedule {schedule!r}; "
                          "lower warmup_steps or raise num_train_steps.")
    for key, allowed in _CHOICES.items():
        if config[key] not in allowed:
            raise ConfigError(f"config.{key} must be one of {', '.join(map(repr, allowed))}; "
                              f"got {config[key]!r}.")
    get_config(config.model, **model_overrides(config)).validate()  # ranges, then choices


def model_overrides(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The model-config fields present in the run config (fields renamed since an older run
    config was written are read under their old names too)."""
    values = upgrade_fields(get_spec(config.model).config_cls, config.to_dict())
    return {k: values[k] for k in model_config_fields(config.model) if k in values}


def task_overrides(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The task settings present in the run config."""
    return {k: config[k] for k in get_task_settings(get_spec(config.model).task) if k in config}
