"""``newsbeam report OUT``: one self-contained HTML page about a run's output.

The page holds everything it needs (styles, scripts, data), so it opens from
disk in any browser with no network. Charts are Vega-Lite specifications
rendered by Vega's JavaScript, inlined from the ``vl-convert-python`` wheel
(``vl_convert.javascript_bundle()``: Vega, Vega-Lite and vega-embed with their
dependencies, about 0.9 MB, maintained by the Vega team). Plotly's
``plotly.min.js`` would add 4.8 MB to every report; charts drawn by hand as
SVG would be code of our own to keep.

What is embedded is aggregated and capped, so the page stays small whatever
the size of the output (the caps are shown on the page):

- entities over time: the ``TOP_PER_LABEL`` most mentioned entities of each of
  the ``MAX_LABELS`` most mentioned labels, summed over languages, for the
  latest ``MAX_PERIODS`` periods; the table, the ``TOP_TABLE`` most mentioned;
- rejected inputs: every (stage, reason) count, ``EXAMPLES`` examples each;
- duplicates: exact/near counts and ``EXAMPLES`` examples of each method;
- runs (``--state-dir`` outputs): the latest ``MAX_RUNS`` runs' summaries.

The counts are read in two passes over the ``entity_counts`` Avro files:
first the all-time totals (to choose the entities), then the periods of
the chosen entities only. For a ``--state-dir`` output the cumulative counts
of all runs (``OUT/entity_counts_total``) are used; the other sections are
about the latest run (``OUT/latest``).
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import json
import re
from collections import Counter, defaultdict

from apache_beam.io.filesystems import FileSystems

__all__ = [
    "EXAMPLES", "MAX_LABELS", "MAX_PERIODS", "MIN_LINE_PERIODS", "MAX_RUNS", "TOP_PER_LABEL", "TOP_TABLE",
    "ReportError", "build_report_data", "chart_specs", "coverage_rows", "period_start", "render_html", "vega_bundle",
    "write_report",
]

TOP_PER_LABEL = 10
ENTITY_CHART_WIDTH = 860
MAX_LABELS = 12
MAX_PERIODS = 366
# A time axis is drawn as lines only when the periods with mentions are at
# least this many and fill at least half of their span; sparser data (a few
# months scattered over years) would be a few lone dots joined across the
# gaps, so it is drawn as bars, one group per period, instead.
MIN_LINE_PERIODS = 6
TOP_TABLE = 50
TOP_SHOWN = 15  # of TOP_TABLE, the rest behind a click
EXAMPLES = 3
MAX_RUNS = 200
REPORT_NAME = "report.html"
_VEGA_LITE_SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json"  # an identifier: never fetched


class ReportError(Exception):
    """The folder is not a newsbeam output (or cannot be read)."""


# ---------------------------------------------------------------- reading


def _exists(path: str) -> bool:
    try:
        return FileSystems.exists(path)
    except Exception:  # an unreachable filesystem is as good as absent here
        return False


def _read_text(path: str) -> str | None:
    if not _exists(path):
        return None
    with FileSystems.open(path, compression_type="uncompressed") as f:
        return f.read().decode("utf-8")


def _paths(pattern: str) -> list[str]:
    try:
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # no match
        return []


def _records(folder: str):
    import fastavro

    for path in _paths(FileSystems.join(folder, "*.avro")):
        with FileSystems.open(path, compression_type="uncompressed") as f:
            yield from fastavro.reader(f)


def locate(out: str) -> dict:
    """Where the parts of a report come from: ``run`` (the folder of the run
    described), ``counts`` (entity counts folder), ``runs`` (the runs folder
    of a --state-dir output, else None)."""
    if _exists(FileSystems.join(out, "summary.json")):
        return {"run": out, "counts": FileSystems.join(out, "entity_counts"), "runs": None, "run_id": None}
    latest = (_read_text(FileSystems.join(out, "latest")) or "").strip()
    if latest:
        run = FileSystems.join(out, "runs", latest)
        total = FileSystems.join(out, "entity_counts_total")
        counts = total if _paths(FileSystems.join(total, "*.avro")) else FileSystems.join(run, "entity_counts")
        return {"run": run, "counts": counts, "runs": FileSystems.join(out, "runs"), "run_id": latest}
    raise ReportError(f"{out!r} holds no newsbeam output (no summary.json, no 'latest' run)")


# ---------------------------------------------------------------- aggregating

_HOUR = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2})$")
_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def period_start(label: str) -> tuple[str, str] | None:
    """(kind, ISO UTC start) of a period label ('2024-08-16T20', '2024-08-16',
    '2024-W33', '2024-08'); None for 'all', 'unknown' or anything else."""
    try:
        if m := _HOUR.match(label):
            y, mo, d, h = map(int, m.groups())
            return "hour", dt.datetime(y, mo, d, h).strftime("%Y-%m-%dT%H:00:00Z")
        if m := _DAY.match(label):
            y, mo, d = map(int, m.groups())
            return "day", dt.date(y, mo, d).isoformat() + "T00:00:00Z"
        if m := _WEEK.match(label):
            y, w = map(int, m.groups())
            return "week", dt.date.fromisocalendar(y, w, 1).isoformat() + "T00:00:00Z"
        if m := _MONTH.match(label):
            y, mo = map(int, m.groups())
            return "month", dt.date(y, mo, 1).isoformat() + "T00:00:00Z"
    except ValueError:
        return None
    return None


def _span(kind: str | None, first: str, last: str) -> int:
    """How many periods of ``kind`` run from the one starting at ``first`` to the one at ``last`` (ISO starts)."""
    a, b = (dt.datetime.strptime(x, "%Y-%m-%dT%H:%M:%SZ") for x in (first, last))
    if kind == "month":
        return (b.year - a.year) * 12 + b.month - a.month + 1
    hours = int((b - a).total_seconds() // 3600)
    return hours + 1 if kind == "hour" else hours // (24 * 7 if kind == "week" else 24) + 1


def aggregate_entities(records_twice, top_per_label: int = TOP_PER_LABEL, max_labels: int = MAX_LABELS,
                       max_periods: int = MAX_PERIODS, top_table: int = TOP_TABLE) -> dict:
    """Entity counts for the page. ``records_twice()`` returns a fresh
    iterable of entity_count records on each call (it is read twice)."""
    totals: Counter = Counter()
    documents: Counter = Counter()
    undated = 0
    for r in records_twice():
        if r["period"] == "all":
            totals[(r["entity"], r["label"])] += r["mentions"]
            documents[(r["entity"], r["label"])] += r["documents"]
        elif r["period"] == "unknown":
            undated += r["mentions"]
    by_label: dict[str, list] = defaultdict(list)
    for (entity, label), n in totals.most_common():
        by_label[label].append((entity, n))
    label_totals = sorted(((sum(n for _, n in v), label) for label, v in by_label.items()), reverse=True)
    labels = [label for _, label in label_totals[:max_labels]]
    chosen = {(e, label) for label in labels for e, _ in by_label[label][:top_per_label]}

    series: Counter = Counter()
    kinds: Counter = Counter()
    for r in records_twice():
        key = (r["entity"], r["label"])
        if key in chosen and r["period"] not in ("all", "unknown"):
            start = period_start(r["period"])
            if start:
                kinds[start[0]] += 1
                series[(key, r["period"], start[1])] += r["mentions"]
    periods = sorted({(t, p) for (_, p, t) in series})
    dropped_periods = max(len(periods) - max_periods, 0)
    periods = periods[dropped_periods:]
    kind = kinds.most_common(1)[0][0] if kinds else None
    as_lines = len(periods) >= MIN_LINE_PERIODS and 2 * len(periods) >= _span(kind, periods[0][0], periods[-1][0])
    kept = {p for _, p in periods}
    rows = {key_p: n for key_p, n in series.items() if key_p[1] in kept}
    if as_lines:
        # A period in which an entity is not mentioned is a 0 on its line, not a gap the line bridges.
        for key in {k for (k, _, _) in rows}:
            for t, p in periods:
                rows.setdefault((key, p, t), 0)
    order = {p: i for i, (_, p) in enumerate(periods)}
    return {
        "labels": labels,
        "top": [{"entity": e, "label": label, "mentions": n, "documents": documents[(e, label)]}
                for (e, label), n in totals.most_common(top_table)],
        "best": [{"entity": e, "label": label, "mentions": totals[(e, label)], "documents": documents[(e, label)]}
                 for (e, label) in sorted(chosen, key=lambda k: (-totals[k], k))],
        "series": [{"entity": e, "label": label, "period": p, "t": t, "order": order[p], "mentions": n}
                   for ((e, label), p, t), n in sorted(rows.items(), key=lambda kv: (kv[0][2], kv[0][0]))],
        "period_kind": kind,
        "periods": len(periods),
        "periods_left_out": dropped_periods,
        "as_lines": as_lines,
        "entities_total": len(totals),
        "mentions_total": sum(totals.values()),
        "undated_mentions": undated,
    }


def aggregate_rejected(records, examples: int = EXAMPLES) -> list[dict]:
    counts: Counter = Counter()
    samples: dict = defaultdict(list)
    for r in records:
        key = (r["stage"], r["reason"])
        counts[key] += 1
        if len(samples[key]) < examples:
            samples[key].append({"source": r["source"], "detail": (r.get("detail") or "")[:300]})
    return [{"stage": s, "reason": reason, "count": n, "examples": samples[(s, reason)]}
            for (s, reason), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def aggregate_duplicates(records, examples: int = EXAMPLES) -> dict:
    counts: Counter = Counter()
    samples: dict = defaultdict(list)
    similarity_bins: Counter = Counter()
    for r in records:
        counts[r["method"]] += 1
        if r["method"] == "near":
            similarity_bins[round(min(int(r["similarity"] * 20), 19) / 20, 2)] += 1
        if len(samples[r["method"]]) < examples:
            samples[r["method"]].append({"source": r["source"], "duplicate_of": r["duplicate_of"],
                                         "similarity": round(float(r["similarity"]), 3)})
    return {"methods": dict(sorted(counts.items())), "examples": dict(samples),
            "near_similarity": [{"from": b, "count": n} for b, n in sorted(similarity_bins.items())]}


def _run_row(run_id: str, s: dict) -> dict:
    return {
        "run_id": run_id,
        "inputs": s.get("inputs", {}).get("records", 0),
        "articles": s.get("articles", 0),
        "duplicates": s.get("duplicates", {}).get("total", 0),
        "rejected": s.get("rejected", {}).get("total", 0),
        "wall_seconds": s.get("timings", {}).get("wall_seconds"),
        "files_new": s.get("incremental", {}).get("files_new"),
        "files_changed": s.get("incremental", {}).get("files_changed"),
    }


def read_runs(runs_folder: str, max_runs: int = MAX_RUNS) -> tuple[list[dict], int]:
    """The latest ``max_runs`` runs' figures (oldest first) and how many older ones were left out."""
    ids = sorted({p.rstrip("/").split("/")[-2] for p in _paths(FileSystems.join(runs_folder, "*", "summary.json"))})
    left_out = max(len(ids) - max_runs, 0)
    rows = []
    for run_id in ids[left_out:]:
        text = _read_text(FileSystems.join(runs_folder, run_id, "summary.json"))
        if text:
            rows.append(_run_row(run_id, json.loads(text)))
    return rows, left_out


