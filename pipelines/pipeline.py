"""Composition of the stages: read -> clean -> dedupe -> detect-language ->
extract-entities -> aggregate -> write. Nothing here but wiring."""

from __future__ import annotations

import json
import os
import sys
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines.aggregate import COUNTS, CSV_NAME, AggregateEntities, TopEntities, WriteEntityCountsCsv
from pipelines.clean import CleanArticles
from pipelines.dedupe import DedupeArticles, ReadFingerprints, WriteFingerprints
from pipelines.entities import ExtractEntities, no_model_language
from pipelines.language import DetectLanguage
from pipelines.options import NewsbeamOptions, parse_languages, parse_model_map
from pipelines.read import InputFile, ReadArticles
from pipelines.state import CumulativeCounts, RecordInputs
from pipelines.write import WriteRecords

__all__ = ["build_pipeline", "SUMMARY_DIR", "TOP_ENTITIES"]

SUMMARY_DIR = "_summary"
TOP_ENTITIES = 20


class ProgressFn(beam.DoFn):
    """Log a line every ``interval`` seconds with how many articles this worker
    has passed on, so a long run is visibly alive."""

    def __init__(self, interval: float):
        self._interval = interval

    def setup(self):
        self._count = 0
        self._start = self._last = None

    def process(self, article):
        self._count += 1
        now = time.monotonic()
        if self._start is None:  # model loading is not throughput
            self._start = self._last = now
        if self._interval > 0 and now - self._last >= self._interval:
            self._last = now
            rate = self._count / max(now - self._start, 1e-9)
            # stderr rather than logging: local worker processes share the
            # launcher's terminal, and logging would show each line twice.
            print(f"newsbeam progress: {self._count} articles annotated by worker {os.getpid()} ({rate:.1f}/s)",
                  file=sys.stderr, flush=True)
        yield article


def _count_keys(kind: str):
    def key(record):
        if kind == "articles":
            return ("articles", record.get("language") or "und")
        if kind == "duplicates":
            return ("duplicates", record["method"])
        return ("rejected", f"{record['stage']}:{record['reason']}")
    return key


def _no_model_keys(article, models):
    """Articles left without entities because no model covers their language."""
    language = no_model_language(article, models)
    return [("entities", f"no_model:{language}")] if language else []


def _top_entities(counts):
    return (
        counts
        | "TopEntities" >> TopEntities(TOP_ENTITIES)
        | "TopJson" >> beam.Map(lambda top: json.dumps({"top_entities": top}))
    )


def build_pipeline(p: beam.Pipeline, files: list[InputFile], options: NewsbeamOptions, schemas: dict,
                   state_in: str | None = None, state_out: str | None = None) -> dict:
    """Add the whole newsbeam graph to ``p``; returns the record PCollections.

    ``state_in`` is the committed cross-run state folder to read (None: no
    history); ``state_out`` the folder where this run writes its new state
    parts, published by the launcher only when the run succeeds.
    """
    read = p | "Read" >> ReadArticles(files, options.max_bytes)
    clean = read["articles"] | "Clean" >> CleanArticles(options.min_words, options.date_order)
    history = p | "ReadDedupeHistory" >> ReadFingerprints(state_in) if state_in else None
    deduped = clean["articles"] | "Dedupe" >> DedupeArticles(options.near_dup_threshold, history=history)
    language = deduped["articles"] | "DetectLanguage" >> DetectLanguage(
        options.min_language_probability, parse_languages(options.languages))
    annotated = (
        language["articles"]
        | "ExtractEntities" >> ExtractEntities(options.spacy_model, options.ner_batch_size)
        | "Progress" >> beam.ParDo(ProgressFn(options.progress_interval))
    )
    counts = (annotated | "Aggregate" >> AggregateEntities(options.period, options.allowed_lateness))[COUNTS]
    rejected = (read["rejected"], clean["rejected"], language["rejected"]) | "AllRejected" >> beam.Flatten()

    out = options.output
    annotated | "WriteArticles" >> WriteRecords(out, "articles", schemas["article"])
    deduped["duplicates"] | "WriteDuplicates" >> WriteRecords(out, "duplicates", schemas["duplicate"])
    rejected | "WriteRejected" >> WriteRecords(out, "rejected", schemas["rejected"])
    counts | "WriteEntityCounts" >> WriteRecords(out, "entity_counts", schemas["entity_count"])
    counts | "WriteEntityCountsCsv" >> WriteEntityCountsCsv(FileSystems.join(out, CSV_NAME))
    if state_out:
        counts | "CumulativeCounts" >> CumulativeCounts(state_in, state_out, schemas["entity_count"])
        p | "RecordInputs" >> RecordInputs(files, state_out)
        deduped["fingerprints"] | "WriteDedupeHistory" >> WriteFingerprints(state_out)

    tallies = (
        (annotated | "KeyArticles" >> beam.Map(_count_keys("articles")),
         deduped["duplicates"] | "KeyDuplicates" >> beam.Map(_count_keys("duplicates")),
         rejected | "KeyRejected" >> beam.Map(_count_keys("rejected")),
         annotated | "KeyNoModel" >> beam.FlatMap(_no_model_keys, parse_model_map(options.spacy_model)))
        | "AllTallies" >> beam.Flatten()
        | "CountTallies" >> beam.combiners.Count.PerElement()
        | "TallyJson" >> beam.Map(lambda kv: json.dumps({"kind": kv[0][0], "key": kv[0][1], "count": kv[1]}))
    )
    summary_lines = (tallies, _top_entities(counts)) | "SummaryLines" >> beam.Flatten()
    summary_lines | "WriteSummaryParts" >> beam.io.WriteToText(
        FileSystems.join(out, SUMMARY_DIR, "part"), file_name_suffix=".jsonl")
    return {"articles": annotated, "duplicates": deduped["duplicates"], "rejected": rejected,
            "entity_counts": counts}
