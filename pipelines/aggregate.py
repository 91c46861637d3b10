"""Aggregate stage: per-entity mention and document counts over kept articles.

Counts
    One record per (entity, label, language, period): ``mentions`` (every
    mention) and ``documents`` (articles mentioning the entity). The input is
    the kept articles only, so a duplicate never counts twice. Every article
    counts under period ``all``; a dated one also under the period of its
    ``published`` time, an undated one (or one whose time cannot be read)
    under ``unknown`` — never dropped.

Periods are UTC
    An article's event time is its ``published`` time; a time with an offset
    is converted to UTC, a time without one (the source gave none) is taken
    as UTC, a bare date as its midnight. Labels: ``2024-08-16T20`` (hour),
    ``2024-08-16`` (day), ``2024-W33`` (ISO week, Monday to Sunday),
    ``2024-08`` (month).

Windows, so the same transform runs in streaming
    Dated articles are counted per window of their event time: ``FixedWindows``
    of an hour or a day, weeks as seven-day ``FixedWindows`` offset to start on
    Monday, and months — not fixed-length — as ``CalendarMonthWindows`` below,
    a non-merging WindowFn of calendar months. The label is computed from the
    window's start. The trigger fires when the watermark passes the end of
    the period and again for each late article within ``allowed_lateness``
    (accumulating: each new pane carries the period's updated totals). In
    batch the whole input is on time and every period fires exactly once.
    ``all`` and ``unknown`` live in the global window: one pane in batch; on
    an unbounded input, running totals every ``update_seconds`` of processing
    time and a final pane when the stream ends.

Late articles beyond the allowed lateness
    Beam's GroupByKey drops them without a metric, and no DoFn can read the
    watermark, so they are counted by reconciliation (unbounded inputs only: a
    bounded input has no late data). Per period, a stateful DoFn in the global
    window receives one mark per dated article sent to the windowed count and,
    from a count of articles per window with the same windowing, the number
    each pane included. Its event-time timer at the period's end plus the
    lateness fires once the watermark is past the point after which the
    GroupByKey drops the period's data; ``sent - included`` is then what was
    dropped: it goes to the counter ``aggregate:articles_beyond_lateness`` and,
    as ``{'period', 'articles'}``, to the ``beyond_lateness`` output. Marks
    that come later find the state cleared and a timer already due, and are
    counted the same way, so a period first seen after its lateness is counted
    too. ``all`` and ``unknown`` never drop anything. The argument holds when
    a stage receives the data sent before a watermark ahead of that watermark
    (Flink's in-band watermarks, the direct runner); other runners not checked.
"""

from __future__ import annotations

import calendar
import csv
import datetime
import io

import apache_beam as beam
from apache_beam.coders import coders
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, userstate, window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils.timestamp import Duration, Timestamp

__all__ = [
    "ALL",
    "sum_pairs",
    "BEYOND_LATENESS",
    "COUNTS",
    "CSV_NAME",
    "CSV_COLUMNS",
    "PERIODS",
    "UNKNOWN",
    "AggregateEntities",
    "CalendarMonthWindows",
    "MergeCounts",
    "TopEntities",
    "WriteEntityCountsCsv",
    "csv_bytes",
    "csv_row",
    "event_time_micros",
    "period_label",
    "period_of",
    "period_window_fn",
    "tally_entities",
]

STAGE = "aggregate"
COUNTS = "entity_counts"
CSV_NAME = "entity_counts.csv"
BEYOND_LATENESS = "beyond_lateness"
ALL = "all"
UNKNOWN = "unknown"
PERIODS = ("hour", "day", "week", "month")
CSV_COLUMNS = ("entity", "label", "language", "period", "mentions", "documents")

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MICROS = 1_000_000
_HOUR = 3600
_DAY = 24 * _HOUR
# 1970-01-01 was a Thursday: weeks (Monday 00:00 UTC) start four days after the epoch.
_WEEK_OFFSET = 4 * _DAY
_FIRST_YEAR, _LAST_YEAR = 1000, 9998


def event_time_micros(published: str | None) -> int | None:
    """Microseconds since the epoch (UTC) of an ISO-8601 time; None when absent,
    unreadable, or outside the years 1000-9998 (no news article is; and every
    period around the time must be a date Python can represent)."""
    if not published:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(published.strip())
    except (TypeError, ValueError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    if not _FIRST_YEAR <= parsed.year <= _LAST_YEAR:
        return None
    return (parsed - _EPOCH) // datetime.timedelta(microseconds=1)


def _utc(micros: int) -> datetime.datetime:
    return _EPOCH + datetime.timedelta(microseconds=micros)


def month_bounds(micros: int) -> tuple[int, int]:
    """[start, end) in microseconds of the UTC calendar month holding ``micros``."""
    t = _utc(micros)
    start = (datetime.datetime(t.year, t.month, 1, tzinfo=datetime.UTC) - _EPOCH) // datetime.timedelta(
        microseconds=1)
    days = calendar.monthrange(t.year, t.month)[1]
    return start, start + days * _DAY * _MICROS


