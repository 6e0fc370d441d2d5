"""What every benchmark shares, so that each benchmark module holds only its workloads: the
machine, timers and matmul peaks, load metering, alternating rounds and their clean-round
medians, the zoo's and PyTorch's train steps (`ZooStep`, `TorchSide`), time-budgeted parts,
command-line options, tables and JSON output."""
from __future__ import annotations

import ast
import collections
import dataclasses
import datetime
import functools
import glob
import json
import os
import platform
import re
import statistics
import sys
import time
import timeit
import traceback
import types
from collections.abc import Callable
from typing import Any

from zoo.errors import ConfigError
from zoo.train.defaults import TRAIN_DEFAULTS

CLEAN_LOAD = 0.25  # cores used by other processes below which a round counts as clean
OPT_CONFIG = types.SimpleNamespace(**TRAIN_DEFAULTS)  # the loop's optimizer and schedule
log = functools.partial(print, flush=True)


# --- the machine and the output


def num_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine_info(torch_version: str | None = None) -> dict[str, Any]:
    """The date, the CPU, Python, jax and torch versions, JAX's backend, first device and
    device count."""
    import jax

    d = jax.devices()[0]
    return {"date": datetime.date.today().isoformat(), "cpu": cpu_model(), "cores": num_cores(),
            "python": platform.python_version(), "jax": jax.__version__,
            "backend": jax.default_backend(), "device": d.device_kind, "platform": d.platform,
            "device_count": jax.device_count(), "torch": torch_version}


def command_line(module: str, argv: list[str] | None) -> str:
    return f"python -m {module} " + " ".join(sys.argv[1:] if argv is None else argv)


def write_json(path: str | None, results: dict[str, Any]) -> None:
    """The benchmarks' `--json PATH` output (nothing when PATH is None)."""
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=2, default=str)
        print(f"wrote {path}")


def add_options(p: Any, **defaults: Any) -> None:
    """`--some-name` options of a parser or argument group from keyword defaults, typed as
    their defaults (None: str)."""
    for name, default in defaults.items():
        p.add_argument("--" + name.replace("_", "-"), default=default,
                       type=None if default is None else type(default))


