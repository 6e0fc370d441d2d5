"""Test set-up: 4 fake CPU devices (so every pmap / mesh path runs in CI) and strict JAX numerics.

XLA reads XLA_FLAGS once, when the backend starts, so this must run before anything imports jax.
"""
import atexit
import gc
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One temp dir for the session, removed at exit, for the tests and the CLI subprocesses they
# start: TFDS leaves an empty "tmp*tfds" dir behind for every dataset builder it creates
# before the data is prepared (DatasetInfo.initialize_from_bucket), hundreds per run.
_SESSION_TMP = tempfile.mkdtemp(prefix="zoo-tests-")
atexit.register(shutil.rmtree, _SESSION_TMP, ignore_errors=True)
os.environ["TMPDIR"] = _SESSION_TMP
tempfile.tempdir = None  # tempfile re-reads TMPDIR
# One persistent XLA compilation cache for the session, inherited by the CLI subprocesses: the
# tests compile the same train steps again and again (resumed runs, restarted processes).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_SESSION_TMP, "xla-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
# Starting JAX's backend before any test imports `zoo` keeps this process on glibc's default
# allocator: the in-process tests are compile-bound, and the zoo's malloc options cost ~15% of
# compile time (zoo/host_malloc.py). The launchers the tests start as subprocesses set them, as
# users' runs do; tests/test_host_malloc.py checks both.
jax.devices()
# Not "strict" dtype promotion: optax's own Adam bias correction mixes float and int32 there.


@pytest.hookimpl(optionalhook=True)  # a host without pytest-xdist runs `pytest -o addopts=""`
def pytest_xdist_auto_num_workers(config):
    """Workers for `-n auto` (pyproject's addopts; --maxprocesses caps them): one per CPU this
    process may run on (hyperthreads count: the tests mostly compile, one thread each), or none
    on an accelerator (JAX_PLATFORMS=cuda or tpu), whose memory one process allocates. The
    workers inherit this process's environment: its temp dir and compilation cache."""
    if os.environ["JAX_PLATFORMS"] != "cpu":
        return 0
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drops JAX's compiled programs after each test module. Every XLA-CPU executable keeps
    ~100 memory mappings of its code; a whole suite in one process reached the kernel's limit
    of 65,530 (vm.max_map_count) and the next compile died with a segmentation fault."""
    yield
    jax.clear_caches()
    gc.collect()
