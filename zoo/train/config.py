"""The run config: training fields shared by every experiment + the chosen model's fields + its
task's settings.

`base_config("gpt_tiny")` returns a locked `ml_collections.ConfigDict` holding every training
field below, every field of the model's config dataclass (preset values) and every run setting
of the model's task (`zoo.tasks.base.setting` fields: label smoothing, masking rate, ...), so any
of them can be overridden from the command line (`--config.dropout_rate=0.0`). The three
sections share no name (`run_sections` checks it).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from zoo.models import get_config, get_spec, model_config_fields
from zoo.registry import upgrade_fields
from zoo.tasks import get_task_settings

TRAIN_DEFAULTS: dict[str, Any] = dict(
    model="gpt_tiny",  # a name from zoo.list_models()
    seed=0,
    # Data.
    dataset="zoo_text",  # the embedded corpus, or a TFDS dataset name prepared in data_dir
    data_dir=None,  # None: $ZOO_DATA_DIR or ~/.cache/zoo/tensorflow_datasets
    tokenizer="byte",
    eval_split="validation",
    seq_len=256,
    reverse_source=False,  # seq2seq: feed each source reversed (Sutskever et al. 2014)
    source_key=None,  # seq2seq on a real TFDS dataset: its source / target feature names
    target_key=None,
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
            raise ValueError(f"config field {name!r} is defined by both the {seen[name]} and the "
                             f"{section} section of model {model!r}; rename one of them.")
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
    for key in ("data_dir", "source_key", "target_key", "init_from"):
        config[key] = ml_collections.FieldReference(None, field_type=str)
    for key, field_type in (("attention_implementation", str), ("vocab_pad_multiple", int)):
        if key in config:
            config[key] = ml_collections.FieldReference(sections["model"][key],
                                                        field_type=field_type)
    unknown = sorted(set(overrides) - set(config.keys()))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; valid keys: {', '.join(sorted(config))}.")
    config.update(overrides)
    config.lock()
    return config


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming any key that is not a field of one of the run's sections."""
    known = set().union(*(fields for fields in run_sections(config.model).values()))
    unknown = sorted(set(config.keys()) - known)
    if unknown:
        raise ValueError(
            f"unknown config key(s) {unknown} for model {config.model!r}; valid keys: "
            f"{', '.join(sorted(known))}."
        )
    positive = ("num_train_steps", "per_device_batch_size", "grad_accum_steps", "seq_len",
                "log_every_steps", "eval_every_steps", "checkpoint_every_steps", "keep_checkpoints")
    for key in positive:
        if config[key] <= 0:
            raise ValueError(f"config.{key} must be > 0; got {config[key]}.")
    if config.per_device_batch_size % config.grad_accum_steps:
        raise ValueError(
            f"per_device_batch_size={config.per_device_batch_size} does not divide into "
            f"grad_accum_steps={config.grad_accum_steps} micro-batches; make it a multiple."
        )
    if config.nonfinite_policy not in ("stop", "skip"):
        raise ValueError(f"config.nonfinite_policy must be 'stop' or 'skip'; "
                         f"got {config.nonfinite_policy!r}.")
    if config.parallel not in ("auto", "pmap", "jit"):
        raise ValueError(f"config.parallel must be 'auto', 'pmap' or 'jit'; got {config.parallel!r}.")


def model_overrides(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The model-config fields present in the run config (fields renamed since an older run
    config was written are read under their old names too)."""
    values = upgrade_fields(get_spec(config.model).config_cls, config.to_dict())
    return {k: values[k] for k in model_config_fields(config.model) if k in values}


def task_overrides(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The task settings present in the run config."""
    return {k: config[k] for k in get_task_settings(get_spec(config.model).task) if k in config}
