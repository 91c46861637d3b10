"""Clean stage: token precision/recall/F1 on HTML pages with gold text (vs plain trafilatura), and throughput.

Runs the stage's own function (``pipelines.clean.clean_article`` on the raw
record the read stage makes of each page) over a folder laid out like the
article-extraction benchmark (``html/<id>.html.gz`` + ``ground-truth.json``
mapping ``<id>`` to ``{"articleBody": ...}``) and scores the article text
against ``articleBody``: bag of lowercased word tokens, precision, recall and
F1 per page, macro-averaged over pages. ``trafilatura.extract`` with its
default settings on the same pages is the baseline.

Throughput: articles per second of ``clean_article`` alone (one process, no
Beam) over the ``.txt`` articles under ``--throughput-data`` (default: the
bbc-news folder next to ``--data``), files read and parsed before the clock
starts.
"""

from __future__ import annotations

import gzip
import json
import re
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "article-extraction-benchmark"
_WORD = re.compile(r"\w+")


def add_arguments(parser) -> None:
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="folder with html/*.html.gz and ground-truth.json (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=0, help="score only the first N pages (sorted by id)")
    parser.add_argument("--show", type=int, default=5,
                        help="print the N pages where the stage and the baseline differ most (default: 5)")
    parser.add_argument("--throughput-data", default=None,
                        help="folder of .txt articles (searched recursively) to time the stage on; empty to skip "
                             "(default: bbc-news/articles next to --data)")


def tokens(text: str | None) -> Counter:
    return Counter(_WORD.findall((text or "").lower()))


def score(predicted: str | None, gold: str) -> tuple[float, float, float]:
    """Token precision, recall, F1 of one page (0 for an empty prediction)."""
    pred, ref = tokens(predicted), tokens(gold)
    overlap = sum((pred & ref).values())
    precision = overlap / sum(pred.values()) if pred else 0.0
    recall = overlap / sum(ref.values()) if ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def throughput(folder: Path) -> dict:
    """Articles per second of clean_article over the .txt files under ``folder``."""
    from pipelines.clean import clean_article
    from pipelines.read import parse_payload

    raws = []
    for path in sorted(folder.rglob("*.txt")):
        raws.extend(r for r in parse_payload(path.read_bytes(), str(path), path.name, "text") if "reason" not in r)
    if not raws:
        raise SystemExit(f"no .txt articles under {folder}")
    clean_article(raws[0])  # first call imports ftfy and compiles nothing else: keep it off the clock
    kept = 0
    start = time.perf_counter()
    for raw in raws:
        kept += "reason" not in clean_article(raw)
    seconds = time.perf_counter() - start
    chars = sum(len(r["text"]) for r in raws)
    print(f"throughput: {len(raws)} articles ({chars / 1e6:.2f} M characters) from {folder} cleaned in "
          f"{seconds:.2f} s: {len(raws) / seconds:.0f} articles/s, {1000 * seconds / len(raws):.2f} ms/article "
          f"(one process; {kept} kept)")
    return {"throughput_articles": len(raws), "articles_per_second": round(len(raws) / seconds, 1),
            "ms_per_article": round(1000 * seconds / len(raws), 3)}


def run(args) -> dict:
    import trafilatura

    from pipelines.clean import clean_article
    from pipelines.read import decode_bytes, parse_payload

    data = Path(args.data)
    truth = json.loads((data / "ground-truth.json").read_text(encoding="utf-8"))
    ids = sorted(i for i in truth if (data / "html" / f"{i}.html.gz").exists())
    if args.limit:
        ids = ids[:args.limit]
    if not ids:
        raise SystemExit(f"no scored pages under {data}")

    ours, base = {}, {}
    too_short = 0
    ours_seconds = base_seconds = 0.0
    for page_id in ids:
        payload = gzip.decompress((data / "html" / f"{page_id}.html.gz").read_bytes())
        gold = truth[page_id]["articleBody"]
        [raw] = list(parse_payload(payload, f"{page_id}.html", f"{page_id}.html", "html"))
        start = time.perf_counter()
        article = clean_article(raw, min_words=0)
        ours_seconds += time.perf_counter() - start
        text = article.get("text") if "reason" not in article else None
        if text is not None and len(text.split()) < 20:
            too_short += 1
        ours[page_id] = score(text, gold)
        page = decode_bytes(payload)[0]
        start = time.perf_counter()
        baseline = trafilatura.extract(page)
        base_seconds += time.perf_counter() - start
        base[page_id] = score(baseline, gold)

    n = len(ids)
    result = {
        "pages": n,
        "precision": round(_mean(p for p, _, _ in ours.values()), 4),
        "recall": round(_mean(r for _, r, _ in ours.values()), 4),
        "f1": round(_mean(f for _, _, f in ours.values()), 4),
        "baseline_precision": round(_mean(p for p, _, _ in base.values()), 4),
        "baseline_recall": round(_mean(r for _, r, _ in base.values()), 4),
        "baseline_f1": round(_mean(f for _, _, f in base.values()), 4),
        "pages_better": sum(ours[i][2] > base[i][2] + 1e-9 for i in ids),
        "pages_worse": sum(ours[i][2] < base[i][2] - 1e-9 for i in ids),
        "pages_under_20_words": too_short,
        "stage_pages_per_second": round(n / ours_seconds, 1) if ours_seconds else None,
        "baseline_pages_per_second": round(n / base_seconds, 1) if base_seconds else None,
    }
    print(f"{n} pages from {data}")
    print(f"{'':>22} {'precision':>9} {'recall':>9} {'F1':>9} {'pages/s':>9}")
    print(f"{'clean stage':>22} {result['precision']:9.4f} {result['recall']:9.4f} {result['f1']:9.4f} "
          f"{result['stage_pages_per_second'] or 0:9.1f}")
    print(f"{'trafilatura.extract':>22} {result['baseline_precision']:9.4f} {result['baseline_recall']:9.4f} "
          f"{result['baseline_f1']:9.4f} {result['baseline_pages_per_second'] or 0:9.1f}")
    print(f"F1 better on {result['pages_better']} pages, worse on {result['pages_worse']}; "
          f"{too_short} pages keep fewer than 20 words (rejected as too_short at the default --min-words)")
    if args.show:
        print(f"largest F1 differences (stage - baseline), {args.show} each way:")
        by_delta = sorted(ids, key=lambda i: ours[i][2] - base[i][2])
        shown = by_delta[:args.show] + [i for i in by_delta[-args.show:] if i not in by_delta[:args.show]]
        for i in shown:
            (p, r, f), (bp, br, bf) = ours[i], base[i]
            print(f"  {i[:12]}  stage P={p:.3f} R={r:.3f} F1={f:.3f}  baseline P={bp:.3f} R={br:.3f} F1={bf:.3f}  "
                  f"{truth[i].get('url', '')[:70]}")
    if args.throughput_data is None:
        args.throughput_data = str(data.parent / "bbc-news" / "articles")
    if args.throughput_data:
        folder = Path(args.throughput_data)
        if folder.is_dir():
            result.update(throughput(folder))
        else:
            print(f"throughput: skipped, {folder} not found")
    return result
