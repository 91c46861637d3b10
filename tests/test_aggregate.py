import datetime
import random

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Timestamp
from conftest import make_test_pipeline
from helpers import article, read_avro_folder

from pipelines.aggregate import (
    COUNTS,
    CSV_NAME,
    AggregateEntities,
    ReconcileLatenessFn,
    TopEntities,
    WriteEntityCountsCsv,
    csv_bytes,
    csv_row,
    event_time_micros,
    month_bounds,
    period_label,
    period_of,
    period_window_fn,
    tally_entities,
)
from pipelines.dedupe import DedupeArticles
from pipelines.records import load_schema
from pipelines.write import WriteRecords

UTC = datetime.UTC


def ents(*names, label="PERSON"):
    return [{"text": n, "entity": n, "label": label, "field": "text", "start": 0, "end": len(n)} for n in names]


def micros(*args, tz=UTC):
    return (datetime.datetime(*args, tzinfo=tz) - datetime.datetime(1970, 1, 1, tzinfo=UTC)) // datetime.timedelta(
        microseconds=1)


def as_tuple(r):
    return r["entity"], r["label"], r["language"], r["period"], r["mentions"], r["documents"]


def counts_of(pcoll):
    return pcoll | beam.Map(as_tuple)


@pytest.mark.parametrize("published, expected", [
    ("2024-08-16T20:19:00", micros(2024, 8, 16, 20, 19)),  # no offset: taken as UTC
    ("2024-08-16T22:19:00+02:00", micros(2024, 8, 16, 20, 19)),
    ("2024-08-16T20:19:00Z", micros(2024, 8, 16, 20, 19)),
    ("2024-08-16 20:19:00.250000", micros(2024, 8, 16, 20, 19, 0, 250000)),
    ("2024-08-16", micros(2024, 8, 16)),
    ("1969-12-31T23:00:00", -3600 * 1_000_000),
    (None, None),
    ("", None),
    ("yesterday", None),
    ("2024-13-01", None),
    ("0001-01-01T00:30:00+01:00", None),  # would be year 0 in UTC
    ("9999-12-31", None),
    ("0999-12-31", None),
    ("1000-01-01", micros(1000, 1, 1)),
])
def test_event_time_micros(published, expected):
    assert event_time_micros(published) == expected


@pytest.mark.parametrize("published, period, expected", [
    ("2024-08-16T20:19:00", "day", "2024-08-16"),
    ("2024-08-16T20:19:00", "hour", "2024-08-16T20"),
    ("1066-10-14T09:05:00", "hour", "1066-10-14T09"),
    ("2024-08-16T20:19:00", "week", "2024-W33"),
    ("2024-08-16T20:19:00", "month", "2024-08"),
    ("2024-08-17T01:30:00+02:00", "day", "2024-08-16"),  # periods are UTC
    ("2024-08-16T23:30:00-05:00", "day", "2024-08-17"),
    ("2024-08-19T00:00:00", "week", "2024-W34"),  # a Monday starts the week
    ("2024-08-18T23:59:59", "week", "2024-W33"),
    ("2024-12-30", "week", "2025-W01"),  # ISO week-numbering year
    ("2021-01-03", "week", "2020-W53"),
    ("2024-02-29T23:59:59", "month", "2024-02"),
    ("2024-03-01", "month", "2024-03"),
    ("2024-12-31T23:59:59", "month", "2024-12"),
    (None, "day", "unknown"),
    ("not a date", "week", "unknown"),
])
def test_period_of(published, period, expected):
    assert period_of(published, period) == expected


def test_period_of_rejects_unknown_period():
    with pytest.raises(ValueError):
        period_of("2024-08-16", "fortnight")
    with pytest.raises(ValueError):
        period_of(None, "fortnight")


@pytest.mark.parametrize("when, days", [((2024, 2, 10), 29), ((2023, 2, 10), 28), ((2024, 12, 31), 31),
                                        ((9998, 12, 31), 31), ((1969, 7, 20), 31)])
def test_month_bounds(when, days):
    start, end = month_bounds(micros(*when))
    assert start == micros(when[0], when[1], 1)
    assert end - start == days * 86400 * 1_000_000


