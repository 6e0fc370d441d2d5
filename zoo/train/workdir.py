"""A workdir: what a run leaves behind and how a trained model comes back out of it.

    DIR/checkpoints/<step>/   orbax checkpoints: state + metadata (the run config, the model
                              config, the tokenizer name, the data position)
    DIR/vocab.json            a vocabulary built from the data (seq2seq), when there is one
    DIR/tokenizer.model       the SentencePiece model a run trained (tokenizer="sentencepiece")
    DIR/metrics.jsonl, DIR/tensorboard/

`load_trained(workdir)` rebuilds the model from the saved run config and restores its
parameters; the loop (resume, warm start), `experiments.generate / evaluate / translate` and
`zoo.eval.translator` all go through it. `load_tokenizer(workdir, meta)` gives the tokenizer the
model was trained with: DIR/tokenizer.model, else the one the checkpoint names (workdirs
written before SentencePiece existed name "byte").
"""
from __future__ import annotations

import dataclasses
import numbers
import os
from typing import Any

import jax
import ml_collections

from zoo.errors import CheckpointError, ConfigError, ZooError
from zoo.models import ModelSpec, get_config, get_spec, saved_config_fields
from zoo.tasks import Task, get_task
from zoo.train.checkpoint import Checkpointer, DamagedCheckpoint
from zoo.train.config import model_overrides, task_overrides
from zoo.train.optimizer import create_optimizer, learning_rate_schedule
from zoo.train.state import create_train_state

VOCAB_FILE = "vocab.json"  # a data-built vocabulary (seq2seq), saved next to the checkpoints
TOKENIZER_FILE = "tokenizer.model"  # a trained SentencePiece model, saved next to them too


def build_model(config: ml_collections.ConfigDict) -> tuple[ModelSpec, Any, Any, Task]:
    """(registry spec, model config dataclass, flax module, task) for the run config."""
    spec = get_spec(config.model)
    model_config = get_config(config.model, **model_overrides(config))
    task = get_task(spec.task, model_config, **task_overrides(config))
    return spec, model_config, spec.module_cls(model_config), task


def create_state(model, task: Task, tx, model_config, seq_len: int, rng: jax.Array):
    """The run's fresh train state: params initialised on the task's example inputs."""
    return create_train_state(model, tx, task.example_inputs(model_config, seq_len), rng)


def run_meta(config: ml_collections.ConfigDict, model_config: Any) -> dict[str, Any]:
    """The metadata saved with every checkpoint."""
    return {"model": config.model, "model_config": dataclasses.asdict(model_config),
            "tokenizer": config.tokenizer, "config": config.to_dict()}


# Run fields a resume must keep: the data position counts batches of this shape, and tokens
# of this tokenizer (the SentencePiece fields count only where tokenizer="sentencepiece").
RESUME_FIELDS = ("seq_len", "tokenizer", "packing", "bucket_by_length")
SENTENCEPIECE_FIELDS = ("spm_model_type", "spm_vocab_size")


def check_record(saved: dict[str, Any]) -> None:
    """DamagedCheckpoint unless a checkpoint's metadata is the record the loop writes:
    `run_meta` (model name, model config, run config) and the integer data position."""
    shapes = {"model": str, "model_config": dict, "config": dict, "data_position": int}
    wrong = [k for k, kind in shapes.items() if not isinstance(saved.get(k), kind)]
    if not isinstance(saved.get("nonfinite_steps", 0), int):
        wrong.append("nonfinite_steps")
    if wrong:
        raise DamagedCheckpoint(f"its metadata is not a run record (missing or malformed: "
                                f"{', '.join(wrong)})")


# Model fields that choose how the same parameters are computed (a kernel, rematerialisation,
# unrolling): a run may resume with other values, e.g. a cuDNN run from a GPU on a CPU.
KERNEL_FIELDS = ("attention_implementation", "rnn_implementation", "remat", "scan_unroll",
                 "unroll")


