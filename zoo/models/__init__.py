"""Complete models, one file per family; importing a family registers its presets."""
from zoo.models import gpt  # noqa: F401
