"""A workdir: what a run leaves behind and how a trained model comes back out of it.

    DIR/checkpoints/<step>/   orbax checkpoints: state + metadata (the run config, the model
                              config, the tokenizer name, the data position)
    DIR/vocab.json            a vocabulary built from the data (seq2seq), when there is one
    DIR/metrics.jsonl, DIR/tensorboard/

`load_trained(workdir)` rebuilds the model from the saved run config and restores its
parameters; the loop (resume, warm start), `experiments.generate / evaluate / translate` and
`zoo.eval.translator` all go through it.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections

from zoo.errors import CheckpointError, ZooError
from zoo.models import ModelSpec, get_config, get_spec, saved_config_fields
from zoo.tasks import Task, get_task
from zoo.train.checkpoint import Checkpointer, DamagedCheckpoint
from zoo.train.config import model_overrides, task_overrides
from zoo.train.optimizer import create_optimizer, learning_rate_schedule
from zoo.train.state import create_train_state

VOCAB_FILE = "vocab.json"  # a data-built vocabulary (seq2seq), saved next to the checkpoints


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


# Run fields a resume must keep: the data position counts batches of this shape.
RESUME_FIELDS = ("seq_len",)


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
    if saved.get("model_config") != meta["model_config"]:
        diff = {k: (saved.get("model_config", {}).get(k), v)
                for k, v in meta["model_config"].items()
                if saved.get("model_config", {}).get(k) != v}
        raise CheckpointError(f"the checkpoint in {directory} was written by a {meta['model']!r} "
                              f"with other settings (saved vs now: {diff}). {fix}")
    saved_run, run = saved.get("config", {}), meta.get("config", {})
    diff = {k: (saved_run[k], run.get(k)) for k in RESUME_FIELDS
            if k in saved_run and saved_run[k] != run.get(k)}
    if diff:
        raise CheckpointError(f"the checkpoint in {directory} was trained with other data shapes "
                              f"(saved vs now: {diff}), so its data position would point "
                              f"elsewhere. {fix}")


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
    ckpt = Checkpointer(workdir, read_only=True)
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
