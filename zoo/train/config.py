"""The run config: training fields shared by every experiment + the chosen model's fields + its
task's settings.

`base_config("gpt_tiny")` returns a locked `ml_collections.ConfigDict` holding every training
field (`zoo/train/defaults.py`), every field of the model's config dataclass (preset values) and
every run setting of the model's task (`zoo.tasks.base.setting` fields: label smoothing, masking
rate, ...), so any of them can be overridden from the command line (`--config.dropout_rate=0.0`).
The three sections share no name (`run_sections` checks it). `validate(config)`, run before
training starts, refuses an unknown key or an out-of-range value of any section with a
ConfigError that names the field, the value and the allowed range.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
from typing import Any, Callable

import ml_collections

from zoo.errors import ConfigError
from zoo.models import get_config, get_spec, list_models, model_config_fields
from zoo.registry import upgrade_fields
from zoo.tasks import get_task_settings
from zoo.train.defaults import TRAIN_DEFAULTS
from zoo.train.parallel import PARALLEL
from zoo.train.schedules import SCHEDULES


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
                "init_from", "coordinator_address"):
        config[key] = ml_collections.FieldReference(None, field_type=str)
    for key in ("num_processes", "process_id"):
        config[key] = ml_collections.FieldReference(None, field_type=int)
    config["spm_vocab_size"] = ml_collections.FieldReference(None, field_type=int)
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
    max_len = config.get("max_len")
    if "seq_len" not in overrides and _is_int(max_len) and 0 < max_len < config.seq_len:
        config.seq_len = max_len  # the default rows must fit the model's positions
    config.lock()
    return config


# The ranges `validate` holds the run config's numeric fields to (the task settings among them
# only for the models whose task has them).
_POSITIVE_INTS = ("num_train_steps", "per_device_batch_size", "grad_accum_steps", "seq_len",
                  "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
                  "keep_checkpoints", "loss_chunk_size")
_NON_NEGATIVE_INTS = ("warmup_steps", "num_eval_batches", "num_samples", "sample_length",
                      "sample_top_k", "data_workers", "data_prefetch")
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
_CHOICES = {"nonfinite_policy": ("stop", "skip"), "parallel": PARALLEL,
            "distributed": ("auto", "on", "off"), "allow_batch_change": (False, True)}


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
    if config.get("param_dtype") == "float16":
        raise ConfigError("config.param_dtype='float16' cannot train: AdamW's moments and "
                          "epsilon (1e-8) underflow in float16 and its updates turn NaN within "
                          "steps; keep param_dtype='float32' with compute_dtype='float16' (mixed "
                          "precision), or use 'bfloat16'.")
    if not (_is_int(config.seed) and 0 <= config.seed < 2**32):  # jax.random.key's range
        raise ConfigError(f"config.seed must be an integer in [0, 2**32); got {config.seed!r}.")
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
    _validate_processes(config)
    _validate_batching(config)
    validate_tokenizer(config)
    _validate_lengths(config)
    _validate_mesh(config)
    get_config(config.model, **model_overrides(config)).validate()  # ranges, then choices


# (model field, value) that forces a kernel only one platform has -> (that platform, its name,
# the fix). A config file is platform-free; the loop checks these where the run starts.
_AUTO_ATTENTION = ("leave it unset (each platform's fastest kernel) or set "
                   "--config.attention_implementation=xla")
_PLATFORM_KERNELS = {
    ("attention_implementation", "cudnn"): ("cuda", "an NVIDIA GPU", _AUTO_ATTENTION),
    ("attention_implementation", "pallas"): ("tpu", "a TPU", _AUTO_ATTENTION),
    ("rnn_implementation", "cudnn"): ("cuda", "an NVIDIA GPU",
                                      "set --config.rnn_implementation=scan"),
}


def check_platform(config: ml_collections.ConfigDict, platform: str) -> None:
    """ConfigError when the config forces a kernel `platform` (`zoo.nn.attention.
    current_platform()`: "cuda", "rocm", "tpu" or "cpu") does not have: cuDNN's off an NVIDIA
    GPU, Pallas's TPU flash attention off a TPU."""
    for (key, value), (needed, name, fix) in _PLATFORM_KERNELS.items():
        if config.get(key) == value and platform != needed:
            raise ConfigError(f"config.{key}={value!r} needs {name}, and JAX's platform here is "
                              f"{platform!r}; {fix}.")


