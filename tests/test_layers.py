"""The layering of pyproject.toml's import-linter contract holds (imports point down only)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_imports_point_down_the_layers():
    lint = shutil.which("lint-imports") or pytest.fail("import-linter is a test dependency")
    result = subprocess.run([lint], cwd=REPO_ROOT, capture_output=True, text=True,
                            env={"PYTHONPATH": str(REPO_ROOT), "PATH": str(Path(sys.executable).parent)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
