"""zoo.host_malloc: entry points re-exec with glibc's huge-page tunable, and XLA's per-call
scratch memory then takes ~50x fewer page faults."""
import json
import os
import subprocess
import sys

import pytest

from zoo import host_malloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _page_faults(huge_pages: str) -> dict:
    env = {**os.environ, "ZOO_HUGE_PAGES": huge_pages, "JAX_PLATFORMS": "cpu"}
    env.pop("GLIBC_TUNABLES", None)
    out = subprocess.run([sys.executable, "-m", "benchmarks.page_faults"], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not host_malloc.huge_pages_wanted({}), reason="needs Linux with THP on madvise")
def test_entry_point_reexecs_with_huge_pages_and_faults_less():
    huge, default = _page_faults("1"), _page_faults("0")
    assert huge["glibc_tunables"] == host_malloc.TUNABLE and default["glibc_tunables"] == ""
    # ~95 MB of scratch: ~24,000 faults of 4 KiB pages per call without, a few hundred with.
    assert default["faults_per_call"] > 10_000, default
    assert huge["faults_per_call"] < 0.1 * default["faults_per_call"], (huge, default)


def test_import_zoo_does_not_load_jax():
    code = "import sys, zoo, zoo.host_malloc; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_reexec_outside_entry_points(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "execve", lambda *a: calls.append(a))
    monkeypatch.setattr(host_malloc, "huge_pages_wanted", lambda: True)
    host_malloc.reexec_with_huge_pages("experiments")  # under pytest: argv[0] is not "-m"
    assert calls == []
    monkeypatch.setattr(sys, "argv", ["-m"])
    monkeypatch.setattr(sys, "orig_argv", ["python", "-u", "-m", "experiments.train", "--x=1"])
    host_malloc.reexec_with_huge_pages("benchmarks")
    assert calls == []
    host_malloc.reexec_with_huge_pages("experiments")
    (exe, argv, env), = calls
    assert exe == sys.executable
    assert argv == [sys.executable, "-u", "-m", "experiments.train", "--x=1"]
    assert host_malloc.TUNABLE in env["GLIBC_TUNABLES"]