class CalendarMonthWindows(window.NonMergingWindowFn):
    """Calendar months in UTC (28 to 31 days): months are not fixed-length, so
    ``FixedWindows`` cannot express them. Window assignment runs in the SDK and
    the windows are plain ``IntervalWindow``s, so any runner can group by them."""

    def assign(self, context):
        start, end = month_bounds(context.timestamp.micros)
        return [window.IntervalWindow(Timestamp(micros=start), Timestamp(micros=end))]

    def get_window_coder(self):
        return coders.IntervalWindowCoder()

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))


def period_window_fn(period: str) -> window.WindowFn:
    if period == "hour":
        return window.FixedWindows(_HOUR)
    if period == "day":
        return window.FixedWindows(_DAY)
    if period == "week":
        return window.FixedWindows(7 * _DAY, offset=_WEEK_OFFSET)
    if period == "month":
        return CalendarMonthWindows()
    raise ValueError(f"period must be one of {PERIODS}, got {period!r}")


def period_label(start_micros: int, period: str) -> str:
    """The label of the period starting at ``start_micros`` (a window start)."""
    t = _utc(start_micros)
    if period == "hour":
        return f"{t.date().isoformat()}T{t.hour:02d}"
    if period == "day":
        return t.date().isoformat()
    if period == "week":
        year, week, _ = t.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return f"{t.year:04d}-{t.month:02d}"
    raise ValueError(f"period must be one of {PERIODS}, got {period!r}")


def period_of(published: str | None, period: str = "day") -> str:
    """The period label of a published time, as the windows compute it ('unknown' when undated)."""
    micros = event_time_micros(published)
    if micros is None:
        if period not in PERIODS:
            raise ValueError(f"period must be one of {PERIODS}, got {period!r}")
        return UNKNOWN
    [w] = period_window_fn(period).assign(window.WindowFn.AssignContext(Timestamp(micros=micros)))
    return period_label(w.start.micros, period)


def tally_entities(article: dict) -> tuple[str, tuple[tuple[str, str, int], ...]]:
    """(language, ((entity, label, mentions), ...) sorted): all the aggregation needs of an article."""
    counts: dict[tuple[str, str], int] = {}
    for m in article.get("entities") or []:
        key = (m["entity"], m["label"])
        counts[key] = counts.get(key, 0) + 1
    return article.get("language") or "und", tuple((e, lab, n) for (e, lab), n in sorted(counts.items()))


def _total_keys(tally):
    """Keys of the global-window counts: 'all' for every article, 'unknown' for undated ones."""
    language, entities, dated = tally
    for entity, label, n in entities:
        yield (entity, label, language, ALL), (n, 1)
        if not dated:
            yield (entity, label, language, UNKNOWN), (n, 1)


def _period_keys(tally):
    language, entities, _ = tally
    for entity, label, n in entities:
        yield (entity, label, language), (n, 1)


def sum_pairs(pairs) -> tuple[int, int]:
    """Add (mentions, documents) pairs: the combiner of every entity count."""
    mentions = documents = 0
    for m, d in pairs:
        mentions += m
        documents += d
    return mentions, documents


def to_record(element) -> dict:
    (entity, label, language, period), (mentions, documents) = element
    return {"entity": entity, "label": label, "language": language, "period": period,
            "mentions": mentions, "documents": documents}


class TallyFn(beam.DoFn):
    """Article -> (language, entity tallies, dated), stamped with its event time when dated."""

    def __init__(self):
        self._dated = Metrics.counter(STAGE, "dated_articles")
        self._undated = Metrics.counter(STAGE, "undated_articles")
        self._unreadable = Metrics.counter(STAGE, "unreadable_published")

    def process(self, article):
        language, entities = tally_entities(article)
        micros = event_time_micros(article.get("published"))
        if micros is None:
            (self._unreadable if article.get("published") else self._undated).inc()
            yield language, entities, False
        else:
            self._dated.inc()
            yield window.TimestampedValue((language, entities, True), Timestamp(micros=micros))


class LabelPeriodFn(beam.DoFn):
    """Name each windowed count by its period, computed from the window."""

    def __init__(self, period: str):
        self._period = period

    def process(self, element, w=beam.DoFn.WindowParam):
        (entity, label, language), counts = element
        yield to_record(((entity, label, language, period_label(w.start.micros, self._period)), counts))


