"""zoo.host_malloc: with the entry points' malloc options, XLA's per-call scratch memory is
reused instead of page-faulted back in on every call."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Minor page faults per call of a jitted function whose XLA scratch buffer (the dot's left
# operand) is as large as its (25000, 1000) f32 input: the fewest over calls 5-10 (the heap may
# still grow on the first calls). The script imports jax first and then the zoo, as a plain user
# script may: `import zoo` sets the malloc options, since JAX's backend has not started yet.
PAGE_FAULTS = """
import json, resource
import jax, jax.numpy as jnp
import zoo
f = jax.jit(lambda x: (jnp.sin(jnp.exp(x) * 2 + x[::-1]) @ x[:64].T).sum())
x = jnp.full((25_000, 1_000), 1e-3, jnp.float32)
faults = []
for i in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"faults_per_call": min(faults[4:])}))
"""


def _page_faults(keep: str) -> dict:
    env = {**os.environ, "ZOO_KEEP_FREED_MEMORY": keep, "JAX_PLATFORMS": "cpu"}
    for var in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_"):
        env.pop(var, None)
    out = subprocess.run([sys.executable, "-c", PAGE_FAULTS], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_scratch_memory_is_reused_not_refaulted():
    kept, default = _page_faults("1"), _page_faults("0")
    # ~95 MB of scratch: ~24,000 fresh 4 KiB pages per call without the options, ~none with.
    assert default["faults_per_call"] > 10_000, default
    assert kept["faults_per_call"] < 0.1 * default["faults_per_call"], (kept, default)


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return out.stdout.strip()


def test_import_zoo_does_not_load_jax():
    assert _run("import sys, zoo, zoo.host_malloc; print('jax' in sys.modules)") == "False"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_applies_until_jax_starts_its_backend_and_can_be_switched_off(monkeypatch):
    assert _run("import zoo.host_malloc as h; print(h.keep_freed_memory())") == "True"
    assert _run("import jax, zoo.host_malloc as h; print(h.keep_freed_memory())") == "True"
    started = "import jax; jax.devices(); import zoo.host_malloc as h; print(h.keep_freed_memory())"
    assert _run(started) == "False"
    monkeypatch.setenv("ZOO_KEEP_FREED_MEMORY", "0")
    assert _run("import zoo.host_malloc as h; print(h.keep_freed_memory())") == "False"
