"""The launchers' process-wide JAX settings (zoo/jax_runtime.py), each in a fresh process."""
import json
import os
import subprocess
import sys

PROBE = """
import json, os
from zoo import jax_runtime
jax_runtime.configure()
import jax
cache = jax_runtime.enable_compilation_cache()
print(json.dumps({"xla_flags": os.environ.get("XLA_FLAGS", ""), "cache": cache,
                  "cache_dir": jax.config.jax_compilation_cache_dir,
                  "devices": len(jax.devices())}))
"""


def _probe(tmp_path, **env):
    base = {k: v for k, v in os.environ.items()
            if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR", "ZOO_COMPILATION_CACHE")}
    base.update(XDG_CACHE_HOME=str(tmp_path), JAX_PLATFORMS="cpu", **env)
    out = subprocess.run([sys.executable, "-c", PROBE], env=base, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_gpu_flags_are_added_and_the_users_flags_kept(tmp_path):
    got = _probe(tmp_path, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    assert "--xla_gpu_enable_triton_gemm=false" in got["xla_flags"]
    assert "--xla_force_host_platform_device_count=2" in got["xla_flags"]
    assert got["devices"] == 2  # the user's flags still apply (and XLA-CPU takes the GPU flag)
    mine = _probe(tmp_path, XLA_FLAGS="--xla_gpu_enable_triton_gemm=true")
    assert mine["xla_flags"] == "--xla_gpu_enable_triton_gemm=true"
    assert _probe(tmp_path, ZOO_XLA_GPU_FLAGS="0")["xla_flags"] == ""


def test_compilation_cache_is_off_on_cpu_unless_asked(tmp_path):
    assert _probe(tmp_path)["cache"] is None
    forced = _probe(tmp_path, ZOO_COMPILATION_CACHE="1")
    assert forced["cache"] == forced["cache_dir"] == str(
        tmp_path / "zoo" / "jax-compilation-cache")
    own = _probe(tmp_path, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "mine"))
    assert own["cache"] == str(tmp_path / "mine")
    assert _probe(tmp_path, ZOO_COMPILATION_CACHE="0")["cache"] is None
