"""Composition of the stages: read -> clean -> dedupe -> detect-language ->
extract-entities -> aggregate -> write. Nothing here but wiring.

``build_pipeline`` is the whole run as one Beam pipeline (what a cluster
runner executes: its shuffle handles any size). The ``build_*_phase``
functions and ``run_dedupe_phase`` cut the same stages into four phases that
meet through files, so that a local runner, which keeps every shuffle in
memory, can run a big input in parts (``pipelines.orchestrate`` decides the
parts):

1. ``clean``, per part of the input: read -> clean; clean articles and their
   dedupe fingerprints to files, rejected records to the output;
2. ``dedupe``, once: the dedupe decisions over every fingerprint (compact
   records, never the articles) -> duplicate records, in passes over the
   fingerprint files rather than as a Beam pipeline;
3. ``annotate``, per part: clean articles -> keep those not decided
   duplicates -> detect-language -> extract-entities -> articles, and the
   part's entity counts to files;
4. ``merge``, once: the parts' entity counts -> the run's counts.
"""

from __future__ import annotations

import json
import os
import sys
import time

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems

from pipelines.aggregate import (
    COUNTS,
    CSV_NAME,
    AggregateEntities,
    MergeCounts,
    TopEntities,
    WriteEntityCountsCsv,
)
from pipelines.clean import CleanArticles
from pipelines.dedupe import (
    HISTORY_FOLDER,
    DedupeArticles,
    FingerprintArticles,
    KeepUnique,
    ReadFingerprints,
    WriteFingerprints,
    decide_in_passes,
)
from pipelines.entities import ExtractEntities, coverage_key
from pipelines.language import DetectLanguage
from pipelines.options import NewsbeamOptions, parse_languages, parse_model_map
from pipelines.read import ReadArticles
from pipelines.records import read_avro_files, read_avro_matched
from pipelines.state import CumulativeCounts, RecordInputs
from pipelines.write import AvroFileWriter, WriteRecords

__all__ = [
    "build_pipeline", "build_clean_phase", "run_dedupe_phase", "build_annotate_phase", "build_merge_phase",
    "SUMMARY_DIR", "TOP_ENTITIES", "WORK_DIRS",
]

SUMMARY_DIR = "_summary"
TOP_ENTITIES = 20
# Where the phases of a run executed in parts leave their files for each
# other, under the run's work folder.
WORK_DIRS = {"clean": "clean", "fingerprints": "fingerprints", "duplicate_ids": "duplicate_ids",
             "counts": "counts", "summary": SUMMARY_DIR}
# The key under which the dedupe phase notes which part a fingerprint record came from.
PART_KEY = "_part"
# Called with 1 for every article that enters language detection and entity
# extraction, when set: how a process that runs parts of a run tells its
# launcher how far it is.
progress_sink = None


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
        # A launcher that runs the parts of a run reports progress itself.
        if progress_sink is None and self._interval > 0 and now - self._last >= self._interval:
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


def _coverage_keys(article, models):
    """Articles left without entities because no model covers their language,
    and articles a model found entities in."""
    key = coverage_key(article, models)
    return [("entities", key)] if key else []


def _top_entities(counts):
    return (
        counts
        | "TopEntities" >> TopEntities(TOP_ENTITIES)
        | "TopJson" >> beam.Map(lambda top: json.dumps({"top_entities": top}))
    )


def _read_and_clean(p, plan: str, options: NewsbeamOptions):
    read = p | "Read" >> ReadArticles(plan, options.max_bytes)
    clean = read["articles"] | "Clean" >> CleanArticles(options.min_words, options.date_order)
    return clean["articles"], (read["rejected"], clean["rejected"])


def _passed_on(article):
    if progress_sink is not None:
        progress_sink(1)
    return article


def _annotate(kept, options: NewsbeamOptions):
    language = kept | "CountKept" >> beam.Map(_passed_on) | "DetectLanguage" >> DetectLanguage(
        options.min_language_probability, parse_languages(options.languages))
    annotated = (
        language["articles"]
        | "ExtractEntities" >> ExtractEntities(options.spacy_model, options.ner_batch_size)
        | "Progress" >> beam.ParDo(ProgressFn(options.progress_interval))
    )
    counts = (annotated | "Aggregate" >> AggregateEntities(options.period, options.allowed_lateness))[COUNTS]
    return annotated, language["rejected"], counts


