"""The wheel alone runs newsbeam, as on a cluster worker: an sdist built from a
copy of the checkout, a wheel built from that sdist, installed with the lock
into a fresh venv (no system site-packages, no checkout on the path), then the
seed processed from a working directory outside the checkout."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, SEEDS
from helpers import read_avro_folder
from wheelenv import check, clean_env, run

from pipelines.records import SCHEMA_NAMES

pytestmark = pytest.mark.slow


def test_sdist_and_wheel_carry_the_schemas(wheel_build):
    with tarfile.open(wheel_build["sdist"]) as tar:
        sdist_names = {Path(*Path(name).parts[1:]).as_posix() for name in tar.getnames()}
    with zipfile.ZipFile(wheel_build["wheel"]) as whl:
        wheel_names = set(whl.namelist())
    for name in SCHEMA_NAMES:
        assert f"schemas/{name}.avsc" in sdist_names
        assert f"pipelines/schemas/{name}.avsc" in wheel_names
    # Package data only: the repository layout (schemas/, seeds/, tests/) is not installed as top-level folders.
    assert not {n for n in wheel_names if n.split("/")[0] in ("schemas", "seeds", "tests", "scripts")}


def test_wheel_runs_the_seed_outside_the_checkout(wheel_build, wheel_venv, seed_expected):
    python = wheel_venv / "bin" / "python"
    env = clean_env(wheel_venv)
    cwd = wheel_build["work"] / "elsewhere"
    cwd.mkdir()
    where = run([python, "-c", "import pipelines.records as r; print(r.__file__); print(r.schema_files())"],
                cwd=cwd, env=env)
    check(where, "importing the installed package")
    module, schemas = where.stdout.splitlines()
    assert Path(module).is_relative_to(wheel_venv), module
    assert str(wheel_venv) in schemas and str(REPO) not in schemas, schemas

    out = cwd / "OUT"
    proc = run([python, "-m", "pipelines", "run", SEEDS, "--output", out, "--runner=FnApiRunner"], cwd=cwd, env=env)
    check(proc, "newsbeam run from the wheel")
    articles = read_avro_folder(out / "articles", "article")
    assert [a["title"] for a in articles] == [seed_expected["title"]]
    assert articles[0]["source"].endswith(seed_expected["source"])
    assert read_avro_folder(out / "rejected", "rejected") == []
    assert read_avro_folder(out / "entity_counts", "entity_count")
