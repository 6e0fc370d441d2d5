"""Keep glibc from handing XLA's per-step scratch memory back to the kernel (Linux CPU hosts).

XLA on CPU allocates each executable's temporary buffer anew on every call. For the zoo's
train steps that buffer is hundreds of MB (651 MB for gpt_tiny at B=16, T=256), so glibc
serves it with `mmap` and returns it with `munmap`, and the next step page-faults all of it
back in: about 170,000 minor faults and 0.35 s of kernel time per gpt_tiny step, roughly a
fifth of the step on a 2-core CPU (benchmarks/RESULTS.md).

`keep_freed_memory()` sets three glibc malloc options so that the buffer stays mapped and is
reused: one malloc arena (a thread's own arena cannot grow past 64 MB without mmap), no mmap
for large blocks, and no trimming of the heap. The process keeps its peak heap, as with
tcmalloc or jemalloc. The price: XLA compiles about 15% slower (its compiler threads share the
one arena), paid once per compiled function. (glibc's `glibc.malloc.hugetlb=1` tunable was
measured too: 2 MiB faults instead of 4 KiB, but the kernel still zeroes the whole buffer
every step, and steps were about 10% slower than with these options.)

It must run before JAX starts its backend (the first array, device query or compile): the
backend's threads allocate XLA's buffers, and glibc fixes a thread's arena when it first
allocates. `import zoo` calls it, so a plain script that imports the zoo before it computes
anything gets it too (`import jax` first is fine); so do `python -m experiments.train` and the
benchmarks. Where JAX has already started, it does nothing; set the same options in the
environment instead, which works in any order:

    MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=-1 python train.py

Set ZOO_KEEP_FREED_MEMORY=0 to leave the allocator alone. This module imports nothing heavy.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt(3) parameter numbers from glibc's malloc.h; M_TRIM_THRESHOLD -1 disables trimming.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))
_ENV_SWITCH = "ZOO_KEEP_FREED_MEMORY"


def keep_freed_memory() -> bool:
    """Apply the malloc options above. Returns True when glibc accepted all of them.

    A no-op (False) off Linux/glibc, with ZOO_KEEP_FREED_MEMORY=0, or once JAX's backend has
    started (the arena limit could no longer take effect; set the environment instead).
    """
    if os.environ.get(_ENV_SWITCH, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    if _jax_backend_started():
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in _SETTINGS)


def _jax_backend_started() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src.xla_bridge import backends_are_initialized
    except ImportError:  # a jax without it: assume the worst
        return True
    return backends_are_initialized()