def build_report_data(out: str) -> dict:
    """Everything the page shows, aggregated from the output folder ``out``; raises ReportError."""
    where = locate(out)
    text = _read_text(FileSystems.join(where["run"], "summary.json"))
    if text is None:
        raise ReportError(f"{where['run']!r} has no summary.json")
    try:
        summary = json.loads(text)
    except ValueError as e:
        raise ReportError(f"{where['run']}/summary.json is not JSON: {e}") from e
    runs, runs_left_out = read_runs(where["runs"]) if where["runs"] else ([], 0)
    return {
        "output": out,
        "run_id": where["run_id"] or summary.get("run_id"),
        "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "counts_from": "all runs (entity_counts_total)" if where["counts"].rstrip("/").endswith(
            "entity_counts_total") else "this run",
        "summary": {k: summary.get(k) for k in ("inputs", "articles", "duplicates", "rejected", "languages",
                                                 "entities", "timings", "versions", "execution", "output",
                                                 "incremental")},
        "entities": aggregate_entities(lambda: _records(where["counts"])),
        "rejected": aggregate_rejected(_records(FileSystems.join(where["run"], "rejected"))),
        "duplicates": aggregate_duplicates(_records(FileSystems.join(where["run"], "duplicates"))),
        "runs": runs,
        "runs_left_out": runs_left_out,
        "limits": {"top_per_label": TOP_PER_LABEL, "max_labels": MAX_LABELS, "max_periods": MAX_PERIODS,
                   "top_table": TOP_TABLE, "examples": EXAMPLES, "max_runs": MAX_RUNS},
    }


