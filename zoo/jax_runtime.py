"""Process-wide JAX settings of the zoo's launchers.

1. XLA flags for NVIDIA GPUs (`GPU_XLA_FLAGS`), set before jax starts (`configure`).
   `--xla_gpu_enable_triton_gemm=false` sends the matmuls to cuBLAS instead of autotuned
   Triton kernels. On an H200 (jax 0.11.2, 2026-11-30) the gpt2_small train step compiled in
   10.6 s instead of 52.4 s and ran faster (scanned layers: 25.1 vs 26.3 ms at B=8;
   benchmarks/RESULTS.md). Flags already named in XLA_FLAGS are left as the user set them; on
   CPU and TPU XLA ignores GPU flags.
2. JAX's persistent compilation cache in a per-user directory (`default_cache_dir()`), turned
   on once jax has started (`enable_compilation_cache`), on GPU and TPU: a second run of the
   same model skips its compile (gpt2_small on the H200: 59.7 s from process start to the first
   loss with an empty cache, 5.0 s with a warm one). Not by default on CPU, where XLA compiles
   the zoo's steps in seconds. JAX_COMPILATION_CACHE_DIR, when set, wins everywhere.

ZOO_XLA_GPU_FLAGS=0 turns off 1; ZOO_COMPILATION_CACHE=0 turns off 2, =1 turns it on on CPU
too; the run config's `compilation_cache=False` turns it off for one run. `experiments` and
`benchmarks` call `configure()` in their `__init__`; the training loop and the other launchers
call `enable_compilation_cache()`. In your own scripts: `configure()` before `import jax`,
`enable_compilation_cache()` after it, before the first computation.
"""
from __future__ import annotations

import os

GPU_XLA_FLAGS = ("--xla_gpu_enable_triton_gemm=false",)


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "zoo", "jax-compilation-cache")


def apply_gpu_xla_flags() -> list[str]:
    """Adds GPU_XLA_FLAGS to XLA_FLAGS (those whose name it does not hold yet); returns them."""
    if os.environ.get("ZOO_XLA_GPU_FLAGS", "1") == "0":
        return []
    current = os.environ.get("XLA_FLAGS", "")
    added = [f for f in GPU_XLA_FLAGS if f.split("=")[0] not in current]
    if added:
        os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added


def enable_compilation_cache() -> str | None:
    """Points JAX's persistent compilation cache at the per-user directory where the policy
    above says so; returns the directory in use (None: off)."""
    import jax

    if jax.config.jax_compilation_cache_dir:  # JAX_COMPILATION_CACHE_DIR or the user's own
        return jax.config.jax_compilation_cache_dir
    switch = os.environ.get("ZOO_COMPILATION_CACHE", "")
    if switch == "0" or (jax.default_backend() == "cpu" and switch != "1"):
        return None
    jax.config.update("jax_compilation_cache_dir", default_cache_dir())
    return default_cache_dir()


def disable_compilation_cache() -> None:
    import jax

    jax.config.update("jax_enable_compilation_cache", False)


def configure() -> None:
    """The settings that must precede `import jax` (the XLA flags)."""
    apply_gpu_xla_flags()
