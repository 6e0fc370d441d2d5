"""One run per workdir: an OS lock (`filelock`, flock on POSIX) held for the whole run.

    with WorkdirLock(workdir):
        ...train...

A second run on a locked workdir fails at once with `WorkdirBusyError` naming the holder's pid
(kept beside the lock in `run.pid`). The OS drops the lock of a killed process, so a workdir
left by a SIGKILLed run is taken over by the next run without any clean-up.
"""
from __future__ import annotations

import errno
import os

import filelock

from zoo.errors import WorkdirBusyError, WorkdirError

LOCK_FILE = ".lock"
PID_FILE = "run.pid"


def _holder(workdir: str) -> str:
    try:
        with open(os.path.join(workdir, PID_FILE)) as f:
            return f"pid {int(f.read().strip())}"
    except (OSError, ValueError):
        return "an unknown process"


def writable_workdir(workdir: str) -> str:
    """Creates `workdir` if needed; WorkdirError naming it when it cannot be written."""
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_probe.{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise WorkdirError(
            f"cannot write to workdir {workdir}: {e.strerror or e}. Pass a writable --workdir"
            + (" or free some disk space." if e.errno == errno.ENOSPC else ".")) from e
    return workdir


class WorkdirLock:
    def __init__(self, workdir: str):
        self.workdir = os.path.abspath(workdir)
        self._lock = filelock.FileLock(os.path.join(self.workdir, LOCK_FILE), timeout=0)

    def __enter__(self) -> "WorkdirLock":
        writable_workdir(self.workdir)
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise WorkdirBusyError(
                f"workdir {self.workdir} is in use by another run ({_holder(self.workdir)}); "
                "wait for it to finish, stop it, or pass another --workdir.") from None
        with open(os.path.join(self.workdir, PID_FILE), "w") as f:
            f.write(f"{os.getpid()}\n")
        return self

    def __exit__(self, *exc) -> None:
        try:
            os.remove(os.path.join(self.workdir, PID_FILE))
        except OSError:
            pass
        self._lock.release()