def check_same_model(saved: dict[str, Any], meta: dict[str, Any], directory: str) -> None:
    """Raises CheckpointError when a checkpoint's model, or a run field the resumed data
    position depends on, differs from this run's (DamagedCheckpoint when its record is
    malformed)."""
    check_record(saved)
    if saved.get("model") == meta["model"]:
        try:
            model_config = saved_config_fields(meta["model"], saved["model_config"])
        except (ZooError, ValueError, TypeError) as e:
            raise DamagedCheckpoint(f"its model config is malformed ({type(e).__name__}: "
                                    f"{_first_line(e)})") from e
        saved = {**saved, "model_config": model_config}
    fix = "Use a fresh --workdir, or the config that wrote this checkpoint."
    if saved.get("model") != meta["model"]:
        raise CheckpointError(f"the checkpoint in {directory} belongs to model "
                              f"{saved.get('model')!r} but this run builds {meta['model']!r}. {fix}")
    diff = {k: (saved.get("model_config", {}).get(k), v)
            for k, v in meta["model_config"].items()
            if k not in KERNEL_FIELDS and saved.get("model_config", {}).get(k) != v}
    if diff:
        raise CheckpointError(f"the checkpoint in {directory} was written by a {meta['model']!r} "
                              f"with other settings (saved vs now: {diff}). {fix}")
    saved_run, run = saved.get("config", {}), meta.get("config", {})
    fields = RESUME_FIELDS + (SENTENCEPIECE_FIELDS if run.get("tokenizer") == "sentencepiece"
                              else ())
    diff = {k: (saved_run[k], run.get(k)) for k in fields
            if k in saved_run and saved_run[k] != run.get(k)}
    if diff:
        raise CheckpointError(f"the checkpoint in {directory} was trained with other data shapes "
                              f"(saved vs now: {diff}), so its data position would point "
                              f"elsewhere. {fix}")


def resume_position(saved: dict[str, Any], global_batch: int, allow_change: bool,
                    directory: str) -> tuple[int, str | None]:
    """(data position for a run of `global_batch`, a note when it was rescaled) from a
    checkpoint's record. The position counts global batches of the checkpoint's size
    (`saved["global_batch"]`; records older than that field are taken as unchanged). Another
    size is refused with CheckpointError unless `allow_change`, which keeps the number of
    examples seen (rounded up to whole batches, so none is seen twice)."""
    position, before = int(saved["data_position"]), saved.get("global_batch")
    if not isinstance(before, int) or before == global_batch:
        return position, None
    if not allow_change:
        raise CheckpointError(
            f"the checkpoint in {directory} was trained with a global batch of {before} but "
            f"this run's is {global_batch} (per_device_batch_size x device count), so its data "
            f"position ({position} batches) and the optimisation would change; run on the same "
            "devices with the same per_device_batch_size, or pass "
            "--config.allow_batch_change=True to go on with the new batch.")
    rescaled = -(-position * before // global_batch)
    return rescaled, (f"global batch changed from {before} to {global_batch}: data position "
                      f"{position} -> {rescaled} batches ({position * before} examples seen; the "
                      "learning-rate schedule still counts steps)")


def abstract_train_state(config: ml_collections.ConfigDict):
    """(model, abstract checkpoint target {step, params, opt_state, rng}) of a run config."""
    spec, model_config, model, task = build_model(config)
    schedule = learning_rate_schedule(config, d_model=model_config.emb_dim)
    abstract = jax.eval_shape(lambda: create_state(model, task, create_optimizer(config, schedule),
                                                   model_config, config.seq_len,
                                                   jax.random.key(0)))
    return spec, model, {"step": abstract.step, "params": abstract.params,
                         "opt_state": abstract.opt_state,
                         "rng": jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))}


def load_trained(workdir: str, step: int | None = None):
    """(registry spec, model, params, meta) from a workdir's latest intact (or given)
    checkpoint; meta["step"] is the step restored. Only reads: nothing in `workdir` is created
    or moved. CheckpointError when there is no checkpoint or the given one is damaged."""
    if not isinstance(workdir, (str, os.PathLike)):
        raise ConfigError(f"workdir must be a path (str); got {workdir!r}.")
    if step is not None and (not isinstance(step, numbers.Integral) or isinstance(step, bool)):
        raise ConfigError(f"step must be an int (or None: the latest intact checkpoint); got "
                          f"{step!r} of type {type(step).__name__}.")
    ckpt = Checkpointer(os.fspath(workdir), read_only=True)
    try:
        steps = ckpt.all_steps()
        if not steps:
            raise CheckpointError(
                f"no checkpoint in {ckpt.directory}; train first with "
                f"python -m experiments.train --config ... --workdir {workdir}")
        if step is not None and step not in steps:
            raise CheckpointError(f"no checkpoint {step} in {ckpt.directory}; it holds steps "
                                  f"{', '.join(map(str, sorted(steps)))}.")
        if step is not None:
            try:
                spec, model, target = _build(ckpt.restore_meta(step))
                restored, meta = ckpt.restore(step, target)
            except DamagedCheckpoint as e:
                raise CheckpointError(f"checkpoint {step} in {ckpt.directory} is damaged: {e}; "
                                      "pass another --step or none for the newest intact one.")
        else:  # the model of the newest readable record; its newest intact checkpoint
            record, (spec, model, target) = _newest_record(ckpt, steps)
            found = ckpt.restore_latest_intact(
                target, check_meta=lambda saved: _check_same_run(saved, record, model))
            if found is None:
                raise CheckpointError(f"no checkpoint in {ckpt.directory}.")
            step, restored, meta = found
    finally:
        ckpt.close()
    return spec, model, restored["params"], {**meta, "step": step}


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else ""


