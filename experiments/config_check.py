"""Friendly errors for `--config.key=value` overrides, checked before absl parses them.

ml_collections reports an unknown key as a bare `AttributeError: 'key'` with a traceback; this
names the key, suggests the closest valid ones and lists them all.
"""
from __future__ import annotations

import difflib
import importlib.util
import re


def _config_path(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def load_config(path: str, arg: str | None = None):
    """`get_config(arg)` of the config file at `path` (a file, not an importable module)."""
    spec = importlib.util.spec_from_file_location("_zoo_config", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot load config file {path!r}; pass a path like "
                         "experiments/configs/gpt_tiny.py.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg or None)


def unknown_override_error(argv: list[str]) -> str | None:
    """An error message if `argv` overrides a key the config file does not define, else None."""
    path = _config_path(argv)
    if path is None:
        return None
    path, _, arg = path.partition(":")
    try:
        config = load_config(path, arg)
    except ValueError as e:
        return str(e)
    valid = sorted(config.keys())
    for item in argv:
        match = re.match(r"--config\.([A-Za-z_][\w]*)", item)
        if match and match.group(1) not in config:
            key = match.group(1)
            close = difflib.get_close_matches(key, valid, n=3)
            hint = f" Did you mean {', '.join('--config.' + c for c in close)}?" if close else ""
            return (f"unknown config key {key!r} in {item!r}.{hint} Valid keys of {path}: "
                    f"{', '.join(valid)}.")
    return None
