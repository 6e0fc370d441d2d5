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

from zoo.models import ModelSpec, get_config, get_spec, saved_config_fields
from zoo.tasks import Task, get_task
from zoo.train.checkpoint import Checkpointer
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


def check_same_model(saved: dict[str, Any], meta: dict[str, Any], directory: str) -> None:
    """Raises ValueError when a checkpoint's model differs from the one this run builds."""
    if saved.get("model") == meta["model"] and "model_config" in saved:
        saved = {**saved, "model_config": saved_config_fields(meta["model"],
                                                              saved["model_config"])}
    if saved.get("model") != meta["model"] or saved.get("model_config") != meta["model_config"]:
        diff = {k: (saved.get("model_config", {}).get(k), v)
                for k, v in meta["model_config"].items()
                if saved.get("model_config", {}).get(k) != v}
        raise ValueError(
            f"the checkpoint in {directory} belongs to model {saved.get('model')!r} but this run "
            f"builds {meta['model']!r} (differing fields, saved vs now: {diff}). Use a fresh "
            "--workdir, or the config that wrote this checkpoint."
        )


def load_trained(workdir: str, step: int | None = None):
    """(registry spec, model, params, meta) from a workdir's latest (or given) checkpoint;
    meta["step"] is the step restored."""
    ckpt = Checkpointer(workdir)
    step = ckpt.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(
            f"no checkpoint in {ckpt.directory}; train first with "
            f"python -m experiments.train --config ... --workdir {workdir}")
    meta = ckpt.restore_meta(step)
    config = ml_collections.ConfigDict(meta["config"])
    spec, model_config, model, task = build_model(config)
    schedule = learning_rate_schedule(config, d_model=model_config.emb_dim)
    abstract = jax.eval_shape(lambda: create_state(model, task, create_optimizer(config, schedule),
                                                   model_config, config.seq_len,
                                                   jax.random.key(0)))
    target = {"step": abstract.step, "params": abstract.params, "opt_state": abstract.opt_state,
              "rng": jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))}
    restored, _ = ckpt.restore(step, target)
    ckpt.close()
    return spec, model, restored["params"], {**meta, "step": step}