@pytest.mark.parametrize("period", ["hour", "day", "week", "month"])
def test_windows_contain_the_time_and_name_its_period(period):
    rng = random.Random(7)
    fn = period_window_fn(period)
    for _ in range(200):
        t = rng.randrange(micros(1990, 1, 1), micros(2040, 1, 1))
        [w] = fn.assign(window.WindowFn.AssignContext(Timestamp(micros=t)))
        assert w.start.micros <= t < w.end.micros
        start = datetime.datetime(1970, 1, 1, tzinfo=UTC) + datetime.timedelta(microseconds=w.start.micros)
        assert start.minute == start.second == start.microsecond == 0
        if period != "hour":
            assert start.hour == 0
        if period == "week":
            assert start.weekday() == 0
        if period == "month":
            assert start.day == 1
        published = (datetime.datetime(1970, 1, 1, tzinfo=UTC) + datetime.timedelta(microseconds=t)).isoformat()
        assert period_of(published, period) == period_label(w.start.micros, period)


def test_tally_entities_counts_mentions_per_entity_and_label():
    a = article("a", "t", language="fr", entities=ents("X", "Y", "X") + ents("X", label="ORG"))
    assert tally_entities(a) == ("fr", (("X", "ORG", 1), ("X", "PERSON", 2), ("Y", "PERSON", 1)))
    assert tally_entities(article("b", "t", language=None)) == ("und", ())


@pytest.mark.parametrize("kwargs", [{"period": "year"}, {"allowed_lateness": -1}, {"update_seconds": 0}])
def test_aggregate_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        AggregateEntities(**kwargs)


def test_aggregate_counts_mentions_and_documents(test_pipeline):
    arts = [article("a", "t", entities=ents("X", "X", "Y"), published="2024-01-01T10:00:00"),
            article("b", "t", entities=ents("X"), published=None)]
    with test_pipeline() as p:
        counts = (p | beam.Create(arts) | AggregateEntities())[COUNTS]
        assert_that(counts_of(counts), equal_to([
            ("X", "PERSON", "en", "all", 3, 2), ("X", "PERSON", "en", "2024-01-01", 2, 1),
            ("X", "PERSON", "en", "unknown", 1, 1),
            ("Y", "PERSON", "en", "all", 1, 1), ("Y", "PERSON", "en", "2024-01-01", 1, 1)]))


def _words(seed: int, n: int = 60) -> str:
    rng = random.Random(seed)
    return " ".join(f"w{rng.randrange(100000)}" for _ in range(n))


def test_counts_per_period_and_language_with_a_duplicate_through_dedupe(test_pipeline):
    """Several days and languages; an exact copy of an article goes through the
    dedupe stage and must not count twice."""
    def art(id_, published, language, entities, seed):
        text = _words(seed)
        return article(id_, text, published=published, language=language, entities=entities,
                       content_hash=f"hash-{seed}")

    arts = [
        art("en1", "2024-08-16T09:00:00", "en", ents("Vladimir Putin", "Vladimir Putin") + ents("Kursk", label="GPE"),
            1),
        art("en2", "2024-08-16T18:30:00+00:00", "en", ents("Vladimir Putin"), 2),
        art("en3", "2024-08-17T07:00:00", "en", ents("Vladimir Putin") + ents("Kyiv", label="GPE"), 3),
        art("fr1", "2024-08-16T23:30:00-02:00", "fr", ents("Vladimir Poutine"), 4),  # 01:30 UTC on the 17th
        art("fr2", None, "fr", ents("Vladimir Poutine", "Vladimir Poutine"), 5),
        # Same text as en1 (same content hash), published later: the duplicate.
        art("en1-copy", "2024-08-18T09:00:00", "en",
            ents("Vladimir Putin", "Vladimir Putin") + ents("Kursk", label="GPE"), 1),
    ]
    with test_pipeline() as p:
        deduped = p | beam.Create(arts) | DedupeArticles()
        counts = (deduped["articles"] | AggregateEntities("day"))[COUNTS]
        assert_that(deduped["duplicates"] | beam.Map(lambda d: (d["id"], d["duplicate_of"])),
                    equal_to([("en1-copy", "en1")]), label="OneDuplicate")
        assert_that(counts_of(counts), equal_to([
            ("Vladimir Putin", "PERSON", "en", "all", 4, 3),
            ("Vladimir Putin", "PERSON", "en", "2024-08-16", 3, 2),
            ("Vladimir Putin", "PERSON", "en", "2024-08-17", 1, 1),
            ("Kursk", "GPE", "en", "all", 1, 1),
            ("Kursk", "GPE", "en", "2024-08-16", 1, 1),
            ("Kyiv", "GPE", "en", "all", 1, 1),
            ("Kyiv", "GPE", "en", "2024-08-17", 1, 1),
            ("Vladimir Poutine", "PERSON", "fr", "all", 3, 2),
            ("Vladimir Poutine", "PERSON", "fr", "2024-08-17", 1, 1),
            ("Vladimir Poutine", "PERSON", "fr", "unknown", 2, 1),
        ]), label="Counts")


