import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to
from helpers import article

from pipelines.aggregate import AggregateEntities, period_of


def ents(*names):
    return [{"text": n, "entity": n, "label": "PERSON", "field": "text", "start": 0, "end": len(n)} for n in names]


def test_period_of():
    assert period_of("2024-08-16T20:19:00") == "2024-08-16"
    assert period_of("2024-08-16T20:19:00", "month") == "2024-08"
    assert period_of("2024-08-16T20:19:00", "week") == "2024-W33"
    assert period_of(None) == "unknown"


def test_aggregate_counts_mentions_and_documents(test_pipeline):
    arts = [article("a", "t", entities=ents("X", "X", "Y"), published="2024-01-01T10:00:00"),
            article("b", "t", entities=ents("X"), published=None)]
    with test_pipeline() as p:
        counts = p | beam.Create(arts) | AggregateEntities()
        assert_that(counts | beam.Map(lambda c: (c["entity"], c["period"], c["mentions"], c["documents"])),
                    equal_to([("X", "all", 3, 2), ("X", "2024-01-01", 2, 1), ("X", "unknown", 1, 1),
                              ("Y", "all", 1, 1), ("Y", "2024-01-01", 1, 1)]))
