"""scripts/_env.sh pick_python: which Python 3.12 scripts/run, scripts/test and scripts/lock use."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.skipif(sys.version_info[:2] != (3, 12), reason="the project runs on Python 3.12")


def pick(tmp_path: Path, path_dirs=(), **env) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    base = {"PATH": os.pathsep.join([*map(str, path_dirs), "/usr/bin", "/bin"]), "HOME": str(home), **env}
    return subprocess.run(
        ["bash", "-c", f'NEWSBEAM_ENV_FUNCTIONS_ONLY=1 source "{REPO}/scripts/_env.sh"; pick_python'],
        env=base, capture_output=True, text=True, timeout=60)


def test_no_python_312_stops_with_where_it_looked(tmp_path):
    shims = tmp_path / "shims"
    shims.mkdir()
    # A pyenv shim is on PATH even when 3.12 is not selected, and then fails.
    (shims / "python3.12").write_text("#!/bin/sh\necho 'pyenv: python3.12: command not found' >&2\nexit 127\n")
    (shims / "python3.12").chmod(0o755)
    got = pick(tmp_path, [shims], PYENV_ROOT=str(tmp_path / "no-pyenv"))
    assert got.returncode == 2 and got.stdout == ""
    assert "no Python 3.12 found" in got.stderr and "NEWSBEAM_PYTHON" in got.stderr


def test_a_wrong_newsbeam_python_is_named(tmp_path):
    got = pick(tmp_path, NEWSBEAM_PYTHON="/bin/true")
    assert got.returncode == 2
    assert "NEWSBEAM_PYTHON=/bin/true is not a working Python 3.12" in got.stderr


def test_newsbeam_python_then_pyenv_versions_newest_first(tmp_path):
    assert pick(tmp_path, NEWSBEAM_PYTHON=sys.executable).stdout.strip() == sys.executable
    root = tmp_path / "pyenv"
    for version in ("3.12.1", "3.12.10", "3.11.9"):
        bin_dir = root / "versions" / version / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / f"python{version[:4]}").symlink_to(sys.executable)
    got = pick(tmp_path, PYENV_ROOT=str(root))
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == str(root / "versions" / "3.12.10" / "bin" / "python3.12")
