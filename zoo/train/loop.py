"""The training loop shared by every experiment: data, state, checkpoints, eval, logging, signals.

    train_and_evaluate(config, workdir) -> summary dict

A workdir that holds a checkpoint is resumed from it (params, optimizer state, step, rng and
data position), so a killed run restarted on the same workdir ends bit-identical (on CPU) to an
uninterrupted one. SIGTERM / SIGINT save a checkpoint and stop cleanly. One run at a time holds
the workdir (`WorkdirLock`).

Nothing non-finite is checkpointed: the step never applies a NaN / inf update (see
zoo.train.step) and `config.nonfinite_policy` stops the run at the next sync ("stop") or counts
the skipped steps ("skip"); eval metrics must be finite; a checkpoint that no eval has covered
since a skipped step is evaluated first, and any other checkpoint is checked on one eval batch.
Restores verify each checkpoint and fall back past damaged ones (zoo.train.checkpoint).
"""
from __future__ import annotations

import contextlib
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
from zoo.data.pipelines.sharding import shard_batch
from zoo.errors import NonFiniteError
from zoo.tasks.base import SampleSettings
from zoo.train import checkpoint as checkpoint_lib
from zoo.train import step as step_lib
from zoo.train.checkpoint import Checkpointer
from zoo.train.config import validate
from zoo.train.metric_writers import MetricWriter
from zoo.train.optimizer import create_optimizer, learning_rate_schedule
from zoo.train.warm_start import warm_start
from zoo.train.workdir import (VOCAB_FILE, build_model, check_same_model, create_state,
                               load_trained, run_meta)
from zoo.train.workdir_lock import WorkdirLock

log = logging.getLogger("zoo.train")


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


def _unreplicate(tree):
    """First device's copy of a pmap-replicated tree, without gathering the others."""
    # A shard of a pmap output is (1, ...) since pmap runs on shard_map (JAX >= 0.8).
    return jax.tree.map(lambda x: x.addressable_shards[0].data.reshape(x.shape[1:]), tree)


def _warm_start(state, init_from: str):
    """`state` with the params subtrees of `init_from`'s latest checkpoint that fit copied in."""
    _, _, source_params, source_meta = load_trained(init_from)
    params, copied = warm_start(state.params, source_params)
    if not copied:
        raise ValueError(f"no parameters of {init_from} ({source_meta['model']}) fit this model.")
    print(f"initialised {copied} from {init_from} ({source_meta['model']})", flush=True)
    return state.replace(params=params)


def restore_or_init(ckpt: Checkpointer, state, dropout_rng: jax.Array, meta: dict[str, Any]):
    """(state, dropout rng, data position) from the newest intact checkpoint, or the fresh
    ones."""
    target = {"step": state.step, "params": state.params, "opt_state": state.opt_state,
              "rng": jax.random.key_data(dropout_rng)}
    found = ckpt.restore_latest_intact(
        target, check_meta=lambda saved: check_same_model(saved, meta, ckpt.directory))
    if found is None:
        return state, dropout_rng, 0
    step, restored, saved_meta = found
    state = state.replace(step=restored["step"], params=restored["params"],
                          opt_state=restored["opt_state"],
                          nonfinite_steps=jnp.asarray(saved_meta.get("nonfinite_steps", 0),
                                                      jnp.int32))
    log.info("resumed from step %d in %s", step, ckpt.directory)
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
    lock = WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
    with lock:
        return _train_and_evaluate(config, workdir, stop_after_step)


def _nonfinite_message(what: str, step: int, ckpt: Checkpointer) -> str:
    latest = ckpt.latest_step()
    kept = (f"the last good checkpoint is step {latest}" if latest is not None
            else "there is no checkpoint yet")
    return (f"{what} at step {step}; stopping without checkpointing ({kept}). Lower "
            "learning_rate, raise warmup_steps or set grad_clip_norm (nonfinite_policy=skip skips "
            "such training steps instead).")


