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

Batches come from a grain iterator (zoo.data.pipelines.loader: read ahead in a thread, or in
`data_workers` processes) whose state is saved in every checkpoint, one file per process; a
resume continues with exactly the next batch.

Devices and processes: the global batch is `per_device_batch_size` x `jax.device_count()` (every
device of every process); each process reads only its rows of it (zoo.data.pipelines) and the
data position counts global batches, so a resume with another global batch is refused unless
`allow_batch_change`. A parallel path (zoo.train.parallel: pmap over the local devices with
collectives spanning the processes, or jit over all devices) places the state and the batches
and brings results back; checkpoints hold global arrays whatever the path, so they restore on
another path or device count. Process 0 alone prints, logs metrics, writes samples and the
vocabulary, and holds the workdir lock; every process takes part in saving checkpoints.
"""
from __future__ import annotations

import contextlib
import logging
import signal
from typing import Any

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from zoo import jax_runtime
from zoo.data.pipelines import create_data
from zoo.data.pipelines.loader import train_iterator
from zoo.errors import NonFiniteError, WorkdirBusyError
from zoo.nn.attention import current_platform
from zoo.tasks.base import SampleSettings
from zoo.train import checkpoint as checkpoint_lib
from zoo.train import distributed, parallel, throughput
from zoo.train.checkpoint import Checkpointer
from zoo.train.config import check_platform, validate
from zoo.train.metric_writers import MetricWriter
from zoo.train.optimizer import create_optimizer, learning_rate_schedule
from zoo.train.parallel import ParallelPath
from zoo.train.warm_start import warm_start
from zoo.train.workdir import (build_model, check_same_model, load_trained,
                               resume_position, run_meta, save_built_vocab)
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


def _warm_start(state, init_from: str):
    """`state` with the params subtrees of `init_from`'s latest checkpoint that fit copied in."""
    _, _, source_params, source_meta = load_trained(init_from)
    params, copied = warm_start(state.params, source_params)
    if not copied:
        raise ValueError(f"no parameters of {init_from} ({source_meta['model']}) fit this model.")
    if jax.process_index() == 0:
        print(f"initialised {copied} from {init_from} ({source_meta['model']})", flush=True)
    return state.replace(params=params)


def restore_or_init(ckpt: Checkpointer, state, dropout_rng: jax.Array, meta: dict[str, Any],
                    allow_batch_change: bool = False):
    """(state, dropout rng, data position, note) from the newest intact checkpoint, or the
    fresh ones. `state` holds global arrays, and the restored state has their shardings
    (whatever devices wrote the checkpoint); `note` tells of a rescaled data position."""
    target = {"step": state.step, "params": state.params, "opt_state": state.opt_state,
              "rng": distributed.replicate_global(jax.random.key_data(dropout_rng),
                                                  state.step.sharding)}
    global_batch = meta["global_batch"]

    def check(saved):
        check_same_model(saved, meta, ckpt.directory)
        resume_position(saved, global_batch, allow_batch_change, ckpt.directory)

    found = ckpt.restore_latest_intact(target, check_meta=check)
    if found is None:
        return state, dropout_rng, 0, None
    step, restored, saved_meta = found
    nonfinite = distributed.replicate_global(
        np.int32(saved_meta.get("nonfinite_steps", 0)), state.step.sharding)
    state = state.replace(step=restored["step"], params=restored["params"],
                          opt_state=restored["opt_state"], nonfinite_steps=nonfinite)
    log.info("resumed from step %d in %s", step, ckpt.directory)
    position, note = resume_position(saved_meta, global_batch, allow_batch_change,
                                     ckpt.directory)
    rng = jax.random.wrap_key_data(distributed.local_copy(restored["rng"]))
    return state, rng, position, note


def evaluate(path: ParallelPath, state, eval_data, task, num_batches: int,
             model_config) -> dict[str, float]:
    """Task metrics (mean loss, accuracy, ...) over the first `num_batches` eval batches."""
    totals = None
    for i in range(min(num_batches, len(eval_data))):
        batch = eval_data.get(i)
        task.check_batch(batch, model_config)
        sums = jax.device_get(path.local(path.eval_fn(state, path.place_batch(batch))))
        totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
    return task.finalize(totals) if totals is not None else {}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       stop_after_step: int | None = None) -> dict[str, Any]:
    """Trains `config` in `workdir` (resuming from its checkpoint) -> summary dict.

    `stop_after_step` stops early at that step with a checkpoint, as a preemption would; rerun
    to continue. The summary holds the final step, eval metrics, params and samples.
    """
    validate(config)
    check_platform(config, current_platform())
    with _hold_workdir(workdir):
        return _train_and_evaluate(config, workdir, stop_after_step)


