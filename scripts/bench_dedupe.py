#!/usr/bin/env python
"""Dedupe time at several multiples of a folder of articles, to show how it grows.

    scripts/bench_dedupe.py [--data DIR] [--scales 1,8] [--workers N] [--threshold 0.8]

The articles (``.txt`` under ``DIR``, recursively: first non-empty line the
title, the rest the body) are read and cleaned once with the pipeline's own
pure functions (``read.parse_payload``, ``clean.clean_article``), outside any
timing. Scale N is the originals plus N-1 further copies whose articles are
distinct stories: copy k of article i is the first half of article i's body
words followed by the second half of article i + k*(n//N)'s (n articles),
so its shingles overlap each source by about half, below any sensible
threshold, and dedupe has real work to do on every copy. The partner stride
keeps partners far apart in file order, because duplicates in news folders are
often neighbours (``470.txt`` republishes ``469.txt``) and pairing neighbours
would turn one duplicate pair into one per copy.

For each scale the articles are written to a temporary JSON-lines file and two
pipelines run on Beam's FnApiRunner: a baseline that reads and parses the file,
and the same followed by ``DedupeArticles``; the dedupe time is the difference
(wall and CPU seconds of this process, which hosts the runner's worker when
``--workers 1``). Printed per scale: seconds, microseconds per article, the
dedupe counters (kept, duplicates, candidate pairs, verified pairs, oversized
buckets) and the process's peak RSS so far (input included); then the
growth against the smallest scale: the time ratio, and the marginal cost per
added article against the average cost at the smallest scale (about 1.0 or
less = linear; fixed per-run costs make it less). Timings on a shared machine
are noisy.

``--boilerplate N`` adds N near-identical pages of one template to every scale
(each with its own reference line), the case of a site's boilerplate pages:
they fill one LSH bucket per band far beyond the bucket cap.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "bbc-news" / "articles"
COUNTERS = ("kept", "exact_duplicates", "near_duplicates", "candidate_pairs", "verified_pairs",
            "oversized_buckets")


def split_article(text: str) -> tuple[str, list[str]]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0], lines[1:]) if lines else ("", [])


def half_of(paragraphs: list[str], first: bool) -> list[str]:
    """The first or second half of the words, paragraph breaks kept: halves by
    paragraph count would be lopsided (a 17-word lead and a 203-word body)."""
    total = sum(len(p.split()) for p in paragraphs)
    cut, seen, out = (total + 1) // 2, 0, []
    for paragraph in paragraphs:
        words = paragraph.split()
        lo, hi = (0, cut - seen) if first else (cut - seen, len(words))
        part = words[max(lo, 0):max(hi, 0)]
        if part:
            out.append(" ".join(part))
        seen += len(words)
    return out


def paired_text(a: str, b: str) -> str:
    """First half of ``a``'s body words, then the second half of ``b``'s."""
    title_a, paras_a = split_article(a)
    title_b, paras_b = split_article(b)
    body = half_of(paras_a, True) + half_of(paras_b, False)
    return f"{title_a} | {title_b}\n\n" + "\n\n".join(body) + "\n"


def load_texts(root: Path) -> list[tuple[str, str]]:
    """(path relative to root, text) of every .txt file, sorted."""
    found = []
    for path in sorted(root.rglob("*.txt")):
        key = path.relative_to(root).as_posix()
        if not any(part.startswith(".") for part in key.split("/")):
            found.append((key, path.read_text(encoding="utf-8", errors="replace")))
    return found


def build_articles(texts: list[tuple[str, str]], scale: int) -> list[dict]:
    from pipelines.clean import clean_article
    from pipelines.read import parse_payload

    articles = []
    stride = max(1, len(texts) // scale)
    for k in range(scale):
        for i, (key, body) in enumerate(texts):
            raw = body if k == 0 else paired_text(body, texts[(i + k * stride) % len(texts)][1])
            data = raw.encode("utf-8")
            for record in parse_payload(data, f"copy{k:03d}/{key}", f"copy{k:03d}/{key}", "text"):
                if "reason" not in record:
                    cleaned = clean_article(record)
                    if "reason" not in cleaned:
                        articles.append(cleaned)
    return articles


def boilerplate_articles(template: str, count: int) -> list[dict]:
    """``count`` pages of one template, each with its own reference line: near
    identical (no two byte-identical), so exact dedupe cannot collapse them and
    every LSH band of the template is one bucket of ``count`` members."""
    from pipelines.clean import clean_article
    from pipelines.read import parse_payload

    title, paragraphs = split_article(template)
    pages = []
    for n in range(count):
        data = (f"{title}\n\n" + "\n\n".join([*paragraphs, f"Reference {n:07d} page {n * 7919 % 100003}"])
                ).encode("utf-8")
        for record in parse_payload(data, f"boilerplate/{n:07d}.txt", f"boilerplate/{n:07d}.txt", "text"):
            cleaned = clean_article(record)
            if "reason" not in cleaned:
                pages.append(cleaned)
    return pages


def run_pipeline(jsonl: str, workers: int, dedupe: bool, threshold: float) -> tuple[float, float, dict]:
    """(wall seconds, CPU seconds of this process, dedupe counters) of one pipeline over ``jsonl``."""
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.dedupe import DedupeArticles

    options = {"runner": "FnApiRunner", "direct_num_workers": workers}
    if workers > 1:
        options["direct_running_mode"] = "multi_processing"
    p = beam.Pipeline(options=PipelineOptions(flags=[], **options))
    arts = p | "ReadJsonl" >> beam.io.ReadFromText(jsonl) | "Parse" >> beam.Map(json.loads)
    if dedupe:
        arts | "Dedupe" >> DedupeArticles(threshold)
    start, cpu = time.monotonic(), time.process_time()
    result = p.run()
    result.wait_until_finish()
    seconds, cpu = time.monotonic() - start, time.process_time() - cpu
    counters = {}
    if dedupe:
        for c in result.metrics().query(MetricsFilter().with_namespace("dedupe"))["counters"]:
            counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + c.committed
    return seconds, cpu, {name: counters.get(name, 0) for name in COUNTERS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="folder of .txt articles (default: ../shared/data/bbc-news/articles from the repo root)")
    parser.add_argument("--scales", default="1,8", help="comma-separated multiples of the input (default: 1,8)")
    parser.add_argument("--workers", type=int, default=1, help="FnApiRunner workers (default: 1)")
    parser.add_argument("--threshold", type=float, default=0.8, help="near-duplicate threshold (default: 0.8)")
    parser.add_argument("--boilerplate", type=int, default=0,
                        help="add this many near-identical pages of one template at every scale, to measure a "
                             "huge LSH bucket (default: 0)")
    args = parser.parse_args(argv)
    scales = sorted({int(s) for s in args.scales.split(",") if s.strip()})
    texts = load_texts(Path(args.data))
    if not texts or min(scales) < 1 or max(scales) > len(texts):
        parser.error(f"need scales between 1 and the number of articles ({len(texts)})")

    rows = []
    with tempfile.TemporaryDirectory(prefix="newsbeam-bench-dedupe-") as tmp:
        for scale in scales:
            articles = build_articles(texts, scale) + boilerplate_articles(texts[0][1], args.boilerplate)
            jsonl = str(Path(tmp) / f"articles-{scale}x.jsonl")
            with open(jsonl, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(a) + "\n" for a in articles)
            base_wall, base_cpu, _ = run_pipeline(jsonl, args.workers, False, args.threshold)
            wall, cpu, counters = run_pipeline(jsonl, args.workers, True, args.threshold)
            row = {"scale": scale, "articles": len(articles),
                   "dedupe_seconds": round(max(wall - base_wall, 0.0), 2),
                   "dedupe_cpu_seconds": round(max(cpu - base_cpu, 0.0), 2),
                   "pipeline_seconds": round(wall, 2), "baseline_seconds": round(base_wall, 2),
                   "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), **counters}
            row["us_per_article"] = round(row["dedupe_seconds"] / len(articles) * 1e6)
            rows.append(row)
            print(f"{scale}x: {len(articles)} articles, dedupe {row['dedupe_seconds']:.1f}s wall "
                  f"({row['us_per_article']} us/article), {row['dedupe_cpu_seconds']:.1f}s CPU "
                  f"[pipeline {wall:.1f}s - read-only baseline {base_wall:.1f}s]; kept {counters['kept']}, "
                  f"exact {counters['exact_duplicates']}, near {counters['near_duplicates']}, "
                  f"candidate pairs {counters['candidate_pairs']}, verified {counters['verified_pairs']}, "
                  f"oversized buckets {counters['oversized_buckets']}; process peak RSS so far "
                  f"{row['peak_rss_mb']} MB", flush=True)
    base = rows[0]
    for row in rows[1:]:
        more = row["articles"] / base["articles"]
        for unit, key in (("wall", "dedupe_seconds"), ("CPU", "dedupe_cpu_seconds")):
            if not base[key]:
                continue
            ratio = row[key] / base[key]
            marginal = ((row[key] - base[key]) / (row["articles"] - base["articles"])) / (base[key] / base["articles"])
            row[f"{unit.lower()}_ratio"] = round(ratio, 2)
            row[f"{unit.lower()}_marginal_vs_average"] = round(marginal, 2)
            print(f"{row['scale']}x vs {base['scale']}x ({unit}): {more:.2f}x the articles, {ratio:.2f}x the time; "
                  f"cost per added article / average cost at {base['scale']}x = {marginal:.2f}")
    print(json.dumps({"workers": args.workers, "threshold": args.threshold, "boilerplate": args.boilerplate,
                      "scales": rows}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
