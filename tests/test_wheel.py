"""The wheel alone runs newsbeam, as on a cluster worker: an sdist built from a
copy of the checkout, a wheel built from that sdist, installed with the lock
into a fresh venv (no system site-packages, no checkout on the path), then the
seed processed from a working directory outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, SEEDS
from helpers import read_avro_folder

from pipelines.records import SCHEMA_NAMES

pytestmark = pytest.mark.slow

# Generated or local-only folders a build must not see: a build that works only
# because of them would not work from a clean clone.
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".venv-lock", "build", "dist", "out", "*.egg-info",
                                     "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis")
_PIP = ["-m", "pip", "--disable-pip-version-check", "--no-input"]


def _run(cmd: list, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _check(proc: subprocess.CompletedProcess, what: str) -> None:
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def _clean_env(venv: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    # Beam starts workers with the first python on PATH: it must be the venv's.
    env["PATH"] = str(venv / "bin") + os.pathsep + env.get("PATH", "")
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    shutil.copytree(REPO, src, ignore=_NOT_SOURCE, symlinks=True)
    dist = work / "dist"
    dist.mkdir()
    sdist = _run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
                  "print(build_meta.build_sdist(sys.argv[1]))", dist], cwd=src)
    _check(sdist, "building the sdist")
    [sdist_path] = dist.glob("*.tar.gz")
    with tarfile.open(sdist_path) as tar:
        # filter= exists from 3.10.12/3.11.4 on; the archive is our own either way.
        tar.extractall(work / "unpacked", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    [unpacked] = (work / "unpacked").iterdir()
    wheel = _run([sys.executable, *_PIP, "wheel", unpacked, "--no-deps", "--no-build-isolation", "-w", dist],
                 cwd=work)
    _check(wheel, "building the wheel from the sdist")
    [wheel_path] = dist.glob("*.whl")
    return {"work": work, "sdist": sdist_path, "wheel": wheel_path}


def test_sdist_and_wheel_carry_the_schemas(built):
    with tarfile.open(built["sdist"]) as tar:
        sdist_names = {Path(*Path(name).parts[1:]).as_posix() for name in tar.getnames()}
    with zipfile.ZipFile(built["wheel"]) as whl:
        wheel_names = set(whl.namelist())
    for name in SCHEMA_NAMES:
        assert f"schemas/{name}.avsc" in sdist_names
        assert f"pipelines/schemas/{name}.avsc" in wheel_names
    # Package data only: the repository layout (schemas/, seeds/, tests/) is not installed as top-level folders.
    assert not {n for n in wheel_names if n.split("/")[0] in ("schemas", "seeds", "tests", "scripts")}


@pytest.fixture(scope="module")
def wheel_venv(built) -> Path:
    venv = built["work"] / "venv"
    made = _run([sys.executable, "-m", "venv", venv], cwd=built["work"])
    if made.returncode != 0:
        pytest.skip(f"cannot create a venv here: {made.stderr.strip()[-500:]}")
    python = venv / "bin" / "python"
    env = _clean_env(venv)
    # The lock is hashed and exact; pip's cache makes this quick. Without the
    # cache and without PyPI it cannot be done: that is the environment, not newsbeam.
    lock = _run([python, *_PIP, "install", "--require-hashes", "--no-deps", "--no-compile", "-r",
                 REPO / "requirements.lock"], cwd=built["work"], env=env, timeout=1200)
    if lock.returncode != 0:
        pytest.skip("cannot install requirements.lock into a fresh venv (offline, with no pip cache?): "
                    + lock.stderr.strip()[-800:])
    _check(_run([python, *_PIP, "install", "--no-deps", "--no-compile", built["wheel"]], cwd=built["work"], env=env),
           "installing the wheel")
    # The wheel's declared dependency ranges must agree with the lock.
    _check(_run([python, *_PIP, "check"], cwd=built["work"], env=env), "pip check")
    return venv


def test_wheel_runs_the_seed_outside_the_checkout(built, wheel_venv, seed_expected):
    python = wheel_venv / "bin" / "python"
    env = _clean_env(wheel_venv)
    cwd = built["work"] / "elsewhere"
    cwd.mkdir()
    where = _run([python, "-c", "import pipelines.records as r; print(r.__file__); print(r.schema_files())"],
                 cwd=cwd, env=env)
    _check(where, "importing the installed package")
    module, schemas = where.stdout.splitlines()
    assert Path(module).is_relative_to(wheel_venv), module
    assert str(wheel_venv) in schemas and str(REPO) not in schemas, schemas

    out = cwd / "OUT"
    run = _run([python, "-m", "pipelines", "run", SEEDS, "--output", out, "--runner=FnApiRunner"], cwd=cwd, env=env)
    _check(run, "newsbeam run from the wheel")
    articles = read_avro_folder(out / "articles", "article")
    assert [a["title"] for a in articles] == [seed_expected["title"]]
    assert articles[0]["source"].endswith(seed_expected["source"])
    assert read_avro_folder(out / "rejected", "rejected") == []
    assert read_avro_folder(out / "entity_counts", "entity_count")
