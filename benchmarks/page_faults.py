"""Minor page faults per call of a jitted function with a large XLA scratch buffer.

    python -m benchmarks.page_faults [--rows 25000]

Prints one JSON line: the fewest faults over calls 5-10 (the heap may still grow on the first
calls) and whether zoo/host_malloc.py's malloc options are on (the `benchmarks` package applies
them; `ZOO_KEEP_FREED_MEMORY=0` runs without). Linux only (getrusage's ru_minflt).
"""
from __future__ import annotations

import argparse
import json
import resource

from benchmarks import MALLOC_OPTIONS_APPLIED


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=25_000,
                        help="rows of the (rows, 1000) f32 input; the scratch buffer is as large")
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp

    # The dot's left operand, the same size as x, is materialised in XLA's temp buffer.
    f = jax.jit(lambda x: (jnp.sin(jnp.exp(x) * 2 + x[::-1]) @ x[:64].T).sum())
    x = jnp.full((args.rows, 1_000), 1e-3, jnp.float32)
    faults = []
    for i in range(10):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        f(x).block_until_ready()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    result = {"faults_per_call": min(faults[4:]), "scratch_mb": round(x.nbytes / 2**20),
              "keep_freed_memory": MALLOC_OPTIONS_APPLIED}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