def print_table(columns: dict[str, str], rows: list[dict[str, Any]]) -> None:
    """A Markdown table of `rows`: per column its header and a `str.format` template of a
    row's keys ("{batch} x {seq_len}"); a template meeting None prints "-"."""
    def cell(template: str, row: dict[str, Any]) -> str:
        try:
            return template.format(**row)
        except TypeError:  # None under a number format
            return "-"

    log("| " + " | ".join(columns) + " |")
    log("|" + "---|" * len(columns))
    for row in rows:
        log("| " + " | ".join(cell(t, row) for t in columns.values()) + " |")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """["num_layers=1", "attention_implementation=cudnn"] -> {"num_layers": 1, ...}."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--override takes KEY=VALUE items; got {item!r}.")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value  # a bare string such as cudnn
    return overrides


class Parts:
    """Runs a benchmark's parts under a time budget: a part that would start after
    `budget_s` seconds is skipped, a failing one is reported; either way the next one runs."""

    def __init__(self, budget_s: float):
        self.budget_s, self.t0 = budget_s, time.perf_counter()
        self.skipped: list[str] = []
        self.errors: list[dict[str, str]] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def run(self, label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """fn(*args, **kwargs), or None when skipped or failed."""
        if self.elapsed() >= self.budget_s:
            log(f"SKIPPED {label}: the time budget of {self.budget_s:.0f} s is spent "
                f"({self.elapsed():.0f} s)")
            self.skipped.append(label)
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001  (reported; the other parts still run)
            traceback.print_exc()
            log(f"FAILED {label}: {type(e).__name__}: {e}")
            self.errors.append({"part": label, "error": f"{type(e).__name__}: {e}"})
            return None

    def report(self) -> None:
        for label in self.skipped:
            log(f"skipped (time budget): {label}")
        for e in self.errors:
            log(f"failed: {e['part']}: {e['error']}")


# --- load from other processes


def _cpu_busy_s() -> float | None:
    """CPU seconds all processes spent busy (incl. steal), from /proc/stat; None off Linux."""
    try:
        with open("/proc/stat") as f:
            v = list(map(int, f.readline().split()[1:]))
        return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # /proc/stat: Linux
    except (OSError, ValueError):
        return None


class LoadMeter:
    """Cores used by *other* processes over an interval (None where /proc/stat is missing),
    and the CPU seconds of this process's threads (`own_cpu_s`)."""

    def __enter__(self):
        self.b0, self.s0, self.t0 = _cpu_busy_s(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        b1, dt = _cpu_busy_s(), time.perf_counter() - self.t0
        self.own_cpu_s = time.process_time() - self.s0
        self.others = (None if b1 is None or self.b0 is None else
                       max(0.0, (b1 - self.b0 - self.own_cpu_s) / dt))


def wait_for_quiet(max_wait: float, window: float = 0.5) -> None:
    """Sleeps until other processes use < CLEAN_LOAD cores over `window` s, or `max_wait` s."""
    deadline = time.perf_counter() + max_wait
    while time.perf_counter() < deadline:
        with LoadMeter() as m:
            time.sleep(window)
        if m.others is None or m.others < CLEAN_LOAD:
            return


def is_clean(load: float | None) -> bool:
    return load is not None and load < CLEAN_LOAD


# --- matmul peak


def matmul_timer(library: str, n: int, dtype: str = "float32") -> Callable[[], float]:
    """A timer (seconds per call, after one untimed call) of an n x n matmul in `dtype`: jitted
    `jnp.dot` (float32 accumulation), `np.matmul` or `torch.mm`."""
    import numpy as np

    a, b = np.random.default_rng(0).standard_normal((2, n, n), dtype=np.float32)
    if library == "jax":
        import jax
        import jax.numpy as jnp

        a, b = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
        f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
        call = lambda: f(a, b).block_until_ready()  # noqa: E731
    elif library == "numpy":
        a, b, c = a.astype(dtype), b.astype(dtype), np.empty((n, n), dtype)
        call = lambda: np.matmul(a, b, out=c)  # noqa: E731
    else:
        import torch

        dt = getattr(torch, dtype)
        a, b, c = (torch.from_numpy(a).to(dt), torch.from_numpy(b).to(dt),
                   torch.empty(n, n, dtype=dt))
        call = lambda: torch.mm(a, b, out=c)  # noqa: E731
    call()
    return lambda: timeit.timeit(call, number=1)


def matmul_peak(sizes: list[int], repeats: int, libraries: tuple[str, ...] = ("jax",),
                dtype: str = "float32", max_wait: float = 0.0):
    """Best-of-`repeats` TFLOP/s of n x n matmuls, the libraries interleaved (with `max_wait`,
    each after up to 5 s of waiting for a quiet CPU) -> ({library: {n: TFLOP/s}}, the largest)."""
    peak: dict[str, dict[int, float]] = {k: {} for k in libraries}
    for n in sizes:
        timers = {k: matmul_timer(k, n, dtype) for k in libraries}
        best = {k: float("inf") for k in timers}
        for _ in range(repeats):
            for k, timer in timers.items():
                if max_wait > 0:
                    wait_for_quiet(min(max_wait, 5.0))
                best[k] = min(best[k], timer())
        for k in timers:
            peak[k][n] = 2 * n**3 / best[k] / 1e12
        log(f"matmul {dtype} {n}x{n}: " + ", ".join(f"{k} {peak[k][n]:.3g} TFLOP/s"
                                                    for k in timers))
    return peak, max(v for d in peak.values() for v in d.values())


# --- side-by-side rounds


def time_rounds(sides: dict[str, Any], repeats: int, steps: int, max_wait: float,
                max_rounds: int | None = None):
    """Alternating rounds (A B C A B C ...) of `side.run(steps)` -> (times, loads, cpu): seconds
    per step, the cores other processes used and this process's CPU seconds per step (all its
    threads: on a loaded machine it still compares the work), per side and round. With
    `max_rounds`, rounds go on (up to `max_rounds`) while a side has under half of its rounds
    clean: others' load slows torch's OpenMP threads 5-10x, XLA's 1.5-2x (measured), so loaded
    rounds say little."""
    times: dict[str, list[float]] = {k: [] for k in sides}
    loads: dict[str, list[float | None]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    r = 0
    while r < repeats or (max_rounds and r < max_rounds and any(
            2 * sum(map(is_clean, loads[k])) < r for k in sides)):
        for k, s in sides.items():
            if max_wait > 0:
                wait_for_quiet(max_wait)
            with LoadMeter() as m:
                times[k].append(s.run(steps))
            loads[k].append(m.others)
            cpu[k].append(m.own_cpu_s / max(steps, 1))
        r += 1
        label = f"{r}/{repeats}" if max_rounds is None else f"{r} (>= {repeats}, <= {max_rounds})"
        log(f"  round {label}: " + ", ".join(
            f"{k} {times[k][-1] * 1e3:.1f} ms/step (others "
            f"{'?' if loads[k][-1] is None else f'{loads[k][-1]:.2f}'} cores)" for k in sides))
    return times, loads, cpu


def summarize(times, loads, cpu, tokens: int, flops: dict[str, float],
              peak: float | None) -> dict[str, dict[str, Any]]:
    """Each side's median over its clean rounds when at least half are clean, else over all;
    tokens/s, TFLOP/s (of its model FLOPs per step, `flops`) and % of `peak` TFLOP/s, and the
    ratio of its tokens/s to the "torch" and "torch.compile" sides' (`vs_torch`,
    `vs_torch_compile`)."""
    results = {}
    for k in times:
        clean = [t for t, o in zip(times[k], loads[k]) if is_clean(o)]
        use_clean = bool(clean) and 2 * len(clean) >= len(times[k])
        t = statistics.median(clean if use_clean else times[k])
        r = results[k] = {
            "rounds": len(times[k]), "clean_rounds": len(clean),
            "median_over": "clean rounds" if use_clean else "all rounds",
            "ms_per_step": t * 1e3, "ms_per_step_min": min(times[k]) * 1e3,
            "ms_per_step_max": max(times[k]) * 1e3, "tokens_per_s": tokens / t,
            "cpu_ms_per_step": statistics.median(cpu[k]) * 1e3, "flops_per_step": flops[k],
            "tflops": flops[k] / t / 1e12}
        r["pct_peak"] = 100 * r["tflops"] / peak if peak else None
    for ref in ("torch", "torch.compile"):
        for r in results.values():
            r["vs_" + ref.replace(".", "_")] = (r["tokens_per_s"] / results[ref]["tokens_per_s"]
                                                if ref in results else None)
    return results


# --- the zoo's side


def lm_batch(batch: int, seq_len: int, vocab: int, seed: int = 0) -> dict[str, Any]:
    """A causal-LM batch of random tokens (numpy): inputs, targets (shifted by one), weights."""
    import numpy as np

    tokens = np.random.default_rng(seed).integers(0, vocab, (batch, seq_len + 1), dtype=np.int32)
    return {"inputs": tokens[:, :-1].copy(), "targets": tokens[:, 1:].copy(),
            "weights": np.ones((batch, seq_len), np.float32)}


def xla_flops(compiled: Any) -> float | None:
    """XLA's FLOP count of a compiled program (`cost_analysis()["flops"]`), None without one."""
    try:
        ca = compiled.cost_analysis()
        return float(ca["flops"]) if ca and ca.get("flops", -1) > 0 else None
    except Exception as e:  # noqa: BLE001  (backend without cost analysis)
        print(f"  (XLA cost_analysis unavailable: {e})")
        return None


class ZooStep:
    """The zoo's train step as `experiments.train` builds it (`OPT_CONFIG`), compiled once and
    run once (`compile_s`, `first_step_s` with the compile, `xla_flops`, `first_loss`) on one
    fixed `batch` (numpy, or a function of the model config): `model` is a registry name
    (dropout 0, `overrides` that are not task settings) or a flax module. `parallel` is the
    loop's path (zoo.train.parallel): "jit" (on one device, as PyTorch's side), "pmap" or
    "mesh" (over {"data": every device})."""

    def __init__(self, model: Any, batch: Any, task: str = "causal_lm", parallel: str = "jit",
                 **overrides: Any):
        import jax

        import zoo
        from zoo.tasks import get_task, get_task_settings
        from zoo.train import parallel as parallel_lib
        from zoo.train.optimizer import create_optimizer, learning_rate_schedule

        settings = {k: overrides.pop(k) for k in list(overrides) if k in get_task_settings(task)}
        if isinstance(model, str):
            model = zoo.create_model(model, dropout_rate=0.0, **overrides)
        config = getattr(model, "config", None)
        self.jax, self.model, self.task = jax, model, get_task(task, config, **settings)
        self.host_batch = batch(config) if callable(batch) else batch
        example = self.task.example_inputs(config, self.host_batch["inputs"].shape[1])
        schedule = learning_rate_schedule(OPT_CONFIG)
        path, state = parallel_lib.create(parallel, self.task, model,
                                          create_optimizer(OPT_CONFIG, schedule), example,
                                          jax.random.key(0), learning_rate_fn=schedule,
                                          devices=jax.devices()[:1])
        self.num_params = sum(x.size for x in jax.tree.leaves(state.params))
        state, self.place_batch = path.place_state(path.to_global(state)), path.place_batch
        self.batch, self.rng = self.place_batch(self.host_batch), path.place_rng(jax.random.key(1))
        t0 = time.perf_counter()
        self.step = path.train_fn.lower(state, self.batch, self.rng).compile()
        self.compile_s = time.perf_counter() - t0
        self.xla_flops = xla_flops(self.step)
        self.state, metrics = self.step(state, self.batch, self.rng)
        self.first_loss = float(jax.numpy.ravel(metrics["loss"])[0])  # waits for the device
        self.first_step_s = time.perf_counter() - t0

    def run(self, n: int, batches: Any = None) -> float:
        """Seconds per step over `n` steps on the fixed batch, or on the next `n` host batches
        of the iterator `batches` (placed as the loop places them)."""
        t0 = time.perf_counter()
        state, metrics = self.state, None
        for _ in range(n):
            batch = self.batch if batches is None else self.place_batch(next(batches))
            state, metrics = self.step(state, batch, self.rng)
        self.jax.block_until_ready((state, metrics))
        self.state = state
        return (time.perf_counter() - t0) / max(n, 1)


@dataclasses.dataclass(frozen=True)
class Workload:
    """One benchmark workload: the registry `model` with `overrides` (its shapes, task settings
    too; `max_len` = T where `has_max_len`) trained on `task` at `batch` x `seq_len` = B x T.
    `make_batch(config, B, T, min_len_frac)` -> numpy batch; `tokens(B, T)` -> tokens per step;
    `torch_side(zoo_step, **TorchSide kwargs)` -> the PyTorch reference; `flax_side(zoo_step)`
    -> a `ZooStep` of the same model built from Flax's own layers. Model FLOPs per step are
    the registry's (`ModelSpec.train_flops`)."""

    model: str
    task: str
    batch: int
    seq_len: int
    make_batch: Callable[..., dict[str, Any]]
    torch_side: Callable[..., Any]
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    min_len_frac: float = 1.0
    has_max_len: bool = True
    tokens: Callable[[int, int], int] = lambda batch, seq_len: batch * seq_len
    flax_side: Callable[..., Any] | None = None


def program_counts(step: ZooStep) -> dict[str, int]:
    """Custom calls and fusions in the compiled step (what kernels it holds)."""
    text = step.step.as_text()
    return {"cublas": len(re.findall(r'custom_call_target="__cublas', text)),
            "cudnn": len(re.findall(r'custom_call_target="__cudnn', text)),
            "fusions": len(re.findall(r"^\s*(?:ROOT )?\S+ = \S+ fusion\(", text, re.M)),
            "while_loops": len(re.findall(r"\bwhile\(", text))}


KERNEL_CATEGORIES = (("attention (cuDNN)", "fmha|flash|cudnn|attention"),
                     ("matmul", "gemm|cublas|cutlass|sm90_xmma|nvjet|matmul"))


def kernel_breakdown(trace_dir: str, steps: int, top: int = 25) -> dict[str, Any]:
    """Device time per kernel and per category (ms per step) from the XSpace of a
    `jax.profiler` trace: the events on GPU planes' "Stream #" lines (kernels and copies), on
    other device planes (TPU) their "XLA Ops" line."""
    from jax.profiler import ProfileData

    files = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    if not files:
        return {"error": f"no *.xplane.pb under {trace_dir}"}
    per_kernel, by_category = collections.defaultdict(float), collections.defaultdict(float)
    lines_read = []
    for plane in ProfileData.from_file(sorted(files)[-1]).planes:
        lines = list(plane.lines) if plane.name.startswith("/device:") else []
        streams = [line for line in lines if line.name.startswith("Stream #")]
        for line in streams or [line for line in lines if line.name == "XLA Ops"]:
            lines_read.append(f"{plane.name} {line.name}")
            for e in line.events:
                category = next((c for c, pattern in KERNEL_CATEGORIES
                                 if re.search(pattern, e.name, re.I)),
                                "other (fusions, copies, reductions)")
                per_kernel[e.name] += e.duration_ns / 1e6 / steps
                by_category[category] += e.duration_ns / 1e6 / steps
    return {"device_lines": lines_read, "total_ms_per_step": sum(per_kernel.values()),
            "by_category_ms": dict(by_category),
            "top_kernels_ms": sorted(per_kernel.items(), key=lambda kv: -kv[1])[:top],
            "num_kernels": len(per_kernel)}


# --- the PyTorch side


def to_torch(batch: dict[str, Any], device: str = "cpu") -> dict[str, Any]:
    """numpy arrays -> torch tensors on `device` (integers as int64, as embeddings want)."""
    import torch

    return {k: (torch.from_numpy(v).long() if v.dtype.kind in "iu" else torch.from_numpy(v)
                ).to(device) for k, v in batch.items()}


def cross_entropy(logits: Any, targets: Any, weights: Any = None,
                  label_smoothing: float = 0.0) -> Any:
    """Cross entropy of (B, T, V) logits (in float32) against (B, T) targets: the mean over all
    positions, or with `weights` the zoo tasks' weighted mean."""
    import torch.nn.functional as F

    loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                           reduction="mean" if weights is None else "none",
                           label_smoothing=label_smoothing)
    if weights is None:
        return loss
    return (loss * weights.flatten()).sum() / weights.sum().clamp_min(1e-9)


def lm_loss(model: Any, inputs: Any, targets: Any, weights: Any = None) -> Any:
    """A language model's `cross_entropy`: model(inputs) (B, T, V) against targets (B, T)."""
    return cross_entropy(model(inputs), targets, weights)


def lm_inputs(batch: dict[str, Any]) -> tuple:
    """A batch's (inputs, targets, weights): what `lm_loss` and the zoo's tasks take."""
    return batch["inputs"], batch["targets"], batch["weights"]


class TorchSide:
    """A PyTorch training step, as the zoo's: `loss_fn(model, *inputs(batch))` on the numpy
    `batch` moved to `device` (`inputs` runs every step; default `lm_inputs`; bf16 autocast with `dtype="bfloat16"`), backward, clipping, AdamW (OPT_CONFIG's,
    half its peak lr; `weight_decay` on >= 2-D parameters; fused when asked and on a GPU). The
    model is `build()` after seed 0, with denormals flushed to zero as XLA's CPU backend does
    (else torch slows down up to 10x); `compile=True` runs the loss through `torch.compile`.
    `run(n)` -> seconds per step; `first_step_s` is the first step's wall time (compile
    included)."""

    def __init__(self, build: Callable[[], Any], loss_fn: Callable[..., Any],
                 batch: dict[str, Any], inputs: Callable[[dict[str, Any]], tuple] = lm_inputs,
                 *, device: str = "cpu", dtype: str = "float32", compile: bool = False,
                 fused: bool = False, weight_decay: float = OPT_CONFIG.weight_decay):
        import torch

        if dtype not in ("bfloat16", "float32"):
            raise ConfigError(f"the PyTorch sides run bfloat16 autocast or float32; got {dtype}.")
        self.torch, self.device, self.loss_fn, self.inputs = torch, device, loss_fn, inputs
        self.batch = to_torch(batch, device)
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.set_flush_denormal(True)
        torch.manual_seed(0)
        self.model = build().to(device)
        self.num_params = sum(p.numel() for p in self.model.parameters())
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(
            [{"params": [p for p in self.params if p.ndim >= 2], "weight_decay": weight_decay},
             {"params": [p for p in self.params if p.ndim < 2], "weight_decay": 0.0}],
            lr=OPT_CONFIG.learning_rate * 0.5, betas=(OPT_CONFIG.adam_b1, OPT_CONFIG.adam_b2),
            eps=OPT_CONFIG.adam_eps, fused=fused or device == "cuda" or None)
        self.loss = lambda *args: loss_fn(self.model, *args)
        if compile:
            # A fresh compile per side: dynamo caches per code object, and the same model at a
            # second batch size would otherwise be recompiled with dynamic shapes.
            torch.compiler.reset()
            self.loss = torch.compile(self.loss, dynamic=False)
        self.autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
        t0 = time.perf_counter()
        self.first_loss = float(self._step())  # float() waits for the device
        self.first_step_s = time.perf_counter() - t0

    def _step(self):
        self.opt.zero_grad(set_to_none=True)
        with self.autocast:
            loss = self.loss(*self.inputs(self.batch))
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.params, OPT_CONFIG.grad_clip_norm)
        self.opt.step()
        return loss.detach()

    def run(self, n: int) -> float:
        sync = self.torch.cuda.synchronize if self.device == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            self._step()
        sync()
        return (time.perf_counter() - t0) / max(n, 1)
