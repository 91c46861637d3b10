"""Option validation: --languages codes no detector knows are a usage error."""

import subprocess
import sys

import pytest
from conftest import SEED

from pipelines.language import known_codes
from pipelines.options import NewsbeamOptions, unknown_language_problems


def problems(*flags):
    return NewsbeamOptions(["--output", "/tmp/out", *flags]).validate_newsbeam()


def test_known_codes_split_detected_from_hint_only():
    detected, hinted = known_codes()
    assert {"en", "fr", "zh", "nb"} <= detected and "zh-cn" not in detected and "no" not in detected
    assert {"hy", "nn", "az"} <= hinted and not detected & hinted


@pytest.mark.parametrize("spec", ["en,fr", "EN, fr", "en-GB,zh_TW", "und", "iw,no", "hy,nn"])
def test_codes_a_detector_knows_pass(spec):
    assert problems(f"--languages={spec}") == []


@pytest.mark.parametrize("spec,named", [("en,fe", "fe"), ("xx", "xx"), ("en,qq,zz", "qq,zz")])
def test_codes_no_detector_knows_are_a_usage_error_naming_them(spec, named):
    [problem] = problems(f"--languages={spec}")
    assert f"no language detector knows {named} " in problem and "en," in problem


def test_not_a_code_at_all_is_reported_once():
    [problem] = problems("--languages=english")
    assert "ISO 639-1" in problem
    assert unknown_language_problems(("english",)) == []


def test_cli_exits_2_for_an_unknown_language(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pipelines", "run", str(SEED), "--output",
                             str(tmp_path / "out"), "--languages=en,fe"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, result.stderr
    assert "fe" in result.stderr and not (tmp_path / "out").exists()
