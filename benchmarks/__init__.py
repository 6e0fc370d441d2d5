"""Benchmarks of the zoo (run as modules: `python -m benchmarks.train_step`). Results: RESULTS.md.

Like `experiments`, this package applies zoo/host_malloc.py before jax is imported; the JAX and
PyTorch sides of a benchmark share the process, so both run with it.
It also sets the zoo's XLA GPU flags (zoo/jax_runtime.py), so that the benchmarks time what
the launchers run; not the compilation cache, which would hide compile times.
"""
from zoo import jax_runtime
from zoo.host_malloc import keep_freed_memory

keep_freed_memory()
jax_runtime.apply_gpu_xla_flags()
