"""Dedupe stage: fold duplicate articles into one kept article.

Which article of a group is kept never depends on arrival order: the earliest
``published`` wins, undated articles lose to dated ones, and ties go to the
smallest ``id``.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

__all__ = ["DedupeArticles", "keep_order", "resolve_exact_group"]

STAGE = "dedupe"
DUPLICATES_TAG = "duplicates"


def keep_order(article: dict) -> tuple:
    """Sort key: the first article in this order is the one kept."""
    published = article.get("published")
    return (published is None, published or "", article["id"])


def duplicate_record(article: dict, kept_id: str, method: str, similarity: float) -> dict:
    return {
        "id": article["id"],
        "source": article["source"],
        "duplicate_of": kept_id,
        "method": method,
        "similarity": float(similarity),
    }


def resolve_exact_group(articles) -> tuple[dict, list[dict]]:
    """(kept article, duplicate records) for articles sharing one content hash."""
    ordered = sorted(articles, key=keep_order)
    kept = ordered[0]
    return kept, [duplicate_record(a, kept["id"], "exact", 1.0) for a in ordered[1:]]


class ResolveExactGroupFn(beam.DoFn):
    def __init__(self):
        self._exact = Metrics.counter(STAGE, "exact_duplicates")

    def process(self, element):
        _, articles = element
        kept, duplicates = resolve_exact_group(articles)
        yield kept
        for dup in duplicates:
            self._exact.inc()
            yield beam.pvalue.TaggedOutput(DUPLICATES_TAG, dup)


class DedupeArticles(beam.PTransform):
    """Clean articles -> {'articles': kept articles, 'duplicates': duplicate records}."""

    def expand(self, articles):
        results = (
            articles
            | "KeyByContentHash" >> beam.Map(lambda a: (a["content_hash"], a))
            | "GroupExact" >> beam.GroupByKey()
            | "KeepOnePerHash" >> beam.ParDo(ResolveExactGroupFn()).with_outputs(
                DUPLICATES_TAG, main="articles")
        )
        return {"articles": results.articles, "duplicates": results[DUPLICATES_TAG]}
