#!/usr/bin/env python
"""Fuzz the read -> clean -> language -> entities path with hostile inputs.

    scripts/fuzz.py [--cases 100000] [--seed 0] [--crashes DIR] [--max-bytes 1048576] [--report-every 5000]

Each case is one input file as hypothesis builds it from structured hostile
parts: nested JSON (a few levels to 100,000), JSON articles with odd field
types, numbers of any length, NaN/Infinity and lone surrogates written as
escapes; JSON arrays of them; JSON lines with every kind of line break; CSV
with hostile quoting, separators and line breaks; text files in UTF-8,
UTF-16, cp1252, Shift-JIS and mixtures of them; broken HTML (unclosed and
deeply nested tags, comments, CDATA, a DOCTYPE declaring entities, entity
tricks); control characters, bidi controls, stacked combining marks, very long
words and huge lines; and gzip, bzip2 or zstd of any of these, whole,
truncated, bit-flipped, concatenated or followed by garbage.

Every case goes through the stage pure cores exactly as the DoFns chain them:
``read.read_limited`` (gzip, bzip2, zstd; the exceptions ``ReadFileFn`` turns into
``unreadable``/``too_large`` count as rejections) -> ``read.parse_payload`` ->
``clean.clean_article`` -> ``language.detect_language`` ->
``entities.extract_batch`` with ``spacy.blank("en")`` and an ``entity_ruler``
(no trained model, so the run is quick and needs no model package).

The property: nothing raises, every record is an article or a rejected record
with a known stage and reason, every string a record carries can be written
as UTF-8 (the Avro writer needs that), every file gives at least one record,
and entity offsets point at the mention's text. A case that breaks it is a
crash: its bytes are saved under ``--crashes`` (with the traceback next to
them) and the run goes on. Printed at the end: cases, crashes, the slowest
case with its time and kind, and the wall time.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import logging
import sys
import time
import traceback
import zlib
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipelines.clean import clean_article  # noqa: E402
from pipelines.entities import extract_batch  # noqa: E402
from pipelines.language import UND, detect_language, normalise_code  # noqa: E402
from pipelines.read import TooLarge, format_of, parse_payload, read_limited  # noqa: E402

__all__ = ["Case", "cases", "make_nlp", "run_case", "check_case", "REASONS"]

# Every reason a stage of this path may give; anything else is a bug.
REASONS = {
    "read": {"empty", "binary", "no_text", "invalid_json", "invalid_csv", "too_deep", "too_large", "unreadable"},
    "clean": {"html_unparseable", "empty_after_clean", "too_short"},
}
ARTICLE_KEYS = {"id", "source", "title", "text", "author", "published", "url", "captions", "word_count",
                "content_hash", "language_hint", "crawled"}
DEFAULT_MAX_BYTES = 1 << 20

# ---------------------------------------------------------------------------
# Hostile pieces
# ---------------------------------------------------------------------------

WORDS = ("Vladimir Putin", "Kyiv", "the", "United Nations", "said", "on", "Monday", "Reuters", "news",
         "Emmanuel Macron", "Paris", "Le", "président", "a", "été", "Москва", "заявил", "北京", "新闻",
         "القاهرة", "قال", "ירושלים", "אמר", "नई दिल्ली", "कहा", "Kim Jong Un", "U.S.", "Corp.", "O'Brien's")
NASTY = (
    "\u202e", "\u202d", "\u2066", "\u2067", "\u2068", "\u2069", "\u200f", "\u200e", "\u061c",  # bidi
    "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u180e",  # invisible
    "\x00", "\x01", "\x07", "\x08", "\x0b", "\x0c", "\x1b[31m", "\x1c", "\x1d", "\x1e", "\x7f", "\x85",
    "\x9b", "\r", "\r\n", "\u2028", "\u2029", "\t",
    "\u0301\u0301\u0301\u0301\u0301\u0301", "Z\u0351\u0352\u0353\u0354\u0355\u0356\u0357\u0358",  # stacked marks
    "\U0001F468\u200d\U0001F469\u200d\U0001F467", "\ufffd", "\uffff", "\U0010ffff", "\ue000",
    "Ã©", "â€™", "â€œ", "Ã¤Ã¶Ã¼", "ï»¿",  # mojibake
    "\\u200b", "\\u0000", "\\x00", "\\U0010ffff", "\\U00110000", "\\ud800", "\\",  # literal escapes
    "&amp;", "&amp;amp;amp;", "&nbsp;", "&amp;nbsp;", "&#8203;", "&#x200B;", "&#0;", "&#x0;", "&#xD800;",
    "&#1114111;", "&#1114112;", "&#9999999;", "&#x110000;", "&notable", "&lt;script&gt;", "&#",
    "&" + "a" * 40 + ";", "&#" + "9" * 30 + ";",
    "<p>", "</p>", "<br>", "<div>", "<b><i>", "</i></b>", "<script>alert(1)</script>", "<!--", "-->",
    "<![CDATA[", "]]>", "<", ">", "<a href='", "<img src=x onerror=1>",
    "Photo: Getty Images", "By John Smith | Reporter", "Published: 3 March 2024 10:00", "- 20:19",
    "READ MORE: Putin", "Share this article", "Getty/" * 12 + "x", "(Reporting by ", "Sign up to our newsletter",
    "03/04/2024", "2024-13-45T99:99", "Tue, 32 Foo 2024", "1" * 40,
)


def _piece():
    return st.one_of(
        st.sampled_from(WORDS),
        st.sampled_from(NASTY),
        st.text(max_size=12),
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF).map(lambda c: f"\\u{ord(c):04x}"),
        st.builds(lambda ch, n: ch * n, st.sampled_from("aé字ب\u0301-.&<\\ "), st.integers(1, 3000)),
    )


@st.composite
def hostile_text(draw, max_pieces: int = 40) -> str:
    """Words, hostile characters and repeats glued by any separator."""
    pieces = draw(st.lists(_piece(), max_size=max_pieces))
    seps = st.sampled_from([" ", " ", " ", "\n", "\n\n", "", "\t", "\r\n", "\u2028", ". "])
    out = []
    for p in pieces:
        out.append(p)
        out.append(draw(seps))
    text = "".join(out)
    # Sometimes a huge line or a very long word: the cases regexes and
    # tokenisers go quadratic on.
    repeat = draw(st.sampled_from([1] * 40 + [50, 500, 5000]))
    return text * repeat if len(text) * repeat <= 400_000 else text


def _json_scalar():
    return st.one_of(
        hostile_text(12), st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
        st.integers(1, 20_000).map(lambda n: _Raw("9" * n)),  # beyond Python's int() digit limit
        st.sampled_from([_Raw("NaN"), _Raw("-Infinity"), _Raw("1e999999"), _Raw("-0"), _Raw("1E-999999")]),
    )


class _Raw(str):
    """JSON text inserted as is (numbers json.dumps cannot write)."""


def _dump(value) -> str:
    if isinstance(value, _Raw):
        return str(value)
    if isinstance(value, str):
        # Keep "\\udxxx" text as a JSON escape: json.loads then yields a lone surrogate.
        return json.dumps(value).replace("\\\\u", "\\u")
    if isinstance(value, list):
        return "[" + ",".join(_dump(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{_dump(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


FIELD_NAMES = ("text", "body", "content", "article", "articleBody", "title", "headline", "author", "authors",
               "byline", "published", "date", "datePublished", "url", "link", "language", "lang", "data",
               "item", "name", "value", "id", "")


def _json_value(depth: int = 2):
    if depth <= 0:
        return _json_scalar()
    inner = _json_value(depth - 1)
    return st.one_of(
        _json_scalar(),
        st.lists(inner, max_size=5),
        st.dictionaries(st.sampled_from(FIELD_NAMES), inner, max_size=5),
    )


@st.composite
def nested(draw) -> str:
    """JSON nesting from a few levels to far past the depth limit, possibly truncated."""
    depth = draw(st.one_of(st.integers(0, 80), st.sampled_from([63, 64, 65, 200, 600, 5000, 100_000])))
    kind = draw(st.sampled_from(["list", "dict", "mixed"]))
    opens = {"list": "[" * depth, "dict": '{"text":' * depth, "mixed": '[{"a":' * (depth // 2)}[kind]
    closes = {"list": "]" * depth, "dict": "}" * depth, "mixed": "}]" * (depth // 2)}[kind]
    body = opens + _dump(draw(hostile_text(8))) + closes
    if draw(st.booleans()):
        body = '{"title": "t", "text": ' + body + "}"
    if draw(st.integers(0, 4)) == 0:
        body = body[: draw(st.integers(0, len(body)))]
    return body


@st.composite
def json_article(draw) -> str:
    obj = draw(st.dictionaries(st.sampled_from(FIELD_NAMES), _json_value(2), max_size=8))
    if draw(st.booleans()):
        obj["text"] = draw(st.one_of(hostile_text(), st.lists(hostile_text(10), max_size=6)))
    if draw(st.integers(0, 5)) == 0:
        obj = {draw(st.sampled_from(["article", "data", "item"])): obj}
    text = _dump(obj)
    cut = draw(st.integers(0, 6))
    if cut == 0:
        text = text[: draw(st.integers(0, len(text)))]
    elif cut == 1:
        text = draw(st.sampled_from(["[", "", "\ufeff", "null", "1", '"s"', " "])) + text
    return text


@st.composite
def jsonl(draw) -> str:
    lines = draw(st.lists(st.one_of(json_article(), nested(), hostile_text(6), st.just("")), max_size=8))
    sep = st.sampled_from(["\n", "\r\n", "\r", "\u2028", "\x85", "\x1c", "\n\n", "\f"])
    return "".join(line + draw(sep) for line in lines)


@st.composite
def broken_html(draw) -> str:
    parts = []
    if draw(st.booleans()):
        parts.append(draw(st.sampled_from([
            "<!DOCTYPE html>", "<?xml version='1.0' encoding='utf-16'?>",
            '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
            '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>',
            '<!DOCTYPE x [<!ENTITY ext SYSTEM "file:///etc/passwd">]>',
            '<meta charset="shift_jis">', '<html lang="x-bogus-\u202e">', '<html lang="en">',
        ])))
    depth = draw(st.one_of(st.integers(0, 30), st.sampled_from([255, 256, 1000, 5000, 20_000])))
    tag = draw(st.sampled_from(["div", "p", "b", "span", "table", "li", "a", "article"]))
    parts.append(f"<{tag}>" * depth)
    for _ in range(draw(st.integers(0, 8))):
        parts.append(draw(st.one_of(
            hostile_text(10),
            st.sampled_from(["<p>", "</p>", "<div", "<title>", "</title>", "<script>", "</script>", "<style>",
                             "<!--", "<![CDATA[", "&lol3;", "&ext;", "<h1>", "<article>", "<body>", "</html>",
                             "<p class='a' " + "x=1 " * 500 + ">", "<" + "a" * 5000 + ">", "</" * 300]),
        )))
    if draw(st.booleans()):
        parts.append(f"</{tag}>" * draw(st.integers(0, depth)))
    return "".join(parts)


ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "cp1252", "latin-1", "shift_jis",
             "koi8-r", "gb18030", "utf-32")


@st.composite
def encoded(draw, text: str) -> bytes:
    """``text`` in some encoding, possibly mixed with another or with invalid bytes."""
    encoding = draw(st.sampled_from(ENCODINGS))
    data = text.encode(encoding, errors=draw(st.sampled_from(["replace", "ignore", "surrogatepass"]))
                       if encoding.startswith("utf") else "replace")
    mix = draw(st.integers(0, 5))
    if mix == 0:
        data += draw(hostile_text(6)).encode(draw(st.sampled_from(ENCODINGS)), errors="replace")
    elif mix == 1:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(max_size=16)) + data[at:]
    elif mix == 2:
        data = data[: draw(st.integers(0, len(data)))]  # cut mid-character
    return data


class Case:
    """One input file: its name decides the format (and gzip), as for ReadFileFn."""

    __slots__ = ("kind", "name", "data")

    def __init__(self, kind: str, name: str, data: bytes):
        self.kind, self.name, self.data = kind, name, data

    def __repr__(self) -> str:
        return f"Case({self.kind!r}, {self.name!r}, {len(self.data)} bytes)"


def _compress(data: bytes, codec: str, level: int = 1) -> bytes:
    if codec == "bz2":
        import bz2

        return bz2.compress(data, level)
    if codec == "zst":
        import zstandard

        return zstandard.ZstdCompressor(level=level).compress(data)
    return gzip.compress(data, compresslevel=level)


@st.composite
def _csv(draw) -> str:
    """CSV text with a header and hostile cells: quotes, separators and line breaks inside and out."""
    header = draw(st.lists(st.sampled_from(FIELD_NAMES), min_size=1, max_size=4))
    rows = [",".join(header)]
    for _ in range(draw(st.integers(0, 6))):
        cells = []
        for _ in range(draw(st.integers(0, 5))):
            cell = draw(hostile_text(4))
            if draw(st.booleans()):
                cell = '"' + cell.replace('"', draw(st.sampled_from(['""', '"', '\\"']))) + '"'
            cells.append(cell)
        rows.append(draw(st.sampled_from([",", "\t", ";"])).join(cells))
    return draw(st.sampled_from(["\n", "\r\n", "\r"])).join(rows)


@st.composite
def _gzipped(draw, data: bytes, codec: str = "gz") -> bytes:
    packed = _compress(data, codec)
    damage = draw(st.integers(0, 7))
    if damage == 0:
        packed = packed[: draw(st.integers(0, len(packed)))]  # truncated
    elif damage == 1 and packed:
        at = draw(st.integers(0, len(packed) - 1))
        packed = packed[:at] + bytes([packed[at] ^ draw(st.integers(1, 255))]) + packed[at + 1:]
    elif damage == 2:
        packed += packed  # concatenated members
    elif damage == 3:
        packed += draw(st.binary(min_size=1, max_size=32))  # trailing garbage
    elif damage == 4:
        packed = _compress(b"\0" * draw(st.integers(1, 4)) * 1_000_000, codec, 9)  # small bomb
    return packed


@st.composite
def cases(draw) -> Case:
    kind = draw(st.sampled_from(["json", "nested", "jsonl", "text", "html", "bytes", "array", "csv"]))
    if kind == "bytes":
        data, fmt = draw(st.binary(max_size=2048)), draw(st.sampled_from(["json", "jsonl", "text", "html", "csv"]))
    elif kind == "array":  # a JSON array of articles and hostile values
        items = draw(st.lists(st.one_of(json_article(), nested(), _json_value(2).map(_dump)), max_size=5))
        data = draw(encoded("[" + draw(st.sampled_from([",", ", ", ",\n", " , "])).join(items) + "]"))
        fmt = "json"
    else:
        text = {"json": json_article, "nested": nested, "jsonl": jsonl, "text": hostile_text,
                "html": broken_html, "csv": _csv}[kind]()
        data = draw(encoded(draw(text)))
        fmt = {"nested": "json"}.get(kind, kind)
    suffix = {"json": ".json", "jsonl": ".jsonl", "text": ".txt", "html": ".html", "csv": ".csv"}[fmt]
    if draw(st.integers(0, 4)) == 0:
        codec = draw(st.sampled_from(["gz", "gz", "bz2", "zst"]))
        return Case(f"{kind}+{codec}", f"case{suffix}.{codec}", draw(_gzipped(data, codec)))
    return Case(kind, f"case{suffix}", data)


# ---------------------------------------------------------------------------
# Running one case through the path
# ---------------------------------------------------------------------------

def make_nlp():
    """A blank English pipeline with an entity ruler: spaCy's tokenizer and
    span machinery on hostile text, without a trained model."""
    import spacy

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([
        {"label": "PERSON", "pattern": "Vladimir Putin"},
        {"label": "PERSON", "pattern": [{"IS_TITLE": True}, {"IS_TITLE": True}]},
        {"label": "GPE", "pattern": [{"LOWER": {"IN": ["kyiv", "paris", "москва", "北京"]}}]},
        {"label": "ORG", "pattern": [{"IS_UPPER": True, "LENGTH": {">=": 2}}]},
        {"label": "PRODUCT", "pattern": [{"TEXT": {"REGEX": r"^\W+$"}}]},
    ])
    return nlp


class Broken(AssertionError):
    """The property does not hold for a case."""


def _utf8(value, where: str) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise Broken(f"{where} cannot be written as UTF-8: {e}") from None
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _utf8(v, f"{where}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            _utf8(v, f"{where}.{k}")


def _check_rejected(record: dict, stage: str) -> None:
    if record.get("stage") != stage or record.get("reason") not in REASONS[stage]:
        raise Broken(f"unexpected rejection {record.get('stage')}/{record.get('reason')}")
    if not isinstance(record.get("detail"), str) or not record["detail"]:
        raise Broken("rejected record without a detail")
    _utf8(record, "rejected")


def run_case(case: Case, nlp, max_bytes: int = DEFAULT_MAX_BYTES, min_words: int = 1) -> list[dict]:
    """The records one input file becomes (articles with language and entities,
    and rejected records), as the read, clean, language and entities stages
    chain them. Raises ``Broken`` (or whatever a stage raised) when the
    property does not hold."""
    fmt, gzipped = format_of(case.name)
    try:
        data = read_limited(io.BytesIO(case.data), max_bytes, gzipped)
    except TooLarge as e:  # what ReadFileFn makes of these
        return [{"stage": "read", "reason": "too_large", "detail": str(e)}]
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        return [{"stage": "read", "reason": "unreadable", "detail": f"cannot read: {e}"}]
    out = []
    for raw in parse_payload(data, case.name, case.name, fmt):
        if "reason" in raw:
            _check_rejected(raw, "read")
            out.append(raw)
            continue
        if not isinstance(raw.get("text"), str):
            raise Broken("raw article without a text string")
        article = clean_article(raw, min_words=min_words)
        if "reason" in article:
            _check_rejected(article, "clean")
            out.append(article)
            continue
        if set(article) - ARTICLE_KEYS:
            raise Broken(f"unexpected article fields {sorted(set(article) - ARTICLE_KEYS)}")
        text = "\n".join(filter(None, [article.get("title"), article["text"]]))
        found = detect_language(text, hint=normalise_code(article.get("language_hint")))
        if not (found.language == UND or normalise_code(found.language) == found.language):
            raise Broken(f"language {found.language!r} is not a code")
        article = {**article, "language": found.language, "language_probability": found.probability,
                   "language_hint": normalise_code(article.get("language_hint"))}
        [mentions] = extract_batch(nlp, [article])
        for m in mentions:
            if article[m["field"]][m["start"]:m["end"]] != m["text"] or not m["entity"]:
                raise Broken(f"mention offsets do not name the mention: {m}")
        article["entities"] = mentions
        _utf8(article, "article")
        out.append(article)
    if not out:
        raise Broken("the file gave no record at all (neither an article nor a rejection)")
    return out


def check_case(case: Case, nlp, max_bytes: int = DEFAULT_MAX_BYTES) -> float:
    """Run one case; its seconds. Raises when the property does not hold."""
    start = time.perf_counter()
    run_case(case, nlp, max_bytes)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------
# Long mode
# ---------------------------------------------------------------------------

WARM_UP = (
    Case("warm-up", "w.json", json.dumps({"title": "Putin in Kyiv", "published": "3 mars 2024 10h00",
                                          "text": "Vladimir Putin said on Monday that Kyiv \u00e9t\u00e9"}).encode()),
    Case("warm-up", "w.html", b"<html><body><article><h1>T</h1><p>Vladimir Putin said on Monday in Kyiv that "
                              b"the talks went on.</p></article></body></html>"),
)


def _save(case: Case, error: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(case.data).hexdigest()[:16]
    path = folder / f"{digest}-{case.name}"
    path.write_bytes(case.data)
    path.with_name(path.name + ".error.txt").write_text(f"{case!r}\n{error}", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crashes", type=Path, default=Path("fuzz-crashes"))
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    parser.add_argument("--report-every", type=int, default=5000)
    args = parser.parse_args(argv)

    # trafilatura logs every page it cannot parse; a fuzz run is all such pages.
    logging.disable(logging.CRITICAL)
    nlp = make_nlp()
    # Imports and model loads (ftfy, dateparser, trafilatura, the detectors)
    # happen once per worker, not per input: pay them before timing.
    for warm in WARM_UP:
        run_case(warm, nlp, args.max_bytes)
    stats = {"cases": 0, "crashes": 0, "slowest": (0.0, None, None), "kinds": {}}
    crash_kinds: dict[str, int] = {}
    started = time.perf_counter()

    @settings(max_examples=args.cases, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=False)
    @given(cases())
    def one(case: Case):
        stats["cases"] += 1
        stats["kinds"][case.kind] = stats["kinds"].get(case.kind, 0) + 1
        start = time.perf_counter()
        try:
            run_case(case, nlp, args.max_bytes)
        except Exception as e:
            stats["crashes"] += 1
            key = f"{type(e).__name__}: {str(e)[:80]}"
            crash_kinds[key] = crash_kinds.get(key, 0) + 1
            if crash_kinds[key] <= 3:  # a few examples of each failure are enough
                path = _save(case, traceback.format_exc(), args.crashes)
                print(f"crash: {key} ({case!r}) saved to {path}", flush=True)
        seconds = time.perf_counter() - start
        if seconds > stats["slowest"][0]:
            stats["slowest"] = (seconds, case.kind, case)
            _save(case, f"slowest so far: {seconds:.3f} s", args.crashes / "slowest")
        if stats["cases"] % args.report_every == 0:
            print(f"{stats['cases']} cases, {stats['crashes']} crashes, slowest {stats['slowest'][0]:.3f} s "
                  f"({stats['slowest'][2]!r}), {time.perf_counter() - started:.0f} s", flush=True)

    try:
        seed(args.seed)(one)()
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    wall = time.perf_counter() - started
    seconds, kind, case = stats["slowest"]
    print(f"cases: {stats['cases']}")
    print(f"by kind: {json.dumps(dict(sorted(stats['kinds'].items())))}")
    print(f"crashes: {stats['crashes']}")
    for key, n in sorted(crash_kinds.items(), key=lambda kv: -kv[1]):
        print(f"  {n} x {key}")
    print(f"slowest case: {seconds:.3f} s ({case!r}; saved under {args.crashes / 'slowest'})")
    print(f"wall time: {wall:.0f} s ({stats['cases'] / wall:.1f} cases/s)")
    return 1 if stats["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
