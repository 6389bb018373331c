"""``ruff check`` (configuration: ``ruff.toml``) over the project: README's test command enforces the lint.

Fix what ruff can fix automatically with ``python -m ruff check --fix .``; line lengths and the bugbear
findings need a hand.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Already clean, kept clean: the job's wiring (pipeline/, but build.py: issue 13's transforms side owns it)
# and the tests written with the lint configuration.
CLEAN = sorted({*(ROOT / "pipeline").glob("*.py")} - {ROOT / "pipeline" / "build.py"}) + [
    ROOT / "tests" / name for name in ("test_lint.py", "test_import_graph.py", "test_golden_examples.py",
                                       "test_pipeline_transforms.py", "test_spill_fragments.py")]


def ruff(*paths: Path) -> subprocess.CompletedProcess:
    if importlib.util.find_spec("ruff") is None:
        pytest.fail("ruff is not installed: pip install -r requirements-dev.txt")
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise",
                           *map(str, paths)], cwd=ROOT, capture_output=True, text=True)


def test_the_lint_configuration_is_read():
    config = (ROOT / "ruff.toml").read_text(encoding="utf-8")
    assert "line-length = 120" in config
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--show-settings", str(ROOT / "pipeline")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "line_length = 120" in result.stdout and "ruff.toml" in result.stdout


def test_lint_catches_a_finding(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(ROOT / "ruff.toml"),
                             str(bad)], capture_output=True, text=True)
    assert result.returncode == 1 and "F401" in result.stdout


def test_the_pipeline_wiring_and_new_tests_are_lint_clean():
    result = ruff(*CLEAN)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_whole_project_is_lint_clean():
    result = ruff(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
