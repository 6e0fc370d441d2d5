"""Experiment entry points (`python -m experiments.train ...`) and their configs.

Importing this package first keeps glibc from unmapping XLA's per-step scratch memory (see
zoo/host_malloc.py), and sets the XLA GPU flags and the persistent compilation cache
(zoo/jax_runtime.py); both have to happen before jax is imported, which the entry points do next.
"""
from zoo import jax_runtime
from zoo.host_malloc import keep_freed_memory

keep_freed_memory()
jax_runtime.configure()
