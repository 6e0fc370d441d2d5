"""Benchmarks of the zoo (run as modules: `python -m benchmarks.gpt_step`). Results: RESULTS.md.

Like `experiments`, `python -m benchmarks.<module>` restarts itself once with glibc's huge-page
tunable (zoo/host_malloc.py); the JAX and PyTorch sides of a benchmark share the process, so
both run with it.
"""
from zoo.host_malloc import reexec_with_huge_pages

reexec_with_huge_pages(__name__)