class ReconcileLatenessFn(beam.DoFn):
    """Per period (keyed by its window bounds): articles sent to the windowed
    count minus articles its panes included, taken once the watermark has
    passed the instant after which the GroupByKey drops the period's data.
    Emits {'period', 'articles'} for a period that lost articles."""

    SENT = userstate.ReadModifyWriteStateSpec("sent", coders.VarIntCoder())
    INCLUDED = userstate.ReadModifyWriteStateSpec("included", coders.VarIntCoder())
    START = userstate.ReadModifyWriteStateSpec("start", coders.VarIntCoder())
    CLOSE = userstate.TimerSpec("close", TimeDomain.WATERMARK)

    def __init__(self, period: str, allowed_lateness: int):
        self._period = period
        self._lateness = allowed_lateness
        self._dropped = Metrics.counter(STAGE, "articles_beyond_lateness")

    def process(self, element, sent=beam.DoFn.StateParam(SENT), included=beam.DoFn.StateParam(INCLUDED),
                start=beam.DoFn.StateParam(START), close=beam.DoFn.TimerParam(CLOSE)):
        (window_start, window_end), (kind, n) = element
        if kind == "sent":
            sent.write((sent.read() or 0) + n)
        else:  # panes accumulate: the latest is the largest
            included.write(max(included.read() or 0, n))
        start.write(window_start)
        # The GroupByKey drops a window's data once the watermark is past end + lateness;
        # a timer already behind the watermark (a period first seen too late) fires at once.
        close.set(Timestamp(micros=window_end) + Duration(seconds=self._lateness) + Duration(micros=1))

    @userstate.on_timer(CLOSE)
    def on_close(self, sent=beam.DoFn.StateParam(SENT), included=beam.DoFn.StateParam(INCLUDED),
                 start=beam.DoFn.StateParam(START)):
        dropped = (sent.read() or 0) - (included.read() or 0)
        if dropped > 0:
            self._dropped.inc(dropped)
            yield {"period": period_label(start.read(), self._period), "articles": dropped}
        # Cleared, not kept: a later mark finds fresh state, sets a timer already due, and is counted.
        sent.clear()
        included.clear()
        start.clear()


class AggregateEntities(beam.PTransform):
    """Kept articles -> {'entity_counts': count records (periods 'all', 'unknown'
    and one per window), 'beyond_lateness': {'period', 'articles'} per period
    that lost articles arriving after its allowed lateness (unbounded inputs)}."""

    def __init__(self, period: str = "day", allowed_lateness: int = 7 * _DAY, update_seconds: int = 60):
        super().__init__()
        if period not in PERIODS:
            raise ValueError(f"period must be one of {PERIODS}, got {period!r}")
        if allowed_lateness < 0:
            raise ValueError(f"allowed_lateness must be zero or more seconds, got {allowed_lateness!r}")
        if update_seconds <= 0:
            raise ValueError(f"update_seconds must be positive, got {update_seconds!r}")
        self._period = period
        self._lateness = int(allowed_lateness)
        self._update_seconds = int(update_seconds)

    def _totals_windowing(self, bounded: bool) -> beam.WindowInto:
        if bounded:
            return beam.WindowInto(window.GlobalWindows())
        return beam.WindowInto(
            window.GlobalWindows(),
            trigger=trigger.AfterWatermark(early=trigger.AfterProcessingTime(self._update_seconds)),
            accumulation_mode=trigger.AccumulationMode.ACCUMULATING)

    def _period_windowing(self) -> beam.WindowInto:
        return beam.WindowInto(
            period_window_fn(self._period),
            trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
            accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
            allowed_lateness=self._lateness)

    def expand(self, articles):
        bounded = articles.is_bounded
        tallies = articles | "Tally" >> beam.ParDo(TallyFn())
        totals = (
            tallies
            | "TotalsWindow" >> self._totals_windowing(bounded)
            | "TotalKeys" >> beam.FlatMap(_total_keys)
            | "SumTotals" >> beam.CombinePerKey(sum_pairs)
            | "TotalRecords" >> beam.Map(to_record)
        )
        windowed = (
            tallies
            | "Dated" >> beam.Filter(lambda tally: tally[2])
            | "PeriodWindows" >> self._period_windowing()
        )
        periods = (
            windowed
            | "PeriodKeys" >> beam.FlatMap(_period_keys)
            | "SumPeriods" >> beam.CombinePerKey(sum_pairs)
            | "PeriodRecords" >> beam.ParDo(LabelPeriodFn(self._period))
        )
        if bounded:  # a bounded input is all on time: nothing can be late
            late = articles.pipeline | "NoLateArticles" >> beam.Create([])
        else:
            late = self._count_beyond_lateness(windowed)
        counts = (
            (totals | "TotalsOut" >> beam.WindowInto(window.GlobalWindows()),
             periods | "PeriodsOut" >> beam.WindowInto(window.GlobalWindows()))
            | "AllCounts" >> beam.Flatten()
        )
        return {COUNTS: counts, BEYOND_LATENESS: late}

    def _count_beyond_lateness(self, windowed):
        sent = windowed | "SentMarks" >> beam.Map(lambda _, w=beam.DoFn.WindowParam: (
            (w.start.micros, w.end.micros), ("sent", 1)))
        included = (
            windowed
            | "OneEach" >> beam.Map(lambda _: 1)
            | "CountIncluded" >> beam.CombineGlobally(sum).without_defaults()
            | "IncludedMarks" >> beam.Map(lambda n, w=beam.DoFn.WindowParam: (
                (w.start.micros, w.end.micros), ("included", n)))
        )
        return (
            (sent | "SentGlobal" >> beam.WindowInto(window.GlobalWindows()),
             included | "IncludedGlobal" >> beam.WindowInto(window.GlobalWindows()))
            | "Marks" >> beam.Flatten()
            | "Reconcile" >> beam.ParDo(ReconcileLatenessFn(self._period, self._lateness)).with_input_types(
                tuple[tuple[int, int], tuple[str, int]])
            | "LateOut" >> beam.WindowInto(window.GlobalWindows())
        )