# ---------------------------------------------------------------- charts

_PALETTE = "tableau10"


def _base(title: str, data: list, width="container", height=260) -> dict:
    return {"$schema": _VEGA_LITE_SCHEMA, "title": title, "width": width, "height": height,
            "data": {"values": data}, "config": {"view": {"stroke": None}, "axis": {"labelLimit": 220}}}


def chart_specs(data: dict) -> dict[str, dict]:
    """Vega-Lite specifications keyed by the id of the element each goes in."""
    specs: dict[str, dict] = {}
    ents, summary = data["entities"], data["summary"]
    labels = ents["labels"]
    if labels:
        # One spec, one selector for both views: Vega-Lite parameters do not cross embeds.
        views = []
        if ents["series"]:
            unit = {"hour": "utcyearmonthdatehours", "day": "utcyearmonthdate", "week": "utcyearmonthdate",
                    "month": "utcyearmonth"}.get(ents["period_kind"], "utcyearmonthdate")
            kind = ents["period_kind"] or "period"
            view = {
                "width": ENTITY_CHART_WIDTH, "height": 300, "data": {"name": "series"},
                "params": [{"name": "pick", "select": {"type": "point", "fields": ["entity"]}, "bind": "legend"}],
                "transform": [{"filter": "datum.label === label_choice"}],
                "encoding": {
                    "y": {"field": "mentions", "type": "quantitative", "title": "mentions"},
                    "color": {"field": "entity", "type": "nominal", "scale": {"scheme": _PALETTE},
                              "title": "entity (click to highlight)"},
                    "opacity": {"condition": {"param": "pick", "value": 1, "empty": True}, "value": 0.15}}}
            if ents["as_lines"]:
                view["title"] = f"Mentions per {kind} of the chosen label's top entities"
                view["mark"] = {"type": "line", "point": {"size": 40}, "tooltip": True}
                view["encoding"]["x"] = {"field": "t", "type": "temporal", "timeUnit": unit, "title": None}
            else:
                view["title"] = (f"Mentions per {kind} of the chosen label's top entities ({kind}s without any "
                                 "left out: too few or too far apart for a line)")
                view["mark"] = {"type": "bar", "tooltip": True}
                view["encoding"]["x"] = {"field": "period", "type": "ordinal", "title": None,
                                         "sort": {"field": "order", "op": "min"},
                                         "axis": {"labelAngle": 0 if ents["periods"] <= 6 else -40}}
                view["encoding"]["xOffset"] = {"field": "entity", "type": "nominal"}
            views.append(view)
        views.append({
            "title": "Most mentioned entities of the chosen label (all periods)",
            "width": ENTITY_CHART_WIDTH, "height": {"step": 20}, "data": {"name": "best"},
            "transform": [{"filter": "datum.label === label_choice"}],
            "mark": {"type": "bar", "tooltip": True},
            "encoding": {"y": {"field": "entity", "type": "nominal", "sort": "-x", "title": None},
                         "x": {"field": "mentions", "type": "quantitative", "title": "mentions"},
                         "color": {"value": "#4c78a8"}}})
        specs["chart-entities"] = {
            "$schema": _VEGA_LITE_SCHEMA, "datasets": {"series": ents["series"], "best": ents["best"]},
            "params": [{"name": "label_choice", "value": labels[0],
                        "bind": {"input": "select", "options": labels, "name": "Entity label "}}],
            "vconcat": views, "spacing": 28,
            "config": {"view": {"stroke": None}, "axis": {"labelLimit": 220}}}
    langs = [{"language": k, "articles": v} for k, v in (summary.get("languages") or {}).items()]
    if langs:
        specs["chart-languages"] = {
            **_base("Kept articles per language", langs, height=max(60, 24 * len(langs))),
            "mark": {"type": "bar", "tooltip": True},
            "encoding": {"y": {"field": "language", "type": "nominal", "sort": "-x", "title": None},
                         "x": {"field": "articles", "type": "quantitative"}, "color": {"value": "#59a14f"}}}
    dups = summary.get("duplicates") or {}
    fate = [{"what": "kept", "records": summary.get("articles") or 0}] + [
        {"what": f"duplicate ({k})", "records": v} for k, v in dups.items() if k != "total"] + [
        {"what": "rejected", "records": (summary.get("rejected") or {}).get("total", 0)}]
    specs["chart-fate"] = {
        **_base("What became of the input records", fate, height=30 * len(fate)),
        "mark": {"type": "bar", "tooltip": True},
        "encoding": {"y": {"field": "what", "type": "nominal", "sort": None, "title": None},
                     "x": {"field": "records", "type": "quantitative"},
                     "color": {"field": "what", "type": "nominal", "legend": None,
                               "scale": {"scheme": _PALETTE}}}}
    if data["duplicates"]["near_similarity"]:
        specs["chart-near"] = {
            **_base("Near duplicates by similarity to the kept article", data["duplicates"]["near_similarity"],
                    height=160),
            "mark": {"type": "bar", "tooltip": True},
            "encoding": {"x": {"field": "from", "type": "ordinal", "title": "Jaccard similarity (from)"},
                         "y": {"field": "count", "type": "quantitative", "title": "duplicates"},
                         "color": {"value": "#f28e2b"}}}
    if data["rejected"]:
        rows = [{"reason": f"{r['stage']}: {r['reason']}", "stage": r["stage"], "count": r["count"]}
                for r in data["rejected"]]
        specs["chart-rejected"] = {
            **_base("Rejected inputs by stage and reason", rows, height=max(60, 24 * len(rows))),
            "mark": {"type": "bar", "tooltip": True},
            "encoding": {"y": {"field": "reason", "type": "nominal", "sort": "-x", "title": None},
                         "x": {"field": "count", "type": "quantitative", "title": "inputs"},
                         "color": {"field": "stage", "type": "nominal", "scale": {"scheme": "set2"}}}}
    timings = summary.get("timings") or {}
    stage_rows = [{"step": k, "seconds": v} for k, v in (timings.get("stage_seconds") or {}).items()][:15]
    if stage_rows:
        specs["chart-stages"] = {
            **_base("Worker seconds per pipeline step (largest 15)", stage_rows, height=22 * len(stage_rows)),
            "mark": {"type": "bar", "tooltip": True},
            "encoding": {"y": {"field": "step", "type": "nominal", "sort": "-x", "title": None},
                         "x": {"field": "seconds", "type": "quantitative"}, "color": {"value": "#76b7b2"}}}
    if data["runs"]:
        long = [{"run": r["run_id"], "n": i + 1, "what": what, "records": r[what]}
                for i, r in enumerate(data["runs"]) for what in ("articles", "duplicates", "rejected")]
        specs["chart-runs"] = {
            **_base("Records per run", long, height=220),
            "mark": {"type": "line", "point": True, "tooltip": True},
            "encoding": {"x": {"field": "n", "type": "ordinal", "title": "run (oldest to newest)",
                               "axis": {"labelAngle": 0}},
                         "y": {"field": "records", "type": "quantitative"},
                         "color": {"field": "what", "type": "nominal", "scale": {"scheme": _PALETTE}}}}
        secs = [{"run": r["run_id"], "n": i + 1, "seconds": r["wall_seconds"]}
                for i, r in enumerate(data["runs"]) if r["wall_seconds"] is not None]
        if secs:
            specs["chart-run-seconds"] = {
                **_base("Wall-clock seconds per run", secs, height=160),
                "mark": {"type": "bar", "tooltip": True},
                "encoding": {"x": {"field": "n", "type": "ordinal", "title": "run", "axis": {"labelAngle": 0}},
                             "y": {"field": "seconds", "type": "quantitative"}, "color": {"value": "#9c755f"}}}
    return specs