@contextlib.contextmanager
def _hold_workdir(workdir: str):
    """Process 0 holds the workdir lock; every process learns whether it got it, so a refused
    run stops on all of them instead of leaving the others waiting."""
    chief = jax.process_index() == 0
    lock = WorkdirLock(workdir) if chief else contextlib.nullcontext()
    error = None
    try:
        lock.__enter__()
    except Exception as e:  # noqa: BLE001 - re-raised below, after telling the other processes
        error = e
    if distributed.any_process(error is not None):
        if error is not None:
            raise error
        raise WorkdirBusyError(f"process 0 could not take the workdir {workdir} (its error says "
                               "why); nothing was written.")
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


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
    global_batch = config.per_device_batch_size * jax.device_count()
    is_chief = jax.process_index() == 0
    say = print if is_chief else (lambda *args, **kwargs: None)

    data = create_data(task.name, config, global_batch, process_index=jax.process_index(),
                       process_count=jax.process_count())
    train_data, eval_data, tokenizer = data.train, data.eval, data.tokenizer
    schedule = learning_rate_schedule(config, d_model=model_config.emb_dim)
    tx = create_optimizer(config, schedule)
    init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
    path, state = parallel.create(
        config.parallel, task, model, tx, task.example_inputs(model_config, config.seq_len),
        init_rng, learning_rate_fn=schedule, grad_accum_steps=config.grad_accum_steps,
        mesh_shape=config.mesh.to_dict() if config.parallel == "mesh" else None,
        logical_axis_rules=config.logical_axis_rules)
    num_params = sum(x.size for x in jax.tree.leaves(state.params))

    meta = {**run_meta(config, model_config), "global_batch": global_batch}
    ckpt = Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
    if config.init_from and ckpt.latest_step() is None:
        state = _warm_start(state.replace(params=path.full(state.params)), config.init_from)
    if is_chief and data.built_vocab is not None:
        save_built_vocab(workdir, data.built_vocab)
    state = path.to_global(state)  # replicated on every device, or on the mesh shardings
    state, dropout_rng, position, note = restore_or_init(ckpt, state, dropout_rng, meta,
                                                         config.allow_batch_change)
    start_step = int(distributed.local_copy(state.step))
    nonfinite_at_start = nonfinite_checked = int(distributed.local_copy(state.nonfinite_steps))
    state = path.place_state(state)
    step_rng = path.place_rng(dropout_rng)
    saved_rng = distributed.replicate_global(jax.random.key_data(dropout_rng))

    def check_nonfinite(step: int) -> int:
        """The run's non-finite step count; NonFiniteError under the "stop" policy."""
        count, first = jax.device_get(path.local((state.nonfinite_steps,
                                                  state.first_nonfinite_step)))
        if count > nonfinite_at_start and config.nonfinite_policy == "stop":
            raise NonFiniteError(_nonfinite_message(
                "the loss or gradient norm was NaN / inf (the update was not applied)",
                int(first), ckpt))
        return int(count)

    def save(step: int, data_position: int, evaluated: bool) -> None:
        nonlocal nonfinite_checked
        count = check_nonfinite(step)
        s = path.global_state(state)  # every process saves its part of the global arrays
        bad = checkpoint_lib.non_finite_leaves(s.params)
        if bad:
            raise NonFiniteError(_nonfinite_message(f"parameters {', '.join(bad[:3])} NaN / inf", step,
                                                    ckpt))
        if not evaluated:  # no eval covers these parameters yet: a full one after a skipped
            run_eval(step, num_batches=None if count > nonfinite_checked else 1)  # step
        nonfinite_checked = count
        ckpt.save(step, {"step": s.step, "params": s.params, "opt_state": s.opt_state,
                         "rng": saved_rng},
                  {**meta, "data_position": data_position, "nonfinite_steps": count},
                  data=batches)

    def run_eval(step: int, num_batches: int | None = None) -> dict[str, float]:
        metrics = evaluate(path, state, eval_data, task, num_batches or config.num_eval_batches,
                           model_config)
        bad = sorted(k for k, v in metrics.items() if not np.isfinite(v))
        if bad:
            raise NonFiniteError(_nonfinite_message(f"eval metric(s) {', '.join(bad)} NaN / inf", step,
                                                    ckpt))
        if num_batches is None:
            writer.write(step, metrics, split="eval")
        return metrics

    def should_stop(step: int) -> bool:
        """A stop signal: alone, at once; with several processes, agreed at log and checkpoint
        steps, so they all stop after the same step (a signal reaches each at its own time)."""
        if jax.process_count() == 1:
            return signals.received is not None
        if step % config.log_every_steps and step % config.checkpoint_every_steps:
            return False
        return distributed.any_process(signals.received is not None)

    writer = MetricWriter(workdir, enabled=is_chief, start_step=start_step)
    tokens_per_step = global_batch * config.seq_len
    flops_per_step = peak = None
    if spec.train_flops is not None:  # the families that count their FLOPs log TFLOP/s and MFU
        flops_per_step = spec.train_flops(model_config, task, global_batch, config.seq_len)
        peak = throughput.peak_tflops(jax.devices()[0].device_kind, model_config.compute_dtype)
    say(f"model {config.model}: {num_params:,} parameters; {path.description}; "
        f"global batch {global_batch} x {config.seq_len} tokens; baselines: " +
        ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                  for k, v in data.baselines.items()), flush=True)
    if start_step:
        say(f"resuming from checkpoint at step {start_step}" + (f"; {note}" if note else ""),
            flush=True)

    eval_metrics: dict[str, float] = {}
    interrupted = None
    step = start_step
    bar = tqdm(total=config.num_train_steps, initial=start_step, disable=not is_chief,
               mininterval=1.0, dynamic_ncols=True)
    clock = throughput.TrainingClock(step)
    batches = train_iterator(train_data, config, start=position)
    if start_step and note is None:  # the same global batch: continue from grain's own state
        ckpt.restore_data(start_step, batches)
        position = batches.position
    with _StopSignals() as signals, batches, writer:
        while step < config.num_train_steps:
            batch = next(batches)
            task.check_batch(batch, model_config)
            state, metrics = path.train_fn(state, path.place_batch(batch), step_rng)
            step, position = step + 1, batches.position
            clock.stepped(step, state)
            bar.update(1)

            if step % config.log_every_steps == 0 or step == config.num_train_steps:
                metrics = jax.device_get(path.local(metrics))
                check_nonfinite(step)
                steps, seconds = clock.window(step)
                if steps and seconds > 0:  # none for the first step alone: it compiled
                    metrics["tokens_per_sec"] = tokens_per_step * steps / seconds
                    if flops_per_step:
                        metrics |= throughput.flops_metrics(flops_per_step * steps, seconds,
                                                            jax.device_count(), peak)
                writer.write(step, metrics, split="train")
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", lr=f"{metrics['learning_rate']:.2e}",
                                **({"tok_s": f"{metrics['tokens_per_sec']:.0f}"}
                                   if "tokens_per_sec" in metrics else {}))
            evaluated = step % config.eval_every_steps == 0 or step == config.num_train_steps
            if evaluated:
                check_nonfinite(step)
                with clock.paused(state):
                    eval_metrics = run_eval(step)
                if is_chief:
                    bar.write(f"step {step}: eval " + ", ".join(
                        f"{k}={v:.4f}" for k, v in eval_metrics.items()))
            if step % config.checkpoint_every_steps == 0 or step == config.num_train_steps:
                with clock.paused(state):
                    save(step, position, evaluated)
            if should_stop(step) or step == stop_after_step:
                interrupted = (signal.Signals(signals.received).name if signals.received
                               else "SIGTERM" if step != stop_after_step
                               else f"stop_after_step={step}")
                if ckpt.latest_step() != step:
                    save(step, position, evaluated)
                if is_chief:
                    bar.write(f"{interrupted} received: saved a checkpoint at step {step}; "
                              "rerun the same command to resume.")
                break
    bar.close()
    ckpt.close()

    summary = {"step": step, "num_params": num_params, "baselines": data.baselines,
               "is_chief": is_chief,
               "eval": eval_metrics, "interrupted": interrupted,
               "params": path.full(state.params)}
    if interrupted is None and config.num_samples > 0 and spec.decoder_cls is not None and is_chief:
        settings = SampleSettings(
            num_samples=config.num_samples, prompt=config.sample_prompt,
            max_new_tokens=config.sample_length, temperature=config.sample_temperature,
            top_k=config.sample_top_k, top_p=config.sample_top_p, seed=config.seed + 1,
            max_len=model_config.max_len, seq_len=config.seq_len,
            reverse_source=config.reverse_source)
        summary["samples"] = task.samples(spec.decoder_cls(model), summary["params"],
                                          tokenizer, eval_data.get(0), settings)
        for text in summary["samples"]:
            print("-" * 40 + "\n" + text, flush=True)
    return summary