def _tallies(out_prefix: str, articles=None, duplicates=None, rejected=None, options=None, extra=()) -> None:
    """Write the summary's tallies (kind, key, count) of what this pipeline
    produced as JSON lines under ``out_prefix``."""
    keyed = []
    if articles is not None:
        keyed.append(articles | "KeyArticles" >> beam.Map(_count_keys("articles")))
        keyed.append(articles | "KeyCoverage" >> beam.FlatMap(
            _coverage_keys, parse_model_map(options.spacy_model)))
    if duplicates is not None:
        keyed.append(duplicates | "KeyDuplicates" >> beam.Map(_count_keys("duplicates")))
    if rejected is not None:
        keyed.append(rejected | "KeyRejected" >> beam.Map(_count_keys("rejected")))
    tallies = (
        tuple(keyed)
        | "AllTallies" >> beam.Flatten()
        | "CountTallies" >> beam.combiners.Count.PerElement()
        | "TallyJson" >> beam.Map(lambda kv: json.dumps({"kind": kv[0][0], "key": kv[0][1], "count": kv[1]}))
    )
    lines = (tallies, *extra) | "SummaryLines" >> beam.Flatten()
    lines | "WriteSummaryParts" >> beam.io.WriteToText(out_prefix, file_name_suffix=".jsonl")


def build_pipeline(p: beam.Pipeline, plan: str, options: NewsbeamOptions, schemas: dict,
                   state_in: str | None = None, state_out: str | None = None) -> dict:
    """Add the whole newsbeam graph to ``p``; returns the record PCollections.

    ``plan`` is the plan file of the inputs (``pipelines.read.write_plan``);
    ``state_in`` the committed cross-run state folder to read (None: no
    history); ``state_out`` the folder where this run writes its new state
    parts, published by the launcher only when the run succeeds.
    """
    clean, early_rejected = _read_and_clean(p, plan, options)
    history = p | "ReadDedupeHistory" >> ReadFingerprints(state_in) if state_in else None
    deduped = clean | "Dedupe" >> DedupeArticles(options.near_dup_threshold, history=history)
    annotated, language_rejected, counts = _annotate(deduped["articles"], options)
    rejected = (*early_rejected, language_rejected) | "AllRejected" >> beam.Flatten()

    out = options.output
    annotated | "WriteArticles" >> WriteRecords(out, "articles", schemas["article"])
    deduped["duplicates"] | "WriteDuplicates" >> WriteRecords(out, "duplicates", schemas["duplicate"])
    rejected | "WriteRejected" >> WriteRecords(out, "rejected", schemas["rejected"])
    counts | "WriteEntityCounts" >> WriteRecords(out, "entity_counts", schemas["entity_count"])
    counts | "WriteEntityCountsCsv" >> WriteEntityCountsCsv(FileSystems.join(out, CSV_NAME))
    if state_out:
        counts | "CumulativeCounts" >> CumulativeCounts(state_in, state_out, schemas["entity_count"])
        p | "RecordInputs" >> RecordInputs(plan, state_out)
        deduped["fingerprints"] | "WriteDedupeHistory" >> WriteFingerprints(state_out)

    _tallies(FileSystems.join(out, SUMMARY_DIR, "part"), articles=annotated,
             duplicates=deduped["duplicates"], rejected=rejected, options=options, extra=(_top_entities(counts),))
    return {"articles": annotated, "duplicates": deduped["duplicates"], "rejected": rejected,
            "entity_counts": counts}


# ---------------------------------------------------------------------------
# The same stages in four phases (see the module docstring)


def _work(work: str, kind: str, *parts: str) -> str:
    return FileSystems.join(work, WORK_DIRS[kind], *parts)


def _article_json(article: dict) -> str:
    return json.dumps(article, ensure_ascii=False, sort_keys=True)