# ---------------------------------------------------------------- HTML


@functools.lru_cache(maxsize=1)
def vega_bundle() -> str:
    """Vega + Vega-Lite + vega-embed as one script (sets window.vegaEmbed)."""
    import vl_convert

    return vl_convert.javascript_bundle()


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def coverage_rows(summary: dict) -> list[list[str]]:
    """Per kept language: articles, its NER model (or none) and how many
    articles got entities; empty for summaries written before coverage was
    recorded (they only counted the articles without a model)."""
    cov = summary.get("entities") or {}
    if "with_model_by_language" not in cov:
        return []
    models = cov.get("models") or {}
    with_model, found = cov["with_model_by_language"], cov.get("with_entities_by_language") or {}
    without = cov.get("without_model_by_language") or {}
    rows = []
    for lang, n in (summary.get("languages") or {}).items():
        if lang in with_model:
            rows.append([lang, f"{n:,}", models.get(lang, "?"), f"{found.get(lang, 0):,}"])
        elif lang in without:
            rows.append([lang, f"{n:,}", "none: no entities", "0"])
    return rows


def _table(headers: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _script_json(value) -> str:
    """JSON safe inside a <script> element: no '</script>' or '<!--' can end it."""
    return json.dumps(value, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace(
        "&", "\\u0026").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _card(title: str, value, note: str = "") -> str:
    return (f'<div class="card"><div class="num">{_e(value)}</div><div class="what">{_e(title)}</div>'
            + (f'<div class="note">{_e(note)}</div>' if note else "") + "</div>")


def _chart(chart_id: str, specs: dict) -> str:
    return f'<div class="chart" id="{chart_id}"></div>' if chart_id in specs else ""


_CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#dde1e8; --bg:#f6f7f9; --accent:#4c78a8; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--fg);
       background:var(--bg); }
header { background:#1d2330; color:#fff; padding:18px 28px; }
header h1 { margin:0; font-size:20px; } header p { margin:4px 0 0; color:#c6cbd6; font-size:13px; }
main { max-width:1180px; margin:0 auto; padding:18px 28px 40px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:16px 20px; margin:16px 0; }
h2 { font-size:16px; margin:0 0 10px; } h3 { font-size:14px; margin:14px 0 0; }
.cards { display:flex; flex-wrap:wrap; gap:12px; }
.card { flex:1 1 140px; border:1px solid var(--line); border-radius:8px; padding:10px 14px; background:#fbfcfd; }
.card .num { font-size:22px; font-weight:600; } .card .what { color:var(--muted); }
.card .note { color:var(--muted); font-size:12px; }
.grid { display:grid; grid-template-columns:1fr 1fr; gap:18px; }
@media (max-width:900px) { .grid { grid-template-columns:1fr; } }
.chart { width:100%; min-height:60px; }
table { border-collapse:collapse; width:100%; font-size:13px; margin-top:8px; }
th, td { text-align:left; padding:4px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { color:var(--muted); font-weight:600; }
td.n, th.n { text-align:right; }
.muted { color:var(--muted); font-size:12px; }
.error { color:#b00020; font-weight:600; }
code { font-size:12px; background:#f0f2f5; padding:1px 4px; border-radius:3px; word-break:break-all; }
details summary { cursor:pointer; color:var(--accent); margin-top:8px; }
.vega-embed { display:flex !important; flex-direction:column-reverse; align-items:flex-start; }
.vega-bindings { margin:0 0 8px; } .vega-bind { font-weight:600; }
.vega-bind select { font:inherit; padding:2px 4px; }
"""

_EMBED = """
const specs = JSON.parse(document.getElementById("newsbeam-specs").textContent);
const failures = [];
await Promise.all(Object.entries(specs).map(([id, spec]) =>
  window.vegaEmbed("#" + id, spec, {renderer: "svg", actions: false})
    .catch((e) => { failures.push(id); document.getElementById(id).innerHTML =
      '<p class="error">This chart could not be drawn: ' + String(e).replace(/</g, "&lt;") + "</p>";
      console.error(e); })));
document.body.dataset.charts = failures.length ? "failed" : "rendered";
"""


def render_html(data: dict, bundle: str | None = None) -> str:
    """The whole page for ``data`` (from build_report_data)."""
    from pipelines.console import plural

    s = data["summary"]
    ents = data["entities"]
    specs = chart_specs(data)
    inputs = s.get("inputs") or {}
    timings = s.get("timings") or {}
    versions = s.get("versions") or {}
    dups = s.get("duplicates") or {}
    rejected_total = (s.get("rejected") or {}).get("total", 0)
    limits = data["limits"]
    title = f"newsbeam report: {data['output']}"

    cards = "".join([
        _card("input records", f"{inputs.get('records', 0):,}", f"from {plural(inputs.get('files', 0), 'file')}"),
        _card("articles kept", f"{s.get('articles') or 0:,}"),
        _card("duplicates", f"{dups.get('total', 0):,}",
              ", ".join(f"{v:,} {k}" for k, v in dups.items() if k != "total")),
        _card("rejected", f"{rejected_total:,}"),
        _card("entities", f"{ents['entities_total']:,}", f"{ents['mentions_total']:,} mentions"),
        _card("wall time", f"{timings.get('wall_seconds', 0):.1f} s"),
    ])

    if ents["series"]:
        time_note = (f"{ents['periods']} {ents['period_kind'] or 'period'}s shown"
                     + (f"; the {ents['periods_left_out']} oldest left out" if ents["periods_left_out"] else "")
                     + (f"; {ents['undated_mentions']:,} mentions in undated articles are not on the time axis"
                        if ents["undated_mentions"] else ""))
    elif ents["labels"]:
        time_note = ("No kept article has a published date, so there is no time axis: the counts are "
                     "shown for all periods together.")
    else:
        time_note = "No entities were found."
    top_rows = [[e["entity"], e["label"], f"{e['mentions']:,}", f"{e['documents']:,}"] for e in ents["top"]]

    dup_examples = [[m, ex["source"], ex["duplicate_of"], ex["similarity"]]
                    for m, exs in data["duplicates"]["examples"].items() for ex in exs]
    rej_rows = []
    for r in data["rejected"]:
        first = True
        for ex in r["examples"] or [{"source": "", "detail": ""}]:
            rej_rows.append([r["stage"] if first else "", r["reason"] if first else "",
                             f"{r['count']:,}" if first else "", ex["source"], ex["detail"]])
            first = False
    coverage = coverage_rows(s)
    phase_rows = [[k, f"{v:.1f} s"] for k, v in (timings.get("phase_seconds") or {}).items()]
    version_rows = [[k, v] for k, v in versions.items() if k != "models"] + [
        [f"model ({lang})", f"{m.get('package')} {m.get('version')}"]
        for lang, m in (versions.get("models") or {}).items()]
    runs_rows = [[r["run_id"], f"{r['inputs']:,}", f"{r['articles']:,}", f"{r['duplicates']:,}",
                  f"{r['rejected']:,}", "" if r["wall_seconds"] is None else f"{r['wall_seconds']:.1f}"]
                 for r in data["runs"][-20:]][::-1]

    runs_section = ""
    left_out = f" (the {data['runs_left_out']} oldest left out)" if data["runs_left_out"] else ""
    if data["runs"]:
        runs_section = f"""
<section id="runs"><h2>Across runs</h2>
<p class="muted">{len(data['runs'])} runs{left_out}; the table lists the latest 20.</p>
<div class="grid">{_chart('chart-runs', specs)}{_chart('chart-run-seconds', specs)}</div>
{_table(['run', 'input records', 'articles', 'duplicates', 'rejected', 'seconds'], runs_rows)}
</section>"""

    body = f"""
<header><h1>{_e(title)}</h1>
<p>{_e('run ' + data['run_id'] + ' · ' if data.get('run_id') else '')}generated {_e(data['generated'])}
 · entity counts from {_e(data['counts_from'])}</p></header>
<main>
<section id="overview"><h2>Overview</h2><div class="cards">{cards}</div></section>
<section id="entities"><h2>Entities</h2>
<p class="muted">{_e(time_note)}</p>
{_chart('chart-entities', specs)}
<h3>Top {len(top_rows[:TOP_SHOWN])} entities (all labels, all periods)</h3>
{_table(['entity', 'label', 'mentions', 'articles'], top_rows[:TOP_SHOWN], 'top-entities')}
{f"<details><summary>{len(top_rows) - TOP_SHOWN} more</summary>" + _table(
    ['entity', 'label', 'mentions', 'articles'], top_rows[TOP_SHOWN:]) + "</details>"
 if len(top_rows) > TOP_SHOWN else ""}
</section>
<div class="grid">
<section id="languages"><h2>Languages</h2>{_chart('chart-languages', specs) or '<p>No articles kept.</p>'}
{_table(['language', 'articles', 'NER model', 'with entities'], coverage) if coverage else ''}</section>
<section id="duplicates"><h2>Duplicates</h2>{_chart('chart-fate', specs)}{_chart('chart-near', specs)}
{_table(['method', 'duplicate', 'kept article id', 'similarity'], dup_examples) if dup_examples
 else '<p>No duplicates.</p>'}</section>
</div>
<section id="rejected"><h2>Rejected inputs</h2>
{_chart('chart-rejected', specs)}
{_table(['stage', 'reason', 'inputs', 'example', 'detail'], rej_rows) if rej_rows
 else '<p>Nothing was rejected.</p>'}</section>
{runs_section}
<section id="run"><h2>Timings and versions</h2>
<div class="grid"><div>{_chart('chart-stages', specs)}
{_table(['phase', 'wall time'], phase_rows) if phase_rows else ''}
<p class="muted">Wall time {timings.get('wall_seconds', 0):.1f} s, pipeline {timings.get('pipeline_seconds', 0):.1f} s.
</p></div>
<div>{_table(['software', 'version'], version_rows)}</div></div></section>
<p class="muted">What this page embeds is capped: the {limits['top_per_label']} most mentioned entities of each
of the {limits['max_labels']} most mentioned labels (for the charts), the latest {limits['max_periods']} periods,
the {limits['top_table']} most mentioned entities (table), {limits['examples']} examples per rejection reason and
duplicate method, the latest {limits['max_runs']} runs. Everything is in the Avro files of
<code>{_e(data['output'])}</code>. Charts: Vega-Lite, rendered in the page with no network access.</p>
</main>"""

    scripts = ""
    if specs:
        bundle = (vega_bundle() if bundle is None else bundle).replace("</script", "<\\/script")
        scripts = (f'<script type="application/json" id="newsbeam-specs">{_script_json(specs)}</script>\n'
                   f'<script type="module">{bundle}</script>\n'
                   f'<script type="module">{_EMBED}</script>')
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>{body}\n{scripts}\n</body></html>\n")


def write_report(out: str, target: str | None = None) -> tuple[str, int]:
    """Build the report of ``out`` and write it to ``target`` (default
    ``OUT/report.html``); returns (path, bytes written). Raises ReportError."""
    target = target or FileSystems.join(out, REPORT_NAME)
    page = render_html(build_report_data(out)).encode("utf-8")
    with FileSystems.create(target, mime_type="text/html", compression_type="uncompressed") as f:
        f.write(page)
    return target, len(page)
