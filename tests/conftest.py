"""Test set-up: 4 fake CPU devices (so every pmap / mesh path runs in CI) and strict JAX numerics.

XLA reads XLA_FLAGS once, when the backend starts, so this must run before anything imports jax.
"""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
# Not "strict" dtype promotion: optax's own Adam bias correction mixes float and int32 there.
