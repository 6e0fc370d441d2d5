"""The training loop shared by every experiment: data, state, checkpoints, eval, logging, signals.

    train_and_evaluate(config, workdir) -> summary dict

A workdir that holds a checkpoint is resumed from it (params, optimizer state, step, rng and
data position), so a killed run restarted on the same workdir ends bit-identical (on CPU) to an
uninterrupted one. SIGTERM / SIGINT save a checkpoint and stop cleanly. A non-finite loss or
non-finite parameters stop the run before they can be checkpointed.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import jax_utils
from tqdm import tqdm

from zoo import jax_runtime
from zoo.data.pipelines import create_data
from zoo.data.sharding import shard_batch
from zoo.decode.sampling import generate
from zoo.eval.translation import translation_samples
from zoo.registry import get_spec, saved_config_fields
from zoo.tasks import get_task
from zoo.train import step as step_lib
from zoo.train.checkpoint import Checkpointer
from zoo.train.config import model_overrides, validate
from zoo.train.metric_writers import MetricWriter
from zoo.train.optimizer import create_optimizer, learning_rate_schedule
from zoo.train.warm_start import warm_start

log = logging.getLogger("zoo.train")
VOCAB_FILE = "vocab.json"  # a data-built vocabulary (seq2seq), saved next to the checkpoints


class NonFiniteError(FloatingPointError):
    pass


class _StopSignals:
    """Records SIGTERM / SIGINT instead of dying, so the loop can checkpoint first."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals cannot be caught here
                pass
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@jax.jit
def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _unreplicate(tree):
    """First device's copy of a pmap-replicated tree, without gathering the others."""
    # A shard of a pmap output is (1, ...) since pmap runs on shard_map (JAX >= 0.8).
    return jax.tree.map(lambda x: x.addressable_shards[0].data.reshape(x.shape[1:]), tree)


def build_model(config: ml_collections.ConfigDict):
    """(registry spec, model config dataclass, flax module, task) for the run config."""
    spec = get_spec(config.model)
    model_config = spec.config_cls(**{**spec.preset, **model_overrides(config)})
    return spec, model_config, spec.module_cls(model_config), get_task(spec.task, model_config)


def run_meta(config: ml_collections.ConfigDict, model_config: Any) -> dict[str, Any]:
    return {"model": config.model, "model_config": dataclasses.asdict(model_config),
            "tokenizer": config.tokenizer, "config": config.to_dict()}


def check_same_model(saved: dict[str, Any], meta: dict[str, Any], directory: str) -> None:
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


def create_state(model, task, tx, model_config, seq_len: int, rng: jax.Array):
    init_args = task.example_inputs(model_config, seq_len)
    params = jax.jit(lambda r: model.init(r, *init_args))(rng)["params"]
    return step_lib.TrainState.create(apply_fn=model.apply, params=params, tx=tx)


def _warm_start(state, init_from: str):
    """`state` with the params subtrees of `init_from`'s latest checkpoint that fit copied in."""
    _, _, source_params, source_meta = load_trained(init_from)
    params, copied = warm_start(state.params, source_params)
    if not copied:
        raise ValueError(f"no parameters of {init_from} ({source_meta['model']}) fit this model.")
    print(f"initialised {copied} from {init_from} ({source_meta['model']})", flush=True)
    return state.replace(params=params)


def restore_or_init(ckpt: Checkpointer, state, dropout_rng: jax.Array, meta: dict[str, Any]):
    """(state, dropout rng, data position) from the latest checkpoint, or the fresh ones."""
    latest = ckpt.latest_step()
    if latest is None:
        return state, dropout_rng, 0
    check_same_model(ckpt.restore_meta(latest), meta, ckpt.directory)
    target = {"step": state.step, "params": state.params, "opt_state": state.opt_state,
              "rng": jax.random.key_data(dropout_rng)}
    restored, saved_meta = ckpt.restore(latest, target)
    state = state.replace(step=restored["step"], params=restored["params"],
                          opt_state=restored["opt_state"])
    log.info("resumed from step %d in %s", latest, ckpt.directory)
    return state, jax.random.wrap_key_data(restored["rng"]), int(saved_meta["data_position"])