@pytest.mark.parametrize("period, label", [("hour", "2024-08-16T20"), ("week", "2024-W33"), ("month", "2024-08")])
def test_period_option_names_the_windows(test_pipeline, period, label):
    arts = [article("a", "t", entities=ents("X"), published="2024-08-16T20:19:00"),
            article("b", "t", entities=ents("X"), published="2024-08-16T20:59:59")]
    with test_pipeline() as p:
        counts = (p | beam.Create(arts) | AggregateEntities(period))[COUNTS]
        assert_that(counts_of(counts), equal_to([("X", "PERSON", "en", "all", 2, 2),
                                                 ("X", "PERSON", "en", label, 2, 2)]))


def test_seed_counts_agree_with_expected(test_pipeline, seed_expected):
    """The seed's expected entities, as the entity stage should produce them, and
    its published time: counts for 'all' and for the seed's day."""
    mentions = [m for e in seed_expected["entity_mentions"] for m in ents(*[e["entity"]] * e["mentions"],
                                                                            label=e["label"])]
    seed = article("seed", "t", entities=mentions, published=seed_expected["published"],
                   language=seed_expected["language"])
    expected = [(e["entity"], e["label"], "en", period, e["mentions"], 1)
                for e in seed_expected["entity_mentions"] for period in ("all", "2024-08-16")]
    assert ("Vladimir Putin", "PERSON", "en", "2024-08-16", 5, 1) in expected
    with test_pipeline() as p:
        counts = (p | beam.Create([seed]) | AggregateEntities())[COUNTS]
        assert_that(counts_of(counts), equal_to(expected))


def test_undated_and_unreadable_times_are_counted_not_dropped():
    arts = [article("a", "t", entities=ents("X"), published="2024-08-16"),
            article("b", "t", entities=ents("X"), published=None),
            article("c", "t", entities=ents("X"), published="sometime in August")]
    p = make_test_pipeline()
    counts = (p | beam.Create(arts) | AggregateEntities())[COUNTS]
    assert_that(counts_of(counts), equal_to([("X", "PERSON", "en", "all", 3, 3),
                                             ("X", "PERSON", "en", "2024-08-16", 1, 1),
                                             ("X", "PERSON", "en", "unknown", 2, 2)]))
    result = p.run()
    result.wait_until_finish()
    found = {m.key.metric.name: m.committed for m in result.metrics().query(
        MetricsFilter().with_namespace("aggregate"))["counters"]}
    assert found == {"dated_articles": 1, "undated_articles": 1, "unreadable_published": 1}


def test_reconcile_counts_what_the_windowed_count_did_not_include():
    """The lateness bookkeeping on its own: 3 articles sent to a day, panes
    that included at most 2 of them -> 1 beyond the lateness."""
    day = (micros(2024, 8, 16), micros(2024, 8, 17))
    other = (micros(2024, 8, 17), micros(2024, 8, 18))
    marks = [(day, ("sent", 1))] * 3 + [(day, ("included", 1)), (day, ("included", 2)),
                                          (other, ("sent", 1)), (other, ("included", 1))]
    p = make_test_pipeline()
    late = (p | beam.Create(marks) | beam.ParDo(ReconcileLatenessFn("day", 3600)).with_input_types(
        tuple[tuple[int, int], tuple[str, int]]))
    assert_that(late, equal_to([{"period": "2024-08-16", "articles": 1}]))
    result = p.run()
    result.wait_until_finish()
    [dropped] = result.metrics().query(MetricsFilter().with_name("articles_beyond_lateness"))["counters"]
    assert dropped.committed == 1


