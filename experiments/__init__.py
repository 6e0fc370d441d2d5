"""Experiment entry points (`python -m experiments.train ...`) and their configs.

`python -m experiments.<module>` restarts itself once with glibc's huge-page tunable, so that
XLA's per-step scratch memory is not page-faulted in 4 KiB pages (zoo/host_malloc.py).
"""
from zoo.host_malloc import reexec_with_huge_pages

reexec_with_huge_pages(__name__)
