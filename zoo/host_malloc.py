"""Back XLA's per-step scratch memory with transparent huge pages (Linux CPU hosts, glibc).

XLA on CPU allocates each executable's temporary buffer anew on every call. For the zoo's
train steps that buffer is hundreds of MB (651 MB for gpt_tiny at B=16, T=256), so glibc
serves it with `mmap` and returns it with `munmap`, and the next step page-faults all of it
back in, 4 KiB at a time: about 170,000 minor faults and 0.35 s of kernel time per gpt_tiny
step, roughly a fifth of the step on a 2-core CPU (benchmarks/RESULTS.md).

glibc's `glibc.malloc.hugetlb=1` tunable makes malloc ask for transparent huge pages, so the
same buffer takes 2 MiB faults: about 850 per step. Tunables are read when a process starts,
so `reexec_with_huge_pages()` restarts a `python -m PACKAGE.MODULE ...` entry point once with
the tunable set (same pid, same arguments). The `experiments` and `benchmarks` packages call it
from their `__init__`; it does nothing for imports from other code (pytest, notebooks). In your
own scripts set it in the environment:

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python train.py

Set ZOO_HUGE_PAGES=0 to turn the re-exec off. (glibc < 2.35 ignores the tunable; with the
kernel's transparent huge pages set to "never" it has no effect; with "always" it is not needed.)
This module imports nothing heavy.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping

TUNABLE = "glibc.malloc.hugetlb=1"
_THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def transparent_huge_pages_mode() -> str | None:
    """The kernel's THP mode ("always", "madvise" or "never"), or None where it cannot be read."""
    try:
        with open(_THP_MODE_FILE) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def huge_pages_wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """True where the tunable would help and is not set yet (Linux, THP on madvise)."""
    return (sys.platform.startswith("linux")
            and environ.get("ZOO_HUGE_PAGES", "1") != "0"
            and TUNABLE not in environ.get("GLIBC_TUNABLES", "")
            and transparent_huge_pages_mode() == "madvise")


def reexec_with_huge_pages(package: str) -> None:
    """If this process is `python -m {package}.<module> ...`, exec it again with the tunable.

    Called from a package `__init__`: while `-m` locates its module, `sys.argv[0]` is "-m",
    and `sys.orig_argv` holds the interpreter's own arguments, which the new process reuses.
    """
    argv = getattr(sys, "orig_argv", [])
    if sys.argv[:1] != ["-m"] or "-m" not in argv[1:-1]:
        return
    if not argv[argv.index("-m", 1) + 1].startswith(package + ".") or not huge_pages_wanted():
        return
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    env = {**os.environ, "GLIBC_TUNABLES": f"{tunables}:{TUNABLE}" if tunables else TUNABLE}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], env)