def evaluate(eval_fn, state, eval_data, task, num_batches: int, num_devices: int | None,
             model_config) -> dict[str, float]:
    """Task metrics (mean loss, accuracy, ...) over the first `num_batches` eval batches."""
    totals = None
    for i in range(min(num_batches, len(eval_data))):
        batch = eval_data.get(i)
        task.check_batch(batch, model_config)
        if num_devices:
            sums = _unreplicate(eval_fn(state, shard_batch(batch, num_devices)))
        else:
            sums = eval_fn(state, batch)
        sums = jax.device_get(sums)
        totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
    return task.finalize(totals) if totals is not None else {}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_after_step: int | None = None) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming from its checkpoint) -> summary dict.

    `stop_after_step` stops early at that step with a checkpoint, as a preemption would; rerun
    to continue. The summary holds the final step, eval metrics, params and samples.
    """
    validate(config)
    if not config.get("compilation_cache", True):
        jax_runtime.disable_compilation_cache()
    spec, model_config, model, task = build_model(config)
    num_local = jax.local_device_count()
    use_pmap = config.parallel == "pmap" or (config.parallel == "auto" and num_local > 1)
    num_devices = num_local if use_pmap else None
    global_batch = config.per_device_batch_size * (num_local if use_pmap else 1)
    is_chief = jax.process_index() == 0

    data = create_data(task.name, config, global_batch, process_index=jax.process_index(),
                       process_count=jax.process_count())
    train_data, eval_data, tokenizer = data.train, data.eval, data.tokenizer
    schedule = learning_rate_schedule(config, d_model=getattr(model_config, "emb_dim", None))
    tx = create_optimizer(config, schedule)
    init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
    state = create_state(model, task, tx, model_config, config.seq_len, init_rng)
    num_params = sum(x.size for x in jax.tree.leaves(state.params))

    meta = run_meta(config, model_config)
    ckpt = Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
    if config.init_from and ckpt.latest_step() is None:
        state = _warm_start(state, config.init_from)
    if is_chief and hasattr(tokenizer, "save"):  # a vocabulary built from the data
        os.makedirs(workdir, exist_ok=True)
        tokenizer.save(os.path.join(workdir, VOCAB_FILE))
    state, dropout_rng, position = restore_or_init(ckpt, state, dropout_rng, meta)
    start_step = int(state.step)

    if use_pmap:
        state = jax_utils.replicate(state)
        train_fn = step_lib.pmap_train_step(task, grad_accum_steps=config.grad_accum_steps,
                                            learning_rate_fn=schedule)
        eval_fn = step_lib.pmap_eval_step(task)
    else:
        train_fn = step_lib.jit_train_step(task, grad_accum_steps=config.grad_accum_steps,
                                           learning_rate_fn=schedule)
        eval_fn = step_lib.jit_eval_step(task)
    host_state = _unreplicate if use_pmap else (lambda s: s)

    def save(step: int, data_position: int) -> None:
        s = host_state(state)
        if not bool(_all_finite(s.params)):
            raise NonFiniteError(
                f"parameters are not finite at step {step}; not checkpointing. The last good "
                f"checkpoint is step {ckpt.latest_step()}; lower learning_rate or clip gradients.")
        ckpt.save(step, {"step": s.step, "params": s.params, "opt_state": s.opt_state,
                         "rng": jax.random.key_data(dropout_rng)},
                  {**meta, "data_position": data_position})

    def run_eval(step: int) -> dict[str, float]:
        metrics = evaluate(eval_fn, state, eval_data, task, config.num_eval_batches,
                           num_devices, model_config)
        writer.write(step, metrics, split="eval")
        return metrics

    writer = MetricWriter(workdir, enabled=is_chief)
    tokens_per_step = global_batch * jax.process_count() * config.seq_len
    print(f"model {config.model}: {num_params:,} parameters; "
          f"{'pmap over ' + str(num_local) + ' devices' if use_pmap else 'jit on 1 device'}; "
          f"global batch {global_batch} x {config.seq_len} tokens; baselines: " +
          ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in data.baselines.items()), flush=True)
    if start_step:
        print(f"resuming from checkpoint at step {start_step}", flush=True)

    eval_metrics: dict[str, float] = {}
    interrupted = None
    step = start_step
    bar = tqdm(total=config.num_train_steps, initial=start_step, disable=not is_chief,
               mininterval=1.0, dynamic_ncols=True)
    last_time, last_step = time.perf_counter(), step
    with _StopSignals() as signals:
        while step < config.num_train_steps:
            batch = train_data.get(position)
            task.check_batch(batch, model_config)
            if use_pmap:
                batch = shard_batch(batch, num_local)
            state, metrics = train_fn(state, batch, dropout_rng)
            step, position = step + 1, position + 1
            bar.update(1)

            if step % config.log_every_steps == 0 or step == config.num_train_steps:
                metrics = jax.device_get(_unreplicate(metrics) if use_pmap else metrics)
                if not np.isfinite(metrics["loss"]):
                    raise NonFiniteError(
                        f"loss is {metrics['loss']} at step {step}; stopping without "
                        f"checkpointing. The last good checkpoint is step {ckpt.latest_step()}; "
                        "lower learning_rate, raise warmup_steps or set grad_clip_norm.")
                now = time.perf_counter()
                metrics["tokens_per_sec"] = tokens_per_step * (step - last_step) / (now - last_time)
                last_time, last_step = now, step
                writer.write(step, metrics, split="train")
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", lr=f"{metrics['learning_rate']:.2e}",
                                tok_s=f"{metrics['tokens_per_sec']:.0f}")
            if step % config.eval_every_steps == 0 or step == config.num_train_steps:
                eval_metrics = run_eval(step)
                bar.write(f"step {step}: eval " + ", ".join(
                    f"{k}={v:.4f}" for k, v in eval_metrics.items()))
            if step % config.checkpoint_every_steps == 0 or step == config.num_train_steps:
                save(step, position)
            if signals.received is not None or step == stop_after_step:
                interrupted = (signal.Signals(signals.received).name if signals.received
                               else f"stop_after_step={step}")
                if ckpt.latest_step() != step:
                    save(step, position)
                bar.write(f"{interrupted} received: saved a checkpoint at step {step}; "
                          "rerun the same command to resume.")
                break
    bar.close()
    writer.close()
    ckpt.close()

    summary = {"step": step, "num_params": num_params, "baselines": data.baselines,
               "eval": eval_metrics, "interrupted": interrupted,
               "params": host_state(state).params}
    if (interrupted is None and config.num_samples > 0 and spec.decoder_cls is not None
            and is_chief and task.name == "seq2seq"):
        summary["samples"] = translation_samples(
            spec.decoder_cls(model), host_state(state).params, tokenizer, eval_data.get(0),
            num_samples=config.num_samples, max_len=config.seq_len,
            reverse_source=config.reverse_source)
        for text in summary["samples"]:
            print(text, flush=True)
    elif interrupted is None and config.num_samples > 0 and spec.decoder_cls is not None and is_chief:
        summary["samples"] = sample_texts(
            spec.decoder_cls(model), host_state(state).params, tokenizer, config.sample_prompt,
            num_samples=config.num_samples, max_new_tokens=config.sample_length,
            max_len=getattr(model_config, "max_len", None), temperature=config.sample_temperature,
            top_k=config.sample_top_k, top_p=config.sample_top_p, seed=config.seed + 1)
        for text in summary["samples"]:
            print("-" * 40 + "\n" + text, flush=True)
    return summary


def sample_texts(decoder, params, tokenizer, prompt: str, *, num_samples: int,
                 max_new_tokens: int, max_len: int | None, temperature: float, top_k: int,
                 top_p: float, seed: int) -> list[str]:
    """`num_samples` continuations of `prompt` (text), through the model's decoder.

    Generation stops at the model's `max_len`; a prompt that leaves no room is an error.
    """
    prompt_ids = tokenizer.encode(prompt)
    if len(prompt_ids) == 0:
        raise ValueError("the prompt is empty; give at least one character to continue.")
    if max_len is not None:
        if len(prompt_ids) >= max_len:
            raise ValueError(f"the prompt has {len(prompt_ids)} tokens; the model's max_len is "
                             f"{max_len}. Shorten the prompt.")
        max_new_tokens = min(max_new_tokens, max_len - len(prompt_ids))
    tokens = generate(decoder, params,
                      jnp.tile(jnp.asarray(prompt_ids, jnp.int32)[None], (num_samples, 1)),
                      jax.random.key(seed), max_new_tokens=max_new_tokens,
                      temperature=temperature, top_k=top_k, top_p=top_p,
                      num_valid_tokens=tokenizer.vocab_size)
    return [prompt + tokenizer.decode(np.asarray(t)) for t in tokens]


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
    schedule = learning_rate_schedule(config, d_model=getattr(model_config, "emb_dim", None))
    abstract = jax.eval_shape(lambda: create_state(model, task, create_optimizer(config, schedule),
                                                   model_config, config.seq_len,
                                                   jax.random.key(0)))
    target = {"step": abstract.step, "params": abstract.params, "opt_state": abstract.opt_state,
              "rng": jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))}
    restored, _ = ckpt.restore(step, target)
    ckpt.close()
    return spec, model, restored["params"], {**meta, "step": step}