@pytest.mark.parametrize("records, expected", [
    ([], "entity,label,language,period,mentions,documents\n"),
    ([{"entity": "B", "label": "ORG", "language": "en", "period": "all", "mentions": 2, "documents": 1},
      {"entity": "A", "label": "ORG", "language": "en", "period": "2024-08-16", "mentions": 2, "documents": 1},
      {"entity": "A", "label": "ORG", "language": "en", "period": "all", "mentions": 2, "documents": 1},
      {"entity": "Zoë, \"Z\"", "label": "PERSON", "language": "fr", "period": "all", "mentions": 9, "documents": 2},
      {"entity": "C", "label": "GPE", "language": "en", "period": "all", "mentions": 2, "documents": 2}],
     "entity,label,language,period,mentions,documents\n"
     "\"Zoë, \"\"Z\"\"\",PERSON,fr,all,9,2\n"
     "C,GPE,en,all,2,2\n"
     "A,ORG,en,all,2,1\n"
     "A,ORG,en,2024-08-16,2,1\n"
     "B,ORG,en,all,2,1\n"),
])
def test_csv_bytes_sorted_by_mentions_with_deterministic_ties(records, expected):
    rows = [csv_row(r) for r in records]
    assert csv_bytes(rows) == expected.encode("utf-8")
    assert csv_bytes(list(reversed(rows))) == expected.encode("utf-8")


def test_top_entities_sum_languages_and_break_ties_by_name(test_pipeline):
    def rec(entity, language, period, mentions, documents, label="PERSON"):
        return {"entity": entity, "label": label, "language": language, "period": period,
                "mentions": mentions, "documents": documents}

    records = [rec("B", "en", "all", 3, 1), rec("B", "fr", "all", 2, 1), rec("B", "en", "2024-08-16", 3, 1),
               rec("A", "en", "all", 5, 2), rec("C", "en", "all", 5, 2), rec("Ab", "en", "all", 5, 2),
               rec("D", "en", "all", 1, 1)]
    with test_pipeline() as p:
        top = p | beam.Create(records) | TopEntities(4)
        assert_that(top | beam.Map(lambda t: [(e["entity"], e["mentions"], e["documents"]) for e in t]),
                    equal_to([[("A", 5, 2), ("Ab", 5, 2), ("B", 5, 2), ("C", 5, 2)]]))


def _many_articles(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    names = [f"Person {i}" for i in range(25)]
    arts = []
    for i in range(n):
        day = rng.choice([None, "2024-08-14", "2024-08-15T10:00:00", "2024-08-16T23:59:59+05:00"])
        picked = [rng.choice(names) for _ in range(rng.randrange(0, 6))]
        arts.append(article(f"a{i}", "t", published=day, language=rng.choice(["en", "fr", "und"]),
                            entities=ents(*picked)))
    return arts


def _run(arts, out, **options) -> tuple[bytes, list[tuple]]:
    p = make_test_pipeline(**options)
    counts = (p | beam.Create(arts, reshuffle=True) | AggregateEntities("day"))[COUNTS]
    counts | WriteEntityCountsCsv(str(out / CSV_NAME))
    counts | WriteRecords(str(out), "entity_counts", load_schema("entity_count"))
    p.run().wait_until_finish()
    return (out / CSV_NAME).read_bytes(), sorted(as_tuple(r) for r in read_avro_folder(out / "entity_counts",
                                                                                        "entity_count"))


def test_csv_and_records_identical_whatever_the_order_and_worker_count(tmp_path):
    arts = _many_articles(300, seed=3)
    shuffled = list(arts)
    random.Random(11).shuffle(shuffled)
    one_csv, one_records = _run(arts, tmp_path / "one")
    two_csv, two_records = _run(shuffled, tmp_path / "two", direct_running_mode="multi_processing",
                                direct_num_workers=2)
    assert one_csv.startswith(b"entity,label,language,period,mentions,documents\n")
    assert len(one_csv.splitlines()) == len(one_records) + 1 > 100
    assert one_csv == two_csv
    assert one_records == two_records