def count_key(record: dict) -> tuple:
    """(entity, label, language, period) of a count record -> its (mentions, documents)."""
    return ((record["entity"], record["label"], record["language"], record["period"]),
            (int(record["mentions"]), int(record["documents"])))


class MergeCounts(beam.PTransform):
    """Count records of disjoint sets of articles -> the counts of their union.

    Both figures add up: ``documents`` counts articles, and no article is in
    two of the sets. This is the combiner's merge step, for counts that were
    computed in parts and kept on disk in between."""

    def expand(self, records):
        return (
            records
            | "KeyCounts" >> beam.Map(count_key)
            | "SumCounts" >> beam.CombinePerKey(sum_pairs)
            | "CountRecords" >> beam.Map(to_record)
        )


def csv_row(record: dict) -> tuple:
    return tuple(record[c] for c in CSV_COLUMNS)


def _csv_order(row: tuple) -> tuple:
    entity, label, language, period, mentions, documents = row
    return -mentions, -documents, entity, label, language, period != ALL, period


def csv_bytes(rows) -> bytes:
    """The CSV file for ``rows`` (``csv_row`` tuples): UTF-8, header, mentions then
    documents descending, then entity, label, language, period ('all' first) —
    same rows, same bytes."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(sorted(rows, key=_csv_order))
    return out.getvalue().encode("utf-8")


class _WriteCsvFn(beam.DoFn):
    def __init__(self, path: str):
        self._path = path

    def process(self, rows):
        # One file from one globally sorted list; a retried bundle rewrites the same bytes.
        with FileSystems.create(self._path, mime_type="text/csv") as f:
            f.write(csv_bytes(rows))
        Metrics.counter(STAGE, "csv_rows").inc(len(rows))
        yield self._path


class WriteEntityCountsCsv(beam.PTransform):
    """Entity count records -> one sorted CSV file at ``path`` (batch: the global window).

    The rows are gathered on one worker to sort them (as tuples): the table
    holds one row per entity, label, language and period, far smaller than the
    articles. For a streaming pipeline, write the Avro records instead."""

    def __init__(self, path: str):
        super().__init__()
        if not path:
            raise ValueError("path is required")
        self._path = path

    def expand(self, records):
        return (
            records
            | "Rows" >> beam.Map(csv_row)
            | "Gather" >> beam.combiners.ToList()
            | "WriteCsv" >> beam.ParDo(_WriteCsvFn(self._path))
        )


def _top_key(item):
    (entity, label), (mentions, documents) = item
    # Top keeps the largest keys; inverting the names keeps ties in alphabetical order.
    return mentions, documents, tuple(-ord(c) for c in entity) + (1,), tuple(-ord(c) for c in label) + (1,)


class TopEntities(beam.PTransform):
    """Entity count records -> one list of the ``n`` entities with most mentions
    over all languages (period 'all'), ordered like the CSV."""

    def __init__(self, n: int):
        super().__init__()
        if n <= 0:
            raise ValueError(f"n must be positive, got {n!r}")
        self._n = n

    def expand(self, records):
        return (
            records
            | "AllPeriod" >> beam.Filter(lambda r: r["period"] == ALL)
            | "ByEntity" >> beam.Map(lambda r: ((r["entity"], r["label"]), (r["mentions"], r["documents"])))
            | "SumLanguages" >> beam.CombinePerKey(sum_pairs)
            | "Top" >> beam.combiners.Top.Of(self._n, key=_top_key)
            | "AsDicts" >> beam.Map(lambda top: [
                {"entity": e, "label": lab, "mentions": m, "documents": d} for (e, lab), (m, d) in top])
        )
