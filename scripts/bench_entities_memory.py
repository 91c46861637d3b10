#!/usr/bin/env python
"""Memory of the extract-entities stage over a long run: RSS after each pass over the BBC articles.

Runs ``pipelines.entities.extract_batch`` (the code the pipeline's DoFn runs)
on every article of ``--data`` ``--repeat`` times in one process and prints,
after each pass, the current and peak resident memory and the size of the
model's string store. Repeating the same articles adds no new strings after
the first pass; ``--novel-strings`` gives every pass its own spelling of each
capitalised word (Putin -> Putinqb), which is how a long stream of new names,
places and numbers makes spaCy's vocabulary grow. ``--no-memory-zone`` turns
off ``nlp.memory_zone()`` to show what it saves.

    .venv/bin/python scripts/bench_entities_memory.py --repeat 10 [--novel-strings] [--no-memory-zone]
"""

from __future__ import annotations

import argparse
import re
import resource
import sys
import time
from pathlib import Path

import psutil

from pipelines.options import DEFAULT_SPACY_MODELS, parse_model_map

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "bbc-news" / "articles"
_CAPITALISED = re.compile(r"\b([A-Z][a-z]+)\b")


def read_articles(folder: Path) -> list[dict]:
    """BBC files: first line the title, the rest the body."""
    articles = []
    for path in sorted(folder.rglob("*.txt")):
        title, _, body = path.read_text(encoding="utf-8").partition("\n")
        articles.append({"title": title.strip(), "text": body.strip()})
    return articles


def respell(text: str, n: int) -> str:
    """Every capitalised word with a suffix unique to pass ``n``."""
    suffix = ""
    while True:
        n, r = divmod(n, 26)
        suffix += chr(ord("a") + r)
        if not n:
            break
    return _CAPITALISED.sub(lambda m: m.group(1) + "q" + suffix, text)


def mib(n_bytes: float) -> float:
    return n_bytes / (1024 * 1024)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder of BBC article .txt files")
    parser.add_argument("--model", default=parse_model_map(DEFAULT_SPACY_MODELS)["en"],
                        help="model spec as in --spacy-model (default: the pipeline's English model)")
    parser.add_argument("--repeat", type=int, default=10, help="passes over the articles (default: 10)")
    parser.add_argument("--batch-size", type=int, default=64, help="articles per extract_batch call (default: 64)")
    parser.add_argument("--pipe-batch-size", type=int, default=None,
                        help="Docs per nlp.pipe minibatch (default: the stage's PIPE_BATCH_SIZE)")
    parser.add_argument("--novel-strings", action="store_true", help="new spellings of capitalised words each pass")
    parser.add_argument("--no-memory-zone", action="store_true", help="do not release strings after each batch")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from pipelines.entities import PIPE_BATCH_SIZE, extract_batch, load_model, mention_extractor

    articles = read_articles(Path(args.data))
    if not articles:
        parser.error(f"no .txt articles under {args.data}")
    words = sum(len(a["title"].split()) + len(a["text"].split()) for a in articles)
    process = psutil.Process()
    nlp = load_model(args.model)
    mention_extractor(nlp)  # loads the place gazetteer, as the DoFn's setup() does
    zone = "off" if args.no_memory_zone else "on"
    novel = "on" if args.novel_strings else "off"
    print(f"{len(articles)} articles, {words} words per pass; model {args.model} ({', '.join(nlp.pipe_names)}); "
          f"memory zone {zone}; novel strings {novel}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"after setup: rss {mib(process.memory_info().rss):.1f} MiB, peak {peak:.1f} MiB, "
          f"strings {len(nlp.vocab.strings)}")
    pipe_batch = args.pipe_batch_size or PIPE_BATCH_SIZE
    print(f"{'pass':>4} {'rss MiB':>8} {'peak MiB':>9} {'strings':>9} {'mentions':>9} {'words/s':>8} "
          f"{'words/CPU s':>11}")
    results = []
    for n in range(1, args.repeat + 1):
        batch_articles = articles
        if args.novel_strings:
            batch_articles = [{"title": respell(a["title"], n), "text": respell(a["text"], n)} for a in articles]
        started, cpu_started = time.perf_counter(), time.process_time()
        mentions = 0
        for i in range(0, len(batch_articles), args.batch_size):
            batch = batch_articles[i:i + args.batch_size]
            for found in extract_batch(nlp, batch, pipe_batch, release_strings=not args.no_memory_zone):
                mentions += len(found)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        rss = mib(process.memory_info().rss)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        results.append((n, rss, peak))
        print(f"{n:>4} {rss:>8.1f} {peak:>9.1f} {len(nlp.vocab.strings):>9} {mentions:>9} {words / seconds:>8.0f} "
              f"{words / cpu_seconds:>11.0f}", flush=True)
    first, last = results[0], results[-1]
    print(f"peak RSS after 1x: {first[2]:.1f} MiB; after {last[0]}x: {last[2]:.1f} MiB "
          f"(growth {last[2] - first[2]:+.1f} MiB); throughput is noisy on a shared machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