def _validate_mesh(config: ml_collections.ConfigDict) -> None:
    """ConfigError for a malformed `mesh` or `logical_axis_rules` (whether the mesh fits the
    devices is checked when it is built)."""
    from zoo.train.mesh import check_mesh_axes
    from zoo.train.partitioning import axis_rules

    if "mesh" in config:
        mesh = (config.mesh.to_dict() if isinstance(config.mesh, ml_collections.ConfigDict)
                else config.mesh)
        if not isinstance(mesh, dict):
            raise ConfigError(f"config.mesh must be a dict of mesh axis sizes like "
                              f"{TRAIN_DEFAULTS['mesh']}; got {mesh!r}.")
        check_mesh_axes(mesh)
    if "logical_axis_rules" in config:
        axis_rules(config.logical_axis_rules)


# As zoo.data.pipelines.tokenizers and .sentencepiece_tokenizer name them (not imported here:
# the data pipelines import tensorflow_datasets, which a config file should not wait for).
TOKENIZER_NAMES = ("byte", "sentencepiece")
SPM_MODEL_TYPES = ("unigram", "bpe")
LM_TASKS = ("causal_lm", "bidirectional_lm", "masked_lm")  # what a SentencePiece model serves


def _validate_lengths(config: ml_collections.ConfigDict) -> None:
    """ConfigError for sizes that only fail once data meets the model: rows longer than the
    model's positions, byte ids past a language model's vocabulary, an empty sample prompt."""
    seq_len, max_len = config.seq_len, config.get("max_len")
    if _is_int(max_len) and max_len >= 1 and seq_len > max_len:  # max_len < 1: the model says
        raise ConfigError(f"config.seq_len={seq_len} exceeds the model's max_len={max_len} "
                          f"(its positions); lower --config.seq_len or raise --config.max_len.")
    task = get_spec(config.model).task
    byte_lm = task in LM_TASKS and config.get("tokenizer", "byte") == "byte"
    if byte_lm and _is_int(config.vocab_size) and config.vocab_size < 256:
        raise ConfigError(f"config.vocab_size={config.vocab_size} is below the 256 byte ids of "
                          "tokenizer='byte'; set --config.vocab_size=256 or more, or use "
                          "--config.tokenizer=sentencepiece for a smaller vocabulary.")
    if task == "causal_lm" and config.get("num_samples", 0) and not config.get("sample_prompt"):
        raise ConfigError("config.sample_prompt is empty, and the run's samples continue it; "
                          "give it some text, or set --config.num_samples=0.")


def validate_tokenizer(config: ml_collections.ConfigDict) -> None:
    """ConfigError unless the tokenizer fields name a tokenizer the model's task reads and a
    SentencePiece vocabulary fits the model: its ids must have embedding rows (spm_vocab_size
    <= vocab_size) and must not include a masked LM's [MASK] id."""
    name = config.get("tokenizer", "byte")
    if name not in TOKENIZER_NAMES:
        raise ConfigError(f"config.tokenizer must be one of {', '.join(map(repr, TOKENIZER_NAMES))}"
                          f"; got {name!r}.")
    if name != "sentencepiece":
        return
    task = get_spec(config.model).task
    if task not in LM_TASKS:
        raise ConfigError(f"config.tokenizer='sentencepiece' serves the language-model tasks "
                          f"({', '.join(LM_TASKS)}); model {config.model!r} is a {task} model, "
                          "which reads bytes or characters: set --config.tokenizer=byte.")
    if config.spm_model_type not in SPM_MODEL_TYPES:
        raise ConfigError(f"config.spm_model_type must be one of "
                          f"{', '.join(map(repr, SPM_MODEL_TYPES))}; got {config.spm_model_type!r}.")
    pieces, vocab_size = config.spm_vocab_size, config.vocab_size
    if pieces is None:
        pieces = vocab_size
    elif not (_is_int(pieces) and pieces > 0):
        raise ConfigError(f"config.spm_vocab_size must be an integer > 0 or None (the model's "
                          f"vocab_size); got {pieces!r}.")
    if _is_int(vocab_size) and pieces > vocab_size:
        raise ConfigError(f"config.spm_vocab_size={pieces} exceeds the model's vocab_size="
                          f"{vocab_size}, so some token ids would have no embedding; set "
                          f"--config.vocab_size={pieces}, or leave spm_vocab_size unset to train "
                          "vocab_size pieces.")
    mask = config.get("mask_token_id")
    if task == "masked_lm" and _is_int(mask) and mask < pieces:
        raise ConfigError(f"config.mask_token_id={mask} is one of the {pieces} SentencePiece ids; "
                          f"keep [MASK] out of the vocabulary, e.g. --config.spm_vocab_size={mask} "
                          "(the ids below it).")


