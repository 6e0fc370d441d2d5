"""zoo: pure functional sequence models in JAX/Flax that train through one shared step.

Public API:
    zoo.create_model(name, **overrides) -> flax.linen.Module
    zoo.list_models(pattern="*") -> list[str]
    zoo.get_config(name, **overrides) -> the model's frozen config dataclass
"""
# The registry imports zoo.models (and so jax) on first use, which keeps `import zoo.host_malloc`
# light enough to run before jax (see that module).
from zoo.registry import create_model, get_config, list_models

__all__ = ["create_model", "get_config", "list_models"]
