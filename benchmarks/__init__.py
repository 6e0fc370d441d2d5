"""Benchmarks of the zoo (run as modules: `python -m benchmarks.train_step`). Results: RESULTS.md.

Importing `zoo` applies zoo/host_malloc.py before JAX starts; the JAX and PyTorch sides of a
benchmark share the process, so both run with it. This package also sets the zoo's XLA GPU
flags (zoo/jax_runtime.py), so that the benchmarks time what the launchers run; not the
compilation cache, which would hide compile times.
"""
from zoo import jax_runtime

jax_runtime.apply_gpu_xla_flags()
