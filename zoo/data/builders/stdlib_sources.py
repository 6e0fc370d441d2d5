"""The standard library's own .py files, the raw material of the embedded datasets.

Paths are relative to the stdlib root (the directory of `os`), "/"-separated and sorted; tests,
GUIs and vendored or legacy packages are left out. Nothing here imports a stdlib module: the
builders read the files as text.
"""
from __future__ import annotations

import os

# Stdlib directories / files never read (tests, GUIs, vendored or legacy packages).
_SKIP_DIRS = frozenset({
    "site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "tkinter",
    "turtledemo", "ensurepip", "__pycache__", "distutils",
})


def _is_skipped(part: str) -> bool:
    """True for a path component that is excluded, or that names a test ("test_x", "x_test")."""
    stem = part.removesuffix(".py")
    return part in _SKIP_DIRS or bool({"test", "tests"} & set(stem.split("_")))


def stdlib_path(rel_path: str) -> str:
    """The absolute path of a file given relative to the stdlib root."""
    return os.path.join(os.path.dirname(os.__file__), rel_path)


def stdlib_files() -> list[str]:
    """Paths of the stdlib's .py files relative to its root, sorted, skipped ones left out."""
    root = os.path.dirname(os.__file__)
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not _is_skipped(d)]
        rel = os.path.relpath(dirpath, root)
        for f in filenames:
            if f.endswith(".py") and not _is_skipped(f):
                files.append(os.path.normpath(os.path.join(rel, f)).replace(os.sep, "/"))
    return sorted(files)


def module_name(rel_path: str) -> str:
    """"email/mime/text.py" -> "email.mime.text"; "json/__init__.py" -> "json"."""
    parts = rel_path[:-3].split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)
