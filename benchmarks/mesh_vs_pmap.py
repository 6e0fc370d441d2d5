"""The same train step through `jax.pmap` and through `jax.jit` over a device mesh (data=N).

    python -m benchmarks.mesh_vs_pmap [--devices 4] [--batch 16 --seq-len 128] [--json PATH]

gpt_tiny (dropout 0) on N fake CPU devices (`--xla_force_host_platform_device_count`, set
here before JAX starts), one fixed global batch: `pmap` is `pmap_train_step` on a replicated
state and the batch split (N, B/N, ...); `mesh` is `zoo.train.mesh.mesh_train_step` on a
mesh {"data": N} with the batch as one global array. Both start from the same state and are
timed in alternating rounds (`benchmarks.harness`). Besides wall time per step, each round
records the process's CPU time per step (all its threads): on a shared machine, where other
processes' load makes wall times of single rounds vary 2x, the CPU time still compares the
work the two compiled steps do.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any


def _fake_devices(n: int) -> None:
    if "jax" in sys.modules:
        return  # too late: the backend reads XLA_FLAGS once
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


class _Side:
    """A compiled step on a fixed batch: `run(n)` -> seconds per step."""

    def __init__(self, step, state, batch, rng):
        import jax

        self.jax, self.step, self.batch, self.rng = jax, step, batch, rng
        self.cpu_s_per_step: list[float] = []
        t0 = time.perf_counter()
        self.state, metrics = step(state, batch, rng)
        self.first_loss = float(jax.device_get(metrics["loss"]).reshape(-1)[0])
        self.compile_s = time.perf_counter() - t0

    def run(self, n: int) -> float:
        t0, cpu0 = time.perf_counter(), time.process_time()
        state, metrics = self.state, None
        for _ in range(n):
            state, metrics = self.step(state, self.batch, self.rng)
        self.jax.block_until_ready((state, metrics))
        self.state = state
        self.cpu_s_per_step.append((time.process_time() - cpu0) / max(n, 1))
        return (time.perf_counter() - t0) / max(n, 1)


def build_sides(model_name: str, batch_size: int, seq_len: int) -> dict[str, _Side]:
    import jax
    from flax import jax_utils

    import zoo
    from benchmarks.harness import OPT_CONFIG, lm_batch
    from zoo.tasks import get_task
    from zoo.train import mesh as mesh_lib
    from zoo.train.optimizer import create_optimizer, learning_rate_schedule
    from zoo.train.state import create_train_state
    from zoo.train.step import pmap_train_step

    model = zoo.create_model(model_name, dropout_rate=0.0)
    task = get_task("causal_lm", model.config)
    schedule = learning_rate_schedule(OPT_CONFIG)
    tx = create_optimizer(OPT_CONFIG, schedule)
    example = task.example_inputs(model.config, seq_len)
    state = create_train_state(model, tx, example, jax.random.key(0))
    batch, rng = lm_batch(batch_size, seq_len, model.config.vocab_size), jax.random.key(1)
    n = jax.device_count()

    pmap = _Side(pmap_train_step(task, learning_rate_fn=schedule),
                 jax_utils.replicate(state),
                 {k: v.reshape(n, -1, *v.shape[1:]) for k, v in batch.items()}, rng)
    mesh = mesh_lib.create_mesh({"data": n})
    shardings = mesh_lib.train_state_shardings(model, tx, example, mesh)
    mesh_side = _Side(mesh_lib.mesh_train_step(task, mesh, shardings, learning_rate_fn=schedule),
                      mesh_lib.shard_state(state, shardings), mesh_lib.global_batch(batch, mesh),
                      rng)
    return {"pmap": pmap, "mesh": mesh_side}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="gpt_tiny")
    p.add_argument("--devices", type=int, default=4, help="fake CPU devices")
    p.add_argument("--batch", type=int, default=16, help="global batch")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="train steps per timed round")
    p.add_argument("--repeats", type=int, default=6, help="timed rounds (A B A B ...)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--max-wait", type=float, default=20.0,
                   help="seconds to wait for an idle CPU before each round (0: never wait)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    _fake_devices(args.devices)

    from benchmarks.harness import (command_line, machine_info, print_table, summarize,
                                    time_rounds, write_json)

    sides = build_sides(args.model, args.batch, args.seq_len)
    print("first-step loss: " + ", ".join(f"{k} {s.first_loss:.5f}" for k, s in sides.items()))
    for side in sides.values():
        side.run(args.warmup)
        side.cpu_s_per_step.clear()
    times, loads = time_rounds(sides, args.repeats, args.steps, args.max_wait)
    results = summarize(times, loads, tokens=args.batch * args.seq_len)
    ratio = results["mesh"]["ms_per_step"] / results["pmap"]["ms_per_step"]
    for k, side in sides.items():
        results[k]["cpu_ms_per_step"] = statistics.median(side.cpu_s_per_step) * 1e3
    cpu_ratio = results["mesh"]["cpu_ms_per_step"] / results["pmap"]["cpu_ms_per_step"]
    print_table(["side", "ms/step (min-max)", "CPU ms/step", "tokens/s", "clean rounds",
                 "compile + 1st step"],
                [[k, f"{r['ms_per_step']:.1f} ({r['ms_per_step_min']:.1f}-"
                     f"{r['ms_per_step_max']:.1f})", f"{r['cpu_ms_per_step']:.1f}",
                  f"{r['tokens_per_s']:,.0f}", f"{r['clean_rounds']}/{r['rounds']}",
                  f"{sides[k].compile_s:.1f} s"]
                 for k, r in results.items()])
    print(f"mesh / pmap: step time {ratio:.3f}, CPU time per step {cpu_ratio:.3f}")
    out = {"machine": {**machine_info(), "command": command_line("benchmarks.mesh_vs_pmap", argv),
                       "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")},
           "args": vars(args), "results": results, "mesh_over_pmap": ratio,
           "mesh_over_pmap_cpu": cpu_ratio,
           "rounds_cpu_ms": {k: [t * 1e3 for t in s.cpu_s_per_step] for k, s in sides.items()},
           "first_loss": {k: s.first_loss for k, s in sides.items()}}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
