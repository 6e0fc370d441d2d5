"""Reading a pipeline's optional config fields."""
from __future__ import annotations

from typing import Any


def config_field(config: Any, name: str, default: Any = None) -> Any:
    """`config.name`, or `default` where the config lacks the field or holds None."""
    value = getattr(config, name, None)
    return default if value is None else value