def _build(saved: dict[str, Any]):
    """(spec, model, abstract target) of a checkpoint's record; DamagedCheckpoint when it is
    malformed or its run config does not build a model."""
    check_record(saved)
    try:
        return abstract_train_state(ml_collections.ConfigDict(saved["config"]))
    except (ZooError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise DamagedCheckpoint(f"its run config does not build a model ({type(e).__name__}: "
                                f"{_first_line(e)})") from e


def _newest_record(ckpt: Checkpointer, steps: list[int]):
    """(record, (spec, model, target)) of the newest checkpoint whose record builds a model."""
    for step in steps:
        try:
            record = ckpt.restore_meta(step)
            return record, _build(record)
        except DamagedCheckpoint:
            continue
    raise CheckpointError(f"every checkpoint in {ckpt.directory} is damaged (steps "
                          f"{', '.join(map(str, steps))}); none can be loaded.")


def _check_same_run(saved: dict[str, Any], record: dict[str, Any], model: Any) -> None:
    """DamagedCheckpoint unless `saved` (an older step's record) builds the model that
    `record` built: load_trained returns that model with the step's params and record."""
    if saved == record:
        return
    if _build(saved)[1].config != model.config:
        raise DamagedCheckpoint(f"its record describes another model ({saved['model']}) than the "
                                "newest readable one")


def save_built_vocab(workdir: str, vocab: Any) -> str:
    """Writes a vocabulary built from the data into the workdir -> its path: a SentencePiece
    model as DIR/tokenizer.model, a seq2seq CharVocab as DIR/vocab.json.

    A workdir whose checkpoints were trained with another SentencePiece model is refused
    (CheckpointError): their token ids would mean other pieces. Only the chief process writes.
    """
    from zoo.data.pipelines.sentencepiece_tokenizer import SentencePieceTokenizer

    os.makedirs(workdir, exist_ok=True)
    if not isinstance(vocab, SentencePieceTokenizer):
        path = os.path.join(workdir, VOCAB_FILE)
        vocab.save(path)
        return path
    path = os.path.join(workdir, TOKENIZER_FILE)
    if os.path.isfile(path) and _has_checkpoints(workdir):
        with open(path, "rb") as f:
            if f.read() != vocab.model_proto:
                raise CheckpointError(
                    f"{path} is not the SentencePiece model this run trained (other texts or "
                    "options), and the checkpoints in this workdir were trained with it. Use a "
                    "fresh --workdir, or the config and data that wrote it.")
        return path
    vocab.save(path)
    return path


def load_tokenizer(workdir: str, meta: dict[str, Any], model: Any = None):
    """The tokenizer the workdir's model was trained with: DIR/tokenizer.model (SentencePiece),
    else the one `meta` (from `load_trained`) names, "byte" for workdirs written before
    tokenizers were saved. With `model`, a tokenizer with more ids than the model's vocab_size
    is a CheckpointError naming both numbers."""
    from zoo.data.pipelines.tokenizers import get_tokenizer

    path = os.path.join(workdir, TOKENIZER_FILE)
    name = meta.get("tokenizer") or "byte"
    if os.path.isfile(path):
        from zoo.data.pipelines.sentencepiece_tokenizer import SentencePieceTokenizer

        try:
            tokenizer = SentencePieceTokenizer.load(path)
        except (OSError, RuntimeError) as e:
            raise CheckpointError(f"{path} is not a readable SentencePiece model ({e}); it is the "
                                  "tokenizer this workdir was trained with.") from e
    elif name == "sentencepiece":
        raise CheckpointError(f"{workdir} was trained with a SentencePiece tokenizer but holds no "
                              f"{TOKENIZER_FILE}; restore that file from a copy of the workdir.")
    else:
        tokenizer = get_tokenizer(name)
    vocab_size = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab_size is not None and tokenizer.vocab_size > vocab_size:
        raise CheckpointError(f"the tokenizer of {workdir} has {tokenizer.vocab_size} ids but its "
                              f"model's vocab_size is {vocab_size}; the workdir is inconsistent.")
    return tokenizer


def _has_checkpoints(workdir: str) -> bool:
    directory = os.path.join(workdir, "checkpoints")
    return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))
