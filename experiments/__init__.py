"""Experiment entry points (`python -m experiments.train ...`) and their configs.

Importing this package first sets the XLA GPU flags (zoo/jax_runtime.py), which has to happen
before jax is imported, as the entry points do next; importing `zoo` also keeps glibc from
unmapping XLA's per-step scratch memory (zoo/host_malloc.py).
"""
from zoo import jax_runtime

jax_runtime.configure()
