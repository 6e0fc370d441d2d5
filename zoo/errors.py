"""The errors the zoo raises for bad input and damaged state; each message names the problem and
the fix in one line, so a launcher can print it without a traceback.

All derive from `ZooError`; each also derives from the builtin a caller would catch without
knowing the zoo (ValueError for bad values, FileNotFoundError for missing files, ...).
"""
from __future__ import annotations


class ZooError(Exception):
    """Base of every error the zoo raises on purpose."""


class ConfigError(ZooError, ValueError):
    """A config field, model override or command-line argument is out of range or unknown."""


class InputError(ZooError, ValueError):
    """Arrays passed to a model or task have the wrong dtype, rank, length or id range."""


class NonFiniteError(ZooError, FloatingPointError):
    """A loss, gradient or eval metric became NaN or infinite."""


class CheckpointError(ZooError, RuntimeError):
    """A workdir's checkpoints are missing, damaged, or belong to another model or run."""


class WorkdirBusyError(ZooError, RuntimeError):
    """Another live run holds the workdir's lock."""


class WorkdirError(ZooError, OSError):
    """The workdir cannot be read or written (missing, read-only, disk full)."""
