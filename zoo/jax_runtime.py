"""Process-wide JAX settings the zoo's launchers apply before jax starts.

1. XLA flags for NVIDIA GPUs (`GPU_XLA_FLAGS`). `--xla_gpu_enable_triton_gemm=false` sends the
   matmuls to cuBLAS instead of autotuned Triton kernels. On an H200 (jax 0.11.2,
   2026-11-30) the gpt2_small train step compiled in 10.6 s instead of 52.4 s and ran faster
   (scanned layers: 25.1 vs 26.3 ms at B=8; benchmarks/RESULTS.md). Flags already named in
   XLA_FLAGS are left as the user set them; on CPU and TPU XLA ignores GPU flags.
2. JAX's persistent compilation cache, in a per-user directory (`default_cache_dir()`): a second
   run of the same model skips its compile (gpt2_small on the H200: 59.7 s from process start
   to the first loss with an empty cache, 5.0 s with a warm one). JAX_COMPILATION_CACHE_DIR,
   when set, wins.

ZOO_XLA_GPU_FLAGS=0 and ZOO_COMPILATION_CACHE=0 turn either off; the run config's
`compilation_cache=False` turns the cache off for one run (`disable_compilation_cache`).
`experiments` and `benchmarks` call `configure()` in their `__init__`; in your own scripts call
it before `import jax` (it only sets environment variables and imports nothing heavy).
"""
from __future__ import annotations

import os
import sys

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
    """Points JAX's persistent compilation cache at the per-user directory (unless
    JAX_COMPILATION_CACHE_DIR names one already); returns the directory, None when off."""
    if os.environ.get("ZOO_COMPILATION_CACHE", "1") == "0":
        return None
    directory = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", default_cache_dir())
    if "jax" in sys.modules:  # too late for the environment: tell jax directly
        import jax

        jax.config.update("jax_compilation_cache_dir", directory)
    return directory


def disable_compilation_cache() -> None:
    import jax

    jax.config.update("jax_enable_compilation_cache", False)


def configure() -> None:
    """Both of the above; call before `import jax`."""
    apply_gpu_xla_flags()
    enable_compilation_cache()
