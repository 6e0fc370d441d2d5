"""Test set-up: 4 fake CPU devices (so every pmap / mesh path runs in CI) and strict JAX numerics.

XLA reads XLA_FLAGS once, when the backend starts, so this must run before anything imports jax.
"""
import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA compilation cache for the session, inherited by the CLI subprocesses: the
# tests compile the same train steps again and again (resumed runs, restarted processes).
_XLA_CACHE = tempfile.mkdtemp(prefix="zoo-tests-xla-cache-")
atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _XLA_CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
# Not "strict" dtype promotion: optax's own Adam bias correction mixes float and int32 there.
