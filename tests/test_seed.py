"""The seed article against its expected result, field by field: once through
the clean stage's pure function, once end to end through the CLI and Avro.

``seed_article`` (module scope: one pipeline run per module) is the seed's
Avro record; add end-to-end assertions about it here.
"""

from collections import Counter

import pytest
from conftest import SEED, SEEDS
from helpers import read_output

from pipelines.clean import clean_article
from pipelines.cli import main
from pipelines.read import parse_payload

INVISIBLE_ESCAPES = ("\\u200b", "\u200b", "\\u00a0", "\u00a0")


@pytest.fixture(scope="module")
def seed_raw() -> dict:
    [raw] = list(parse_payload(SEED.read_bytes(), str(SEED), SEED.name, "text"))
    return raw


@pytest.fixture(scope="module")
def seed_clean(seed_raw) -> dict:
    return clean_article(seed_raw)


@pytest.fixture(scope="module")
def seed_output(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("seed-out")
    assert main(["run", str(SEEDS), "--output", str(out)]) == 0
    return read_output(out)


@pytest.fixture(scope="module")
def seed_article(seed_output) -> dict:
    [article] = seed_output["articles"]
    return article


def check_against_expected(article: dict, expected: dict) -> None:
    assert article["title"] == expected["title"]
    assert article["author"] == expected["author"]
    assert article["published"] == expected["published"]
    assert article["text"].split("\n\n") == expected["paragraphs"]
    assert article["text"] == "\n\n".join(expected["paragraphs"])
    assert article["captions"] == expected["captions"]
    paragraphs = set(article["text"].split("\n\n"))
    for line in expected["credits"] + expected["removed_lines"] + expected["captions"]:
        assert line not in paragraphs
    for line in expected["credits"] + expected["removed_lines"]:
        assert line not in article["text"]
    for escape in INVISIBLE_ESCAPES:
        assert escape not in article["text"]
        assert all(escape not in caption for caption in article["captions"])


def test_clean_stage_gives_the_expected_seed(seed_clean, seed_expected):
    check_against_expected(seed_clean, seed_expected)
    assert seed_clean["word_count"] == sum(len(p.split()) for p in seed_expected["paragraphs"])


@pytest.mark.slow
def test_seed_end_to_end_matches_expected(seed_article, seed_expected, seed_output):
    check_against_expected(seed_article, seed_expected)
    assert seed_article["source"].endswith(seed_expected["source"])
    assert seed_output["rejected"] == [] and seed_output["duplicates"] == []


@pytest.mark.slow
def test_seed_summary_shows_which_clean_rules_fired(seed_output):
    counters = seed_output["summary"]["counters"]
    assert counters["clean:articles"] == 1
    assert counters["clean:rule_photo_credit"] == 3
    assert counters["clean:rule_caption"] == 6
    assert counters["clean:rule_byline"] == counters["clean:rule_byline_name"] == 1
    assert counters["clean:rule_dateline"] == counters["clean:rule_dateline_time"] == 1
    assert counters["clean:rule_promo_header"] == counters["clean:rule_trailer"] == 1


@pytest.mark.slow
def test_seed_entities_end_to_end(seed_article, seed_expected):
    counts = Counter((m["entity"], m["label"]) for m in seed_article["entities"])
    for expected in seed_expected["entity_mentions"]:
        assert counts[(expected["entity"], expected["label"])] == expected["mentions"], expected
    for m in seed_article["entities"]:
        assert m["field"] in ("title", "text")  # captions are not run through NER
        assert seed_article[m["field"]][m["start"]:m["end"]] == m["text"]
        assert not any(bad in m["entity"] or bad in m["text"] for bad in seed_expected["forbidden_entity_substrings"])
