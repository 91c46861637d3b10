"""A short deterministic slice of scripts/fuzz.py: hostile inputs through
read -> clean -> language -> entities never raise, and each is quick."""

import gzip
import importlib.util
import sys

import pytest
from conftest import REPO
from hypothesis import HealthCheck, Phase, given, settings

spec = importlib.util.spec_from_file_location("newsbeam_fuzz", REPO / "scripts" / "fuzz.py")
fuzz = importlib.util.module_from_spec(spec)
sys.modules["newsbeam_fuzz"] = fuzz
spec.loader.exec_module(fuzz)

# Far above what any of these small cases needs (tens of milliseconds) and far
# below the minutes a pathological one took before it was fixed.
SECONDS_PER_CASE = 5.0


@pytest.fixture(scope="module")
def nlp():
    nlp = fuzz.make_nlp()
    for warm in fuzz.WARM_UP:
        fuzz.run_case(warm, nlp)
    return nlp


def test_hostile_inputs_never_raise_and_stay_quick(nlp):
    slowest = []

    @settings(max_examples=200, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(fuzz.cases())
    def check(case):
        seconds = fuzz.check_case(case, nlp)
        slowest.append(seconds)
        assert seconds < SECONDS_PER_CASE, f"{case!r} took {seconds:.1f} s"

    check()
    assert len(slowest) == 200


@pytest.mark.parametrize("name,data,reason", [
    ("bom.jsonl", b"\xef\xbb\xbf", "empty"),  # gave no record at all before
    ("seps.jsonl", "\u2028\x1c\x85\n".encode(), "empty"),
    ("cut.json.gz", gzip.compress(b'{"text": "a b c"}')[:-9], "unreadable"),
    ("deep.json", b"[" * 100_000, "too_deep"),
])
def test_known_hostile_files_are_rejected_with_their_reason(nlp, name, data, reason):
    [record] = fuzz.run_case(fuzz.Case("fixed", name, data), nlp)
    assert record["reason"] == reason


def test_the_property_catches_what_it_claims(nlp):
    # The checker is not vacuous: an article carrying a lone surrogate cannot be written.
    with pytest.raises(fuzz.Broken):
        fuzz._utf8({"text": "a\ud800b"}, "article")
    with pytest.raises(fuzz.Broken):
        fuzz._check_rejected({"stage": "read", "reason": "made_up", "detail": "x"}, "read")


def test_a_long_symbol_run_no_longer_takes_minutes(nlp):
    # 32,000 '<' took spaCy's tokenizer about three minutes before clean cut such runs.
    case = fuzz.Case("fixed", "run.txt", ("Title\nSome words " + "<" * 32_000 + " more words").encode())
    assert fuzz.check_case(case, nlp) < SECONDS_PER_CASE
