"""The aggregate transform, unchanged, on an unbounded input (TestStream on the
BundleBasedDirectRunner in streaming mode, the only local runner that streams)."""

import datetime

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream as EventStream
from apache_beam.testing.util import assert_that, equal_to
from helpers import article

from pipelines.aggregate import BEYOND_LATENESS, COUNTS, AggregateEntities

DAY = 24 * 3600


def seconds(*args) -> float:
    return datetime.datetime(*args, tzinfo=datetime.UTC).timestamp()


def art(id_, published, *names, language="en"):
    entities = [{"text": n, "entity": n, "label": "PERSON", "field": "text", "start": 0, "end": len(n)}
                for n in names]
    return article(id_, "t", published=published, language=language, entities=entities)


def streaming_pipeline() -> beam.Pipeline:
    options = PipelineOptions(runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = True
    return beam.Pipeline(options=options)


def test_late_articles_update_their_period_within_the_lateness_and_are_counted_beyond_it():
    stream = (
        EventStream()
        # On time: two articles on the 16th, one on the 17th, one undated.
        .add_elements([art("a1", "2024-08-16T09:00:00", "X", "X", "Y"),
                       art("a2", "2024-08-16T12:00:00", "X", language="fr"),
                       art("a3", "2024-08-17T08:00:00", "X"),
                       art("u1", None, "Y")])
        # A minute of processing time: the running totals ('all', 'unknown') fire early.
        .advance_processing_time(61)
        # The 16th ends: its on-time pane.
        .advance_watermark_to(seconds(2024, 8, 17, 0, 0, 1))
        # Late, within the one-day lateness: the 16th fires again with the article in.
        .add_elements([art("l1", "2024-08-16T20:00:00", "X")])
        # Past the 16th's end + lateness (and the 17th's end: its on-time pane).
        .advance_watermark_to(seconds(2024, 8, 18, 12))
        # Beyond the lateness: for the 16th, and for the 10th (a period never seen before).
        .add_elements([art("b1", "2024-08-16T21:00:00", "X"), art("b2", "2024-08-10T10:00:00", "Z")])
        .advance_watermark_to_infinity()
    )
    p = streaming_pipeline()
    result = p | stream | AggregateEntities("day", allowed_lateness=DAY, update_seconds=60)
    counts = result[COUNTS] | beam.Map(lambda r: (r["entity"], r["language"], r["period"], r["mentions"],
                                                    r["documents"]))
    assert_that(counts, equal_to([
        # The 16th in English: the on-time pane, then the late pane with l1 (accumulated); never b1.
        ("X", "en", "2024-08-16", 2, 1),
        ("X", "en", "2024-08-16", 3, 2),
        ("Y", "en", "2024-08-16", 1, 1),
        ("X", "fr", "2024-08-16", 1, 1),
        ("X", "en", "2024-08-17", 1, 1),
        # Running totals: the early pane after a minute, then the final pane when the stream ends.
        # 'all' never loses an article, late or not.
        ("X", "en", "all", 3, 2),
        ("X", "en", "all", 5, 4),
        ("Y", "en", "all", 2, 2),
        ("Y", "en", "all", 2, 2),
        ("X", "fr", "all", 1, 1),
        ("X", "fr", "all", 1, 1),
        ("Y", "en", "unknown", 1, 1),
        ("Y", "en", "unknown", 1, 1),
        ("Z", "en", "all", 1, 1),
    ]), label="Counts")
    assert_that(result[BEYOND_LATENESS], equal_to([{"period": "2024-08-16", "articles": 1},
                                                   {"period": "2024-08-10", "articles": 1}]), label="Late")
    p.run().wait_until_finish()


def test_nothing_is_reported_late_when_everything_is_on_time():
    stream = (
        EventStream()
        .add_elements([art("a1", "2024-08-16T09:00:00", "X"), art("a2", "2024-08-17T09:00:00", "X")])
        .advance_watermark_to(seconds(2024, 8, 20))
        .add_elements([art("a3", "2024-08-20T09:00:00", "X")])
        .advance_watermark_to_infinity()
    )
    p = streaming_pipeline()
    result = p | stream | AggregateEntities("week", allowed_lateness=0)
    assert_that(result[COUNTS] | beam.Map(lambda r: (r["period"], r["mentions"])),
                equal_to([("2024-W33", 2), ("2024-W34", 1), ("all", 3)]), label="Counts")
    assert_that(result[BEYOND_LATENESS], equal_to([]), label="Late")
    p.run().wait_until_finish()
