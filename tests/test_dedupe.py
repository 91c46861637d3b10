import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to
from helpers import article

from pipelines.dedupe import DedupeArticles, resolve_exact_group


def test_earliest_published_then_smallest_id_is_kept():
    a = article("b", "x", published="2024-01-01", content_hash="h")
    b = article("a", "x", published="2024-01-02", content_hash="h")
    c = article("0", "x", published=None, content_hash="h")
    kept, dups = resolve_exact_group([c, b, a])
    assert kept["id"] == "b"
    assert {(d["id"], d["duplicate_of"], d["method"]) for d in dups} == {("a", "b", "exact"), ("0", "b", "exact")}


def test_dedupe_transform(test_pipeline):
    arts = [article("a", "same", content_hash="h"), article("b", "same", content_hash="h"),
            article("c", "other", content_hash="k")]
    with test_pipeline() as p:
        out = p | beam.Create(arts) | DedupeArticles()
        assert_that(out["articles"] | beam.Map(lambda a: a["id"]), equal_to(["a", "c"]), label="kept")
        assert_that(out["duplicates"] | beam.Map(lambda d: (d["id"], d["duplicate_of"])), equal_to([("b", "a")]),
                    label="dups")