def _train_and_evaluate(config, workdir, stop_after_step):
    if config.compilation_cache:
        jax_runtime.enable_compilation_cache()
    else:
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
    schedule = learning_rate_schedule(config, d_model=model_config.emb_dim)
    tx = create_optimizer(config, schedule)
    init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
    state = create_state(model, task, tx, model_config, config.seq_len, init_rng)
    num_params = sum(x.size for x in jax.tree.leaves(state.params))

    meta = run_meta(config, model_config)
    ckpt = Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
    if config.init_from and ckpt.latest_step() is None:
        state = _warm_start(state, config.init_from)
    if is_chief and data.built_vocab is not None:
        os.makedirs(workdir, exist_ok=True)
        data.built_vocab.save(os.path.join(workdir, VOCAB_FILE))
    state, dropout_rng, position = restore_or_init(ckpt, state, dropout_rng, meta)
    start_step = int(state.step)
    nonfinite_at_start = nonfinite_checked = int(state.nonfinite_steps)

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

    def check_nonfinite(step: int) -> int:
        """The run's non-finite step count; NonFiniteError under the "stop" policy."""
        s = host_state(state)
        count, first = jax.device_get((s.nonfinite_steps, s.first_nonfinite_step))
        if count > nonfinite_at_start and config.nonfinite_policy == "stop":
            raise NonFiniteError(_nonfinite_message(
                "the loss or gradient norm was NaN / inf (the update was not applied)",
                int(first), ckpt))
        return int(count)

    def save(step: int, data_position: int, evaluated: bool) -> None:
        nonlocal nonfinite_checked
        count = check_nonfinite(step)
        s = host_state(state)
        bad = checkpoint_lib.non_finite_leaves(s.params)
        if bad:
            raise NonFiniteError(_nonfinite_message(f"parameters {', '.join(bad[:3])} NaN / inf", step,
                                                    ckpt))
        if not evaluated:  # no eval covers these parameters yet: a full one after a skipped
            run_eval(step, num_batches=None if count > nonfinite_checked else 1)  # step
        nonfinite_checked = count
        ckpt.save(step, {"step": s.step, "params": s.params, "opt_state": s.opt_state,
                         "rng": jax.random.key_data(dropout_rng)},
                  {**meta, "data_position": data_position, "nonfinite_steps": count})

    def run_eval(step: int, num_batches: int | None = None) -> dict[str, float]:
        metrics = evaluate(eval_fn, state, eval_data, task, num_batches or config.num_eval_batches,
                           num_devices, model_config)
        bad = sorted(k for k, v in metrics.items() if not np.isfinite(v))
        if bad:
            raise NonFiniteError(_nonfinite_message(f"eval metric(s) {', '.join(bad)} NaN / inf", step,
                                                    ckpt))
        if num_batches is None:
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
                check_nonfinite(step)
                now = time.perf_counter()
                metrics["tokens_per_sec"] = tokens_per_step * (step - last_step) / (now - last_time)
                last_time, last_step = now, step
                writer.write(step, metrics, split="train")
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", lr=f"{metrics['learning_rate']:.2e}",
                                tok_s=f"{metrics['tokens_per_sec']:.0f}")
            evaluated = step % config.eval_every_steps == 0 or step == config.num_train_steps
            if evaluated:
                check_nonfinite(step)
                eval_metrics = run_eval(step)
                bar.write(f"step {step}: eval " + ", ".join(
                    f"{k}={v:.4f}" for k, v in eval_metrics.items()))
            if step % config.checkpoint_every_steps == 0 or step == config.num_train_steps:
                save(step, position, evaluated)
            if signals.received is not None or step == stop_after_step:
                interrupted = (signal.Signals(signals.received).name if signals.received
                               else f"stop_after_step={step}")
                if ckpt.latest_step() != step:
                    save(step, position, evaluated)
                bar.write(f"{interrupted} received: saved a checkpoint at step {step}; "
                          "rerun the same command to resume.")
                break
    bar.close()
    writer.close()
    ckpt.close()

    summary = {"step": step, "num_params": num_params, "baselines": data.baselines,
               "eval": eval_metrics, "interrupted": interrupted,
               "params": host_state(state).params}
    if interrupted is None and config.num_samples > 0 and spec.decoder_cls is not None and is_chief:
        settings = SampleSettings(
            num_samples=config.num_samples, prompt=config.sample_prompt,
            max_new_tokens=config.sample_length, temperature=config.sample_temperature,
            top_k=config.sample_top_k, top_p=config.sample_top_p, seed=config.seed + 1,
            max_len=model_config.max_len, seq_len=config.seq_len,
            reverse_source=config.reverse_source)
        summary["samples"] = task.samples(spec.decoder_cls(model), host_state(state).params,
                                          tokenizer, eval_data.get(0), settings)
        for text in summary["samples"]:
            print("-" * 40 + "\n" + text, flush=True)
    return summary
