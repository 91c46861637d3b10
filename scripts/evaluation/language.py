"""Detect-language stage on lingua-langid: accuracy, honesty on unsupported languages, determinism, speed.

Runs ``pipelines.language.detect_language`` — the function the pipeline's
DoFn calls — on a folder laid out like ``../shared/data/lingua-langid``
(``sentences/<iso639-1>.txt``, one sentence a line):

* languages langdetect has a profile for: accuracy on single sentences and on
  paragraphs of 5 consecutive sentences, per language and macro-averaged, with
  raw seeded langdetect (top answer, no threshold, no cross-check) beside it;
* languages it lacks: ``unsupported_safe_rate``, the share labelled ``und`` or
  correctly (the headline figure is on paragraphs; sentences shown too);
* determinism: a share of the items again, shuffled, in a fresh process,
  compared exactly (language, probability, decision);
* speed: articles/s for the stage on ``--articles`` (bbc-news layout), as the
  bare function and as the Beam transform on the FnApiRunner.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import multiprocessing
import random
import resource
import statistics
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "lingua-langid"
DEFAULT_ARTICLES = REPO.parent / "shared" / "data" / "bbc-news" / "articles"
PARAGRAPH_SENTENCES = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipelines.language import CROSSCHECK_MARGIN, DEFAULT_MIN_PROBABILITY, SAMPLE_CHARS

    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder with sentences/<code>.txt (default: ../shared/data/lingua-langid)")
    parser.add_argument("--sentences", type=int, default=100,
                        help="single sentences per language, spread evenly over the file; 0 = all "
                             "(default: 100; paragraphs always use every sentence)")
    parser.add_argument("--min-probability", type=float, default=DEFAULT_MIN_PROBABILITY,
                        help="langdetect probability below which the stage says und "
                             f"(default: {DEFAULT_MIN_PROBABILITY})")
    parser.add_argument("--sample-chars", type=int, default=SAMPLE_CHARS,
                        help=f"characters of text the detectors see (default: {SAMPLE_CHARS})")
    parser.add_argument("--margin", type=float, default=CROSSCHECK_MARGIN,
                        help="py3langid cross-check veto margin; above 1 disables the veto "
                             f"(default: {CROSSCHECK_MARGIN})")
    parser.add_argument("--determinism-share", type=float, default=0.1,
                        help="share of the items run a second time, shuffled, in a fresh process (default: 0.1)")
    parser.add_argument("--articles", default=str(DEFAULT_ARTICLES),
                        help="bbc-news style folder (<category>/<n>.txt: title line, blank line, body) for the "
                             "throughput figures; '' skips them (default: ../shared/data/bbc-news/articles)")
    parser.add_argument("--throughput-caps", type=lambda v: [int(c) for c in v.split(",") if c.strip()], default=[],
                        help="more --sample-chars values to time on --articles, e.g. 200,800,100000 (default: none)")


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _spread(items: list, n: int) -> list:
    if n <= 0 or n >= len(items):
        return items
    return [items[i * len(items) // n] for i in range(n)]


def load_items(data: Path, sentences_per_language: int) -> list[tuple[str, str, str]]:
    """(language, kind, text) for every selected sentence ('s') and paragraph ('p')."""
    files = sorted((data / "sentences").glob("*.txt"))
    if not files:
        raise SystemExit(f"no sentences/*.txt under {data}")
    items = []
    for path in files:
        lines = _lines(path)
        items += [(path.stem, "s", s) for s in _spread(lines, sentences_per_language)]
        items += [(path.stem, "p", " ".join(lines[i:i + PARAGRAPH_SENTENCES]))
                  for i in range(0, len(lines) - PARAGRAPH_SENTENCES + 1, PARAGRAPH_SENTENCES)]
    return items


def _share(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def _macro(per_language: dict[str, float]) -> float:
    return statistics.fmean(per_language.values()) if per_language else float("nan")


def _raw_langdetect(text: str, found, sample_chars: int) -> str | None:
    """Seeded langdetect's top answer on the whole text, no threshold, no cross-check:
    what the stage saw already when the text fit in its sample, else asked again."""
    from pipelines.language import _langdetect, load_detectors, sample_text

    if found.detected is not None and sample_text(text, sample_chars) == text:
        return found.detected
    ranked = _langdetect(load_detectors(), text)
    return ranked[0][0] if ranked else None


def _quality(items, results, supported: frozenset, sample_chars: int) -> dict:
    from pipelines.language import UND

    by = {}
    for (lang, kind, text), found in zip(items, results):
        by.setdefault((lang, kind), []).append((text, found))
    languages = sorted({lang for lang, _, _ in items})
    acc = {"s": {}, "p": {}}
    raw_acc = {}
    safe = {"s": {}, "p": {}}
    print(f"{'lang':5} {'n_sent':>6} {'sent':>6} {'raw':>6} {'n_para':>6} {'para':>6}   "
          "most frequent labels (paragraphs)")
    for lang in languages:
        sents, paras = by.get((lang, "s"), []), by.get((lang, "p"), [])
        labels = Counter(f.language for _, f in paras).most_common(3)
        top = " ".join(f"{code}:{n}" for code, n in labels)
        if lang in supported:
            acc["s"][lang] = _share(f.language == lang for _, f in sents)
            raw_acc[lang] = _share(_raw_langdetect(t, f, sample_chars) == lang for t, f in sents)
            acc["p"][lang] = _share(f.language == lang for _, f in paras)
            print(f"{lang:5} {len(sents):6} {acc['s'][lang]:6.3f} {raw_acc[lang]:6.3f} {len(paras):6} "
                  f"{acc['p'][lang]:6.3f}   {top}")
        else:
            safe["s"][lang] = _share(f.language in (UND, lang) for _, f in sents)
            safe["p"][lang] = _share(f.language in (UND, lang) for _, f in paras)
            print(f"{lang:5} {len(sents):6} {safe['s'][lang]:6.3f} {'safe':>6} {len(paras):6} "
                  f"{safe['p'][lang]:6.3f}   {top}   (not in langdetect: und or correct)")
    decisions = Counter(f.decision for f in results)
    print(f"\nsupported languages: {len(acc['p'])}; unsupported: {len(safe['p'])}")
    print(f"sentence accuracy (macro):   stage {_macro(acc['s']):.4f}   raw seeded langdetect {_macro(raw_acc):.4f}")
    print(f"paragraph accuracy (macro):  stage {_macro(acc['p']):.4f}")
    print(f"unsupported_safe_rate (macro): paragraphs {_macro(safe['p']):.4f}   sentences {_macro(safe['s']):.4f}")
    print("decisions: " + ", ".join(f"{k} {v}" for k, v in sorted(decisions.items())))
    return {
        "sentence_accuracy": round(_macro(acc["s"]), 4),
        "sentence_accuracy_raw_langdetect": round(_macro(raw_acc), 4),
        "paragraph_accuracy": round(_macro(acc["p"]), 4),
        "unsupported_safe_rate": round(_macro(safe["p"]), 4),
        "unsupported_safe_rate_sentences": round(_macro(safe["s"]), 4),
        "supported_languages": len(acc["p"]),
        "unsupported_languages": len(safe["p"]),
    }


def _determinism(texts: list[str], results: list, share: float, detect) -> bool:
    """Re-run a share of the texts, shuffled, in a fresh process: a worker that has
    seen nothing else, in another order, must give identical answers."""
    rng = random.Random(20240816)
    picked = sorted(rng.sample(range(len(texts)), max(1, int(len(texts) * share))))
    rng.shuffle(picked)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        again = list(pool.map(detect, [texts[i] for i in picked], chunksize=64))
    differ = [i for i, found in zip(picked, again) if tuple(found) != tuple(results[i])]
    print(f"determinism: {len(picked)} items re-run shuffled in a fresh process, {len(differ)} differ")
    return not differ


def _bbc_articles(folder: Path) -> list[dict]:
    articles = []
    for path in sorted(folder.glob("*/*.txt")):
        title, _, body = path.read_text(encoding="utf-8").partition("\n")
        articles.append({"id": path.stem, "source": str(path), "title": title.strip(), "text": body.strip(),
                         "language_hint": None})
    return articles


def _throughput(folder: Path, detect, caps: list[int]) -> dict:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.language import DetectLanguage

    articles = _bbc_articles(folder)
    if not articles:
        print(f"no articles under {folder}; throughput skipped")
        return {}
    texts = ["\n".join(filter(None, [a["title"], a["text"]])) for a in articles]
    print(f"\nthroughput of detect_language on {len(texts)} articles (mean {statistics.fmean(map(len, texts)):.0f} "
          "chars); CPU seconds are steadier than wall clock on a shared machine")
    print(f"{'sample_chars':>12} {'articles/s':>10} {'per CPU s':>10}   labels")
    rates, shares = {}, {}
    for cap in caps:
        start, cpu_start = time.perf_counter(), time.process_time()
        found = [detect(text, sample_chars=cap) for text in texts]
        rates[cap] = (len(texts) / (time.perf_counter() - start), len(texts) / (time.process_time() - cpu_start))
        labels = Counter(f.language for f in found)
        shares[cap] = labels.get("en", 0) / len(texts)
        print(f"{cap:12} {rates[cap][0]:10.1f} {rates[cap][1]:10.1f}   {dict(labels.most_common(4))}")
    start = time.perf_counter()
    with beam.Pipeline(options=PipelineOptions([], runner="FnApiRunner")) as p:
        _ = (p | beam.Create(articles, reshuffle=False) | DetectLanguage()
             ).get("articles") | beam.combiners.Count.Globally()
    beam_rate = len(articles) / (time.perf_counter() - start)
    print(f"DetectLanguage transform alone (module defaults) on the FnApiRunner, one process, startup included: "
          f"{beam_rate:.1f} articles/s")
    wall, cpu = rates[caps[0]]
    return {"articles_per_second": round(wall, 1), "articles_per_cpu_second": round(cpu, 1),
            "articles_per_second_beam": round(beam_rate, 1),
            "bbc_share_en": round(shares[caps[0]], 4)}


def run(args) -> dict:
    from pipelines.language import detect_language, load_detectors

    detect = functools.partial(detect_language, min_probability=args.min_probability,
                               sample_chars=args.sample_chars, margin=args.margin)
    start = time.perf_counter()
    supported = load_detectors().langdetect_codes
    load_seconds = time.perf_counter() - start
    items = load_items(args.data, args.sentences)
    texts = [text for _, _, text in items]
    print(f"settings: min_probability={args.min_probability} sample_chars={args.sample_chars} "
          f"margin={args.margin}; {len(items)} items from {args.data}")
    start = time.perf_counter()
    results = [detect(text) for text in texts]
    seconds = time.perf_counter() - start
    print(f"detected {len(items)} items in {seconds:.1f} s ({len(items) / seconds:.0f}/s); "
          f"detectors loaded in {load_seconds:.1f} s\n")
    summary = _quality(items, results, supported, args.sample_chars)
    summary["deterministic"] = _determinism(texts, results, args.determinism_share, detect)
    if args.articles:
        caps = [args.sample_chars] + [c for c in args.throughput_caps if c != args.sample_chars]
        summary.update(_throughput(Path(args.articles), detect, caps))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak_mb:.0f} MB")
    summary.update({"min_probability": args.min_probability, "sample_chars": args.sample_chars,
                    "margin": args.margin, "peak_rss_mb": round(peak_mb)})
    return summary
