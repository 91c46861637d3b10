"""Aggregate stage: per-entity mention and document counts over kept articles."""

from __future__ import annotations

import apache_beam as beam

__all__ = ["AggregateEntities", "entity_keys", "period_of"]

ALL = "all"
UNKNOWN = "unknown"


def period_of(published: str | None, period: str = "day") -> str:
    """The period bucket of an ISO-8601 published time ('unknown' when undated)."""
    if not published:
        return UNKNOWN
    if period == "day":
        return published[:10]
    if period == "hour":
        return published[:13]
    if period == "month":
        return published[:7]
    if period == "week":
        import datetime

        d = datetime.date.fromisoformat(published[:10])
        iso = d.isocalendar()
        return f"{iso[0]}-W{iso[1]:02d}"
    raise ValueError(f"unknown period {period!r}")


def entity_keys(article: dict, period: str = "day"):
    """((entity, label, language, period), (mentions, 1)) per entity and period bucket."""
    counts: dict[tuple[str, str], int] = {}
    for m in article.get("entities") or []:
        key = (m["entity"], m["label"])
        counts[key] = counts.get(key, 0) + 1
    language = article.get("language") or "und"
    bucket = period_of(article.get("published"), period)
    for (entity, label), n in sorted(counts.items()):
        for p in (ALL, bucket):
            yield (entity, label, language, p), (n, 1)


def _sum_pairs(pairs):
    mentions = documents = 0
    for m, d in pairs:
        mentions += m
        documents += d
    return mentions, documents


def to_record(element) -> dict:
    (entity, label, language, period), (mentions, documents) = element
    return {"entity": entity, "label": label, "language": language, "period": period,
            "mentions": mentions, "documents": documents}


class AggregateEntities(beam.PTransform):
    """Kept articles -> entity count records."""

    def __init__(self, period: str = "day"):
        super().__init__()
        if period not in ("hour", "day", "week", "month"):
            raise ValueError(f"period must be hour, day, week or month, got {period!r}")
        self._period = period

    def expand(self, articles):
        period = self._period
        return (
            articles
            | "EntityKeys" >> beam.FlatMap(entity_keys, period)
            | "Sum" >> beam.CombinePerKey(_sum_pairs)
            | "ToRecords" >> beam.Map(to_record)
        )
