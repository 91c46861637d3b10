"""A newsbeam wheel and a venv that has only it and the lock: what a cluster
worker has. Built once per test session (tests/conftest.py) and shared by the
wheel test and the engine tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Generated or local-only folders a build must not see: a build that works only
# because of them would not work from a clean clone.
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".venv-lock", "build", "dist", "out", "*.egg-info",
                                     "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis")
PIP = ["-m", "pip", "--disable-pip-version-check", "--no-input"]


def run(cmd: list, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def check(proc: subprocess.CompletedProcess, what: str) -> None:
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def clean_env(venv: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    # Beam starts workers with the first python on PATH: it must be the venv's.
    env["PATH"] = str(venv / "bin") + os.pathsep + env.get("PATH", "")
    return env


def build(work: Path) -> dict[str, Path]:
    """An sdist from a copy of the checkout, then a wheel from that sdist."""
    src = work / "src"
    shutil.copytree(REPO, src, ignore=_NOT_SOURCE, symlinks=True)
    dist = work / "dist"
    dist.mkdir()
    sdist = run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
                 "print(build_meta.build_sdist(sys.argv[1]))", dist], cwd=src)
    check(sdist, "building the sdist")
    [sdist_path] = dist.glob("*.tar.gz")
    with tarfile.open(sdist_path) as tar:
        # filter= exists from 3.10.12/3.11.4 on; the archive is our own either way.
        tar.extractall(work / "unpacked", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    [unpacked] = (work / "unpacked").iterdir()
    wheel = run([sys.executable, *PIP, "wheel", unpacked, "--no-deps", "--no-build-isolation", "-w", dist], cwd=work)
    check(wheel, "building the wheel from the sdist")
    [wheel_path] = dist.glob("*.whl")
    return {"work": work, "sdist": sdist_path, "wheel": wheel_path}


def make_venv(work: Path, wheel: Path) -> Path:
    """A fresh venv (no system site-packages) with the hashed lock and the wheel, nothing else."""
    venv = work / "venv"
    made = run([sys.executable, "-m", "venv", venv], cwd=work)
    if made.returncode != 0:
        pytest.skip(f"cannot create a venv here: {made.stderr.strip()[-500:]}")
    python = venv / "bin" / "python"
    env = clean_env(venv)
    # The lock is hashed and exact; pip's cache makes this quick. Without the
    # cache and without PyPI it cannot be done: that is the environment, not newsbeam.
    lock = run([python, *PIP, "install", "--require-hashes", "--no-deps", "--no-compile", "-r",
                REPO / "requirements.lock"], cwd=work, env=env, timeout=1200)
    if lock.returncode != 0:
        pytest.skip("cannot install requirements.lock into a fresh venv (offline, with no pip cache?): "
                    + lock.stderr.strip()[-800:])
    check(run([python, *PIP, "install", "--no-deps", "--no-compile", wheel], cwd=work, env=env), "installing the wheel")
    # The wheel's declared dependency ranges must agree with the lock.
    check(run([python, *PIP, "check"], cwd=work, env=env), "pip check")
    return venv
