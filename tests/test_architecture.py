"""The layering contract in pyproject.toml ([tool.importlinter]) holds, and it catches
an upward import: the core importing a task, a task importing the command line, a
data set importing a task, or two files importing each other."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed")


def lint(src: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [str(LINT), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_with(tmp_path: Path, file: str, line: str) -> Path:
    """A copy of the package with `line` appended to `file`."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "rnnkit", src / "rnnkit", ignore=shutil.ignore_patterns("*.xz"))
    path = src / "rnnkit" / file
    path.write_text(path.read_text() + f"\n{line}\n")
    return src


def test_the_package_keeps_its_contract(tmp_path):
    r = lint(ROOT / "src", tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 kept, 0 broken" in r.stdout


@pytest.mark.parametrize(
    "file, line, broken",
    [
        ("cells.py", "from .tasks import charlm", "Layers"),  # the core imports a task
        ("trainer.py", "from . import data", "Layers"),  # the core imports the data sets
        ("tasks/tag.py", "from .. import cli", "Layers"),  # a task imports the CLI
        ("data/readers.py", "from ..tasks import classify", "Layers"),  # data imports a task
        ("cells.py", "from . import layers", "No circles"),  # cells <-> layers
    ],
)
def test_an_upward_import_or_a_circle_breaks_it(tmp_path, file, line, broken):
    r = lint(copy_with(tmp_path, file, line), tmp_path)
    assert r.returncode != 0
    assert f"{broken}" in r.stdout and "BROKEN" in r.stdout, r.stdout
