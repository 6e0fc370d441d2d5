"""One run per workdir: a second run fails at once naming the holder; a killed holder's lock is
taken over."""
import os
import signal
import subprocess
import sys
import time

import pytest

from zoo.errors import WorkdirBusyError, WorkdirError
from zoo.train.loop import train_and_evaluate
from zoo.train.workdir_lock import WorkdirLock

from run_configs import tiny_config

HOLD = """
import sys, time
from zoo.train.workdir_lock import WorkdirLock
with WorkdirLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    """A process holding tmp_path's lock."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_run_fails_at_once_naming_the_holder(tmp_path, holder):
    start = time.monotonic()
    with pytest.raises(WorkdirBusyError, match=rf"in use by another run \(pid {holder.pid}\)"):
        train_and_evaluate(tiny_config(num_train_steps=2, parallel="jit",
                                       per_device_batch_size=1), str(tmp_path))
    assert time.monotonic() - start < 30  # refused before building or compiling anything much
    assert not os.path.exists(tmp_path / "checkpoints")


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, holder):
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    summary = train_and_evaluate(tiny_config(num_train_steps=2, parallel="jit",
                                             per_device_batch_size=1), str(tmp_path))
    assert summary["step"] == 2
    with WorkdirLock(str(tmp_path)):  # released at the end of the run
        pass


def test_an_unwritable_workdir_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(WorkdirError, match=r"cannot write to workdir .*file"):
        with WorkdirLock(str(blocker / "run")):
            pass
