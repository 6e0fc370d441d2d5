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
print(json.dumps({"xla_flags": os.environ.get("XLA_FLAGS", ""),
                  "cache_dir": jax.config.jax_compilation_cache_dir,
                  "devices": len(jax.devices())}))
"""


def _probe(tmp_path, **env):
    base = {k: v for k, v in os.environ.items()
            if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
    base.update(XDG_CACHE_HOME=str(tmp_path), **env)
    out = subprocess.run([sys.executable, "-c", PROBE], env=base, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_defaults_add_the_gpu_flags_and_a_per_user_cache(tmp_path):
    got = _probe(tmp_path, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    assert "--xla_gpu_enable_triton_gemm=false" in got["xla_flags"]
    assert "--xla_force_host_platform_device_count=2" in got["xla_flags"]
    assert got["devices"] == 2  # the user's flags still apply (and XLA-CPU takes the GPU flag)
    assert got["cache_dir"] == str(tmp_path / "zoo" / "jax-compilation-cache")


def test_user_settings_win_and_switches_turn_both_off(tmp_path):
    got = _probe(tmp_path, XLA_FLAGS="--xla_gpu_enable_triton_gemm=true",
                 JAX_COMPILATION_CACHE_DIR=str(tmp_path / "mine"))
    assert got["xla_flags"] == "--xla_gpu_enable_triton_gemm=true"
    assert got["cache_dir"] == str(tmp_path / "mine")
    off = _probe(tmp_path, ZOO_XLA_GPU_FLAGS="0", ZOO_COMPILATION_CACHE="0")
    assert off["xla_flags"] == "" and off["cache_dir"] is None