def _validate_processes(config: ml_collections.ConfigDict) -> None:
    """The multi-process fields: each in range, and together consistent."""
    count, index = config.get("num_processes"), config.get("process_id")
    if count is not None and not (_is_int(count) and count >= 1):
        raise ConfigError(f"config.num_processes must be an integer >= 1; got {count!r}.")
    if index is not None and not (_is_int(index) and index >= 0):
        raise ConfigError(f"config.process_id must be an integer >= 0; got {index!r}.")
    if count is not None and index is not None and index >= count:
        raise ConfigError(f"config.process_id={index} must be < num_processes={count} (ids "
                          "count from 0).")
    address = config.get("coordinator_address")
    if address is not None and ":" not in address:
        raise ConfigError(f"config.coordinator_address must be host:port (process 0's address, "
                          f"e.g. 10.0.0.1:1234); got {address!r}.")
    given = [k for k in ("coordinator_address", "num_processes", "process_id")
             if config.get(k) is not None]
    if config.get("distributed") == "off" and given:
        raise ConfigError(f"config.distributed='off' but {', '.join(given)} set; drop them or "
                          "set distributed='auto'.")


# The tasks whose pipelines pack documents / bucket examples by length.
PACKING_TASKS = ("causal_lm", "masked_lm", "seq2seq")
BUCKETING_TASKS = ("classification", "tagging", "seq2seq")


def _validate_batching(config: ml_collections.ConfigDict) -> None:
    """`packing` / `bucket_by_length`: booleans, for the tasks and models that take them."""
    spec = get_spec(config.model)
    for key in ("packing", "bucket_by_length"):
        if config.get(key, False) not in (False, True):
            raise ConfigError(f"config.{key} must be True or False; got {config[key]!r}.")
    if config.get("packing", False):
        takes_segments = "segment_ids" in inspect.signature(spec.module_cls.__call__).parameters
        if spec.task not in PACKING_TASKS or not takes_segments:
            raise ConfigError(f"config.packing=True needs a transformer trained on causal LM, "
                              f"masked LM or seq2seq (GPT, BERT, the encoder-decoder); model "
                              f"{config.model!r} ({spec.task}) does not take segment ids. Set "
                              f"packing=False.")
        if config.get("bucket_by_length", False):
            raise ConfigError("config.packing and config.bucket_by_length are two ways to cut "
                              "padding; set one of them.")
    if config.get("bucket_by_length", False) and spec.task not in BUCKETING_TASKS:
        raise ConfigError(f"config.bucket_by_length=True is for {', '.join(BUCKETING_TASKS)} "
                          f"batches; model {config.model!r} trains on {spec.task} windows, "
                          f"which are all full (use packing=True for documents).")


def model_overrides(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The model-config fields present in the run config (fields renamed since an older run
    config was written are read under their old names too)."""
    values = upgrade_fields(get_spec(config.model).config_cls, config.to_dict())
    return {k: values[k] for k in model_config_fields(config.model) if k in values}


def task_overrides(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The task settings present in the run config."""
    return {k: config[k] for k in get_task_settings(get_spec(config.model).task) if k in config}