def build_clean_phase(p: beam.Pipeline, plan: str, part: str, work: str, options: NewsbeamOptions,
                      schemas: dict, state_out: str | None = None) -> None:
    """Phase 1 for the inputs in ``plan``: clean articles and fingerprints to
    ``work``, rejected records to the output, named after ``part``."""
    clean, early_rejected = _read_and_clean(p, plan, options)
    rejected = early_rejected | "AllRejected" >> beam.Flatten()
    clean | "ToJson" >> beam.Map(_article_json) | "WriteClean" >> beam.io.WriteToText(
        _work(work, "clean", part), file_name_suffix=".jsonl.gz")
    (clean | "Fingerprints" >> FingerprintArticles()
     | "WriteFingerprints" >> WriteRecords(work, WORK_DIRS["fingerprints"], schemas["fingerprint"], prefix=part))
    rejected | "WriteRejected" >> WriteRecords(options.output, "rejected", schemas["rejected"], prefix=f"{part}-clean")
    if state_out:
        p | "RecordInputs" >> RecordInputs(plan, state_out, prefix=part)
    _tallies(_work(work, "summary", f"{part}-clean"), rejected=rejected)


def _fingerprints_by_part(pattern: str):
    """The fingerprint records of the files matching ``pattern``, each with
    the part whose clean phase wrote it (its file name's prefix) as ``PART_KEY``."""
    import fastavro

    try:
        paths = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # nothing matched
        paths = []
    for path in paths:
        part = os.path.basename(path).split("-")[0]
        with FileSystems.open(path, compression_type="uncompressed") as f:
            for record in fastavro.reader(f):
                record[PART_KEY] = part
                yield record


class _IdsByPart:
    """Duplicate ids to ``<folder>/<part>.jsonl`` (a JSON string per line: an
    id holds a path, which may hold a newline), one file per part, so that
    the annotate phase of a part reads only its own: the decisions come file
    by file in path order, so one part's ids are held at a time."""

    def __init__(self, folder: str):
        self._folder = folder
        self._part: str | None = None
        self._ids: list[str] = []
        self._written: set[str] = set()

    def add(self, part: str, id_: str) -> None:
        if part != self._part:
            self.flush()
            if part in self._written:
                raise RuntimeError(f"the duplicate ids of part {part} did not come together")
            self._part = part
        self._ids.append(id_)

    def flush(self) -> None:
        if self._part is not None and self._ids:
            with FileSystems.create(FileSystems.join(self._folder, f"{self._part}.jsonl"),
                                    compression_type="uncompressed") as f:
                f.write("".join(json.dumps(i) + "\n" for i in self._ids).encode("utf-8"))
            self._written.add(self._part)
        self._part, self._ids = None, []


def run_dedupe_phase(work: str, options: NewsbeamOptions, schemas: dict, state_in: str | None = None,
                     state_out: str | None = None) -> dict[str, int]:
    """Phase 2: every part's fingerprints (and the history) -> duplicate
    records to the output, their ids to ``work`` (a file per part), the newly
    kept fingerprints to ``state_out``; returns the stage's counters.

    Not a Beam pipeline: a local runner would hold every fingerprint and
    every candidate pair in memory at once. ``dedupe.decide_in_passes``
    makes the same decisions reading the fingerprint files again in each
    pass, with compact state in between."""
    import contextlib
    import tempfile
    from collections import Counter

    counters: Counter = Counter()
    fingerprint_files = _work(work, "fingerprints", "*.avro")
    history_files = FileSystems.join(state_in, HISTORY_FOLDER, "*.avro") if state_in else None
    methods: Counter = Counter()
    scratch_fd, scratch = tempfile.mkstemp(prefix="newsbeam-shingles-")
    os.close(scratch_fd)
    duplicate_ids = _IdsByPart(_work(work, "duplicate_ids"))
    try:
        with contextlib.ExitStack() as files:
            duplicates = files.enter_context(AvroFileWriter(
                FileSystems.join(options.output, "duplicates", "dedupe-00000-of-00001.avro"), schemas["duplicate"]))
            kept = files.enter_context(AvroFileWriter(
                FileSystems.join(state_out, HISTORY_FOLDER, "part-00000-of-00001.avro"), schemas["fingerprint"])
                if state_out else contextlib.nullcontext())
            decisions = decide_in_passes(lambda: _fingerprints_by_part(fingerprint_files),
                                         lambda: read_avro_files(history_files) if history_files else (),
                                         scratch, options.near_dup_threshold, counters=counters)
            for kind, record, fp in decisions:
                if kind == "duplicate":
                    duplicates.write(record)
                    duplicate_ids.add(fp[PART_KEY], record["id"])
                    methods[record["method"]] += 1
                elif kept is not None:
                    kept.write({k: v for k, v in record.items() if k != PART_KEY})
            duplicate_ids.flush()
    finally:
        os.remove(scratch)
    tallies = "".join(json.dumps({"kind": "duplicates", "key": method, "count": n}) + "\n"
                      for method, n in sorted(methods.items()))
    with FileSystems.create(_work(work, "summary", "dedupe-00000-of-00001.jsonl"),
                            compression_type="uncompressed") as summary:
        summary.write(tallies.encode("utf-8"))
    return dict(sorted(counters.items()))


