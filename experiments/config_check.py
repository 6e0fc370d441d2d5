"""Friendly errors for `--config path[:arg]` and `--config.key=value`, checked before absl
parses them.

ml_collections reports a missing config file only when the config is first used, an error in
`get_config(arg)` wrapped in a flag error holding a traceback, and an unknown key as a bare
`AttributeError: 'key'`; `check_config_argv` raises a one-line ConfigError for each instead:
naming the file and the config files there are, the argument and the ones the file takes, or
the key, the closest valid ones and all of them.
"""
from __future__ import annotations

import difflib
import glob
import importlib.util
import os
import re

from zoo.errors import ConfigError

CONFIG_DIR = os.path.join("experiments", "configs")


def _config_path(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg in ("--config", "-config") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(("--config=", "-config=")):
            return arg.split("=", 1)[1]
    return None


def _available_configs() -> str:
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(here, "*.py"))
                   if not os.path.basename(p).startswith("_"))
    return ", ".join(os.path.join(CONFIG_DIR, name) for name in names)


def load_config(path: str, arg: str | None = None):
    """`get_config(arg)` of the config file at `path` (a file, not an importable module).

    ConfigError when the file does not exist or its get_config refuses `arg`."""
    if not os.path.isfile(path):
        state = "is a directory" if os.path.isdir(path) else "does not exist"
        raise ConfigError(f"config file {path!r} {state}; pass one of {_available_configs()} "
                          "(optionally followed by :runlocal).")
    spec = importlib.util.spec_from_file_location("_zoo_config", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load config file {path!r}; pass a Python file like "
                          f"{os.path.join(CONFIG_DIR, 'gpt_tiny.py')}.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path!r} defines no get_config(arg) function.")
    try:
        return module.get_config(arg or None)
    except ConfigError as e:
        raise ConfigError(f"{path}:{arg}: {e}" if arg else f"{path}: {e}") from e


def check_config_argv(argv: list[str]) -> None:
    """Raises ConfigError if `argv`'s --config file is missing, refuses its argument, or is
    overridden (--config.key=value) at a key it does not define."""
    path = _config_path(argv)
    if path is None:
        return  # absl reports the missing --config
    path, _, arg = path.partition(":")
    config = load_config(path, arg)
    for item in argv:
        if item == "--":
            break
        match = re.match(r"--?config\.([A-Za-z_][\w.]*)", item)
        if match:
            _check_key_path(config, match.group(1).rstrip(".").split("."), item, path)


def _check_key_path(config, keys: list[str], item: str, path: str) -> None:
    """ConfigError unless `keys` (e.g. ["mesh", "data"]) walks from `config` through groups of
    keys: an unknown key, or a key under a value (`--config.model.x` where model is a name)."""
    node, walked, group = config, [], config
    for key in keys:
        where = f"config.{'.'.join(walked[:-1])} in {path}" if len(walked) > 1 else path
        if not hasattr(node, "keys"):  # a value, so `key` cannot be under it
            flat = f" The run config is flat: did you mean --config.{key}?" if key in config else ""
            raise ConfigError(f"config.{'.'.join(walked)} is a value ({node!r}), not a group of "
                              f"keys, so {item!r} names nothing.{flat} Valid keys of {where}: "
                              f"{', '.join(sorted(group.keys()))}.")
        if key not in node:
            valid = sorted(node.keys())
            close = difflib.get_close_matches(key, valid, n=3)
            prefix = "--config." + "".join(k + "." for k in walked)
            hint = f" Did you mean {', '.join(prefix + c for c in close)}?" if close else ""
            where = f"config.{'.'.join(walked)} in {path}" if walked else path
            raise ConfigError(f"unknown config key {'.'.join(walked + [key])!r} in {item!r}."
                              f"{hint} Valid keys of {where}: {', '.join(valid)}.")
        group, node, walked = node, node[key], walked + [key]
