"""Experiment entry points (`python -m experiments.train ...`) and their configs.

Importing this package first keeps glibc from unmapping XLA's per-step scratch memory (see
zoo/host_malloc.py); that has to happen before jax is imported, which the entry points do next.
"""
from zoo.host_malloc import keep_freed_memory

keep_freed_memory()