def build_annotate_phase(p: beam.Pipeline, part: str, work: str, options: NewsbeamOptions, schemas: dict) -> None:
    """Phase 3 for one part: its clean articles that are not duplicates ->
    annotated articles to the output, the part's entity counts to ``work``."""
    clean = (
        p
        | "ReadClean" >> beam.io.ReadFromText(_work(work, "clean", f"{part}-*"))
        | "FromJson" >> beam.Map(json.loads)
    )
    duplicate_ids = (
        p
        | "MatchDuplicateIds" >> fileio.MatchFiles(_work(work, "duplicate_ids", f"{part}.jsonl"),
                                                   empty_match_treatment=fileio.EmptyMatchTreatment.ALLOW)
        | "OpenDuplicateIds" >> fileio.ReadMatches()
        | "ReadDuplicateIds" >> beam.FlatMap(lambda readable: readable.read_utf8().splitlines())
        | "AsRecords" >> beam.Map(lambda line: {"id": json.loads(line)})
    )
    kept = clean | "KeepUnique" >> KeepUnique(duplicate_ids)
    annotated, rejected, counts = _annotate(kept, options)
    out = options.output
    annotated | "WriteArticles" >> WriteRecords(out, "articles", schemas["article"], prefix=part)
    rejected | "WriteRejected" >> WriteRecords(out, "rejected", schemas["rejected"], prefix=f"{part}-annotate")
    counts | "WriteCounts" >> WriteRecords(work, WORK_DIRS["counts"], schemas["entity_count"], prefix=part)
    _tallies(_work(work, "summary", f"{part}-annotate"), articles=annotated, rejected=rejected,
             options=options)


def build_merge_phase(p: beam.Pipeline, work: str, options: NewsbeamOptions, schemas: dict,
                      state_in: str | None = None, state_out: str | None = None) -> None:
    """Phase 4: the parts' entity counts -> the run's entity counts, CSV, top
    entities (and the cumulative counts of the state)."""
    counts = (
        p
        | "CountFiles" >> fileio.MatchFiles(_work(work, "counts", "*.avro"),
                                            empty_match_treatment=fileio.EmptyMatchTreatment.ALLOW)
        | "OpenCounts" >> fileio.ReadMatches()
        | "ReadCounts" >> beam.FlatMap(read_avro_matched)
        | "Merge" >> MergeCounts()
    )
    out = options.output
    counts | "WriteEntityCounts" >> WriteRecords(out, "entity_counts", schemas["entity_count"])
    counts | "WriteEntityCountsCsv" >> WriteEntityCountsCsv(FileSystems.join(out, CSV_NAME))
    if state_out:
        counts | "CumulativeCounts" >> CumulativeCounts(state_in, state_out, schemas["entity_count"])
    (_top_entities(counts) | "WriteTop" >> beam.io.WriteToText(
        _work(work, "summary", "merge"), file_name_suffix=".jsonl"))
