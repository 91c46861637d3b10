"""Read stage: input files -> raw article records (or rejected records).

The pure core (``decode_bytes``, ``parse_payload``) turns the bytes of one file
into records; the Beam part only opens files through ``FileSystems`` so the same
code reads local paths, ``gs://``, ``s3://`` and ``hdfs://``.

A raw article is a dict with ``id``, ``source``, ``format`` ('text', 'json' or
'html'), ``title``, ``text`` (the body, or the whole page for HTML), ``author``,
``published`` (as written in the source), ``url`` and ``language_hint``.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines.records import rejected, sha256_hex, tag_rejected

__all__ = [
    "InputFile",
    "PlannedInputs",
    "ReadArticles",
    "read_plan",
    "write_plan",
    "decode_bytes",
    "article_id",
    "format_of",
    "parse_payload",
    "read_limited",
    "parse_json",
    "json_depth",
]

STAGE = "read"
REJECTED_TAG = "rejected"

TEXT_SUFFIXES = (".txt", ".md")
JSON_SUFFIXES = (".json",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
HTML_SUFFIXES = (".html", ".htm")

TITLE_FIELDS = ("title", "headline")
TEXT_FIELDS = ("text", "body", "content", "article", "articleBody")
AUTHOR_FIELDS = ("author", "authors", "byline")
PUBLISHED_FIELDS = ("published", "date", "published_at", "datePublished", "pubdate")
URL_FIELDS = ("url", "link")
LANGUAGE_FIELDS = ("language", "lang")
# Export formats that wrap the article one level down.
WRAPPER_FIELDS = ("article", "data", "item")
# Deeper JSON than this is no article; it is also what keeps later recursion
# (field flattening, Beam's coders) within Python's stack.
MAX_JSON_DEPTH = 64
# How much of a pathological record is kept as the rejected record's raw text.
RAW_LIMIT = 64 * 1024

# Bytes sniffed for NUL characters: binary formats (images, PDFs, archives)
# show one almost at once, text in UTF-8 or a legacy 8-bit code page never.
BINARY_SNIFF_BYTES = 8192


@dataclass(frozen=True)
class InputFile:
    """One matched input file, as planned by the launcher."""

    path: str  # what FileSystems opens
    source: str  # the path as the user gave it (reported in every record)
    key: str  # path relative to the input root: the machine-independent part of ids
    size: int = -1
    mtime: float = -1.0  # last modification time (seconds) when planned: incremental runs compare it


def format_of(path: str) -> tuple[str | None, bool]:
    """('text'|'json'|'jsonl'|'html'|None, gzipped) from a file name."""
    name = path.lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    for suffixes, fmt in (
        (TEXT_SUFFIXES, "text"),
        (JSON_SUFFIXES, "json"),
        (JSONL_SUFFIXES, "jsonl"),
        (HTML_SUFFIXES, "html"),
    ):
        if name.endswith(suffixes):
            return fmt, gz
    return None, gz


def article_id(key: str, record_no: int, payload: bytes | str) -> str:
    """Stable id from where the record sits under the input root and what it holds.

    The content hash is part of it so that a file edited between two runs is a
    new article (which dedupe can then fold into the old one) rather than the
    old id with different text.
    """
    return sha256_hex(f"{key}\x00{record_no}\x00{sha256_hex(payload)}")[:20]


class TooLarge(Exception):
    pass


def read_limited(stream, max_bytes: int, gzipped: bool) -> bytes:
    """Read at most ``max_bytes`` (after decompression), raising TooLarge past it.

    Decompressing in bounded chunks is what keeps a gzip bomb from allocating
    its full expanded size.
    """
    if not gzipped:
        data = stream.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise TooLarge(f"larger than --max-bytes={max_bytes}")
        return data
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = io.BytesIO()
    member_open = False  # a member's bytes were fed but its end not reached yet
    while True:
        chunk = stream.read(1 << 16)
        if not chunk:
            break
        member_open = True
        while chunk:
            out.write(decompressor.decompress(chunk, max_bytes + 1 - out.tell()))
            if out.tell() > max_bytes:
                raise TooLarge(f"larger than --max-bytes={max_bytes} after gzip decompression")
            chunk = decompressor.unconsumed_tail
        if decompressor.eof:
            # Concatenated gzip members are valid gzip: continue with the rest.
            rest = decompressor.unused_data
            decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
            member_open = bool(rest)
            if rest:
                out.write(decompressor.decompress(rest, max_bytes + 1 - out.tell()))
                if out.tell() > max_bytes:
                    raise TooLarge(f"larger than --max-bytes={max_bytes} after gzip decompression")
    if member_open and not decompressor.eof:
        # zlib hands out what it could decompress of a cut file without a
        # word: that would be a truncated article, so say it (as gzip does).
        raise EOFError("gzip file is truncated (ends before its end-of-stream marker)")
    return out.getvalue()


def looks_binary(data: bytes) -> bool:
    head = data[:BINARY_SNIFF_BYTES]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 text has NULs but is text
        return False
    return b"\x00" in head


def decode_bytes(data: bytes) -> tuple[str, str]:
    """Decode text whatever its encoding: (text, encoding used).

    UTF-8 first (news files mostly are), then charset detection for the
    cp1252/latin-1 files that still circulate; latin-1 as the last resort
    because it maps every byte and so can never fail.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace"), "utf-8-sig"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace"), "utf-16"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is not None and best.encoding:
        enc = best.encoding
        # Single-byte western text is overwhelmingly cp1252 in news; detectors
        # often say latin-1 for it, which turns curly quotes into C1 controls.
        if enc in ("latin_1", "iso8859_1", "iso8859_15"):
            enc = "cp1252"
        try:
            return data.decode(enc), enc
        except (UnicodeDecodeError, LookupError):
            pass
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def _first(obj: dict, names: Iterable[str]):
    for name in names:
        value = obj.get(name)
        if value not in (None, "", [], {}):
            return value
    return None


def _as_text(value, sep: str = ", ") -> str | None:
    """A field's value as text; lists are joined with ``sep``. Values are at
    most MAX_JSON_DEPTH deep by then (parse_json), so the recursion is bounded."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [_as_text(v, sep) for v in value]
        return sep.join(p for p in parts if p)
    if isinstance(value, dict):
        return _as_text(_first(value, ("name", "text", "value")), sep)
    return str(value)


class JsonTooDeep(ValueError):
    pass


def _parse_int(digits: str):
    # Python refuses int() of more than 4,300 digits (a DoS guard); a long
    # number in an unrelated field must not reject the article, and none of
    # the fields newsbeam reads is a number, so it stays as written.
    return int(digits) if len(digits) <= 4000 else digits


def json_depth(value) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = node.values()
        elif not isinstance(node, list):
            continue
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            return depth
        stack.extend((child, depth + 1) for child in node if isinstance(child, (dict, list)))
    return deepest


def parse_json(text: str):
    """json.loads that any input survives: numbers of any length, nesting
    bounded by MAX_JSON_DEPTH (JsonTooDeep), ValueError for invalid JSON."""
    try:
        value = json.loads(text, parse_int=_parse_int)
    except RecursionError as e:
        raise JsonTooDeep(f"nested deeper than {MAX_JSON_DEPTH} levels") from e
    if json_depth(value) > MAX_JSON_DEPTH:
        raise JsonTooDeep(f"nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _split_title_body(text: str) -> tuple[str | None, str]:
    """First non-empty line is the headline, the rest the body."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip():
            return line.strip(), "\n".join(lines[i + 1:])
    return None, ""


def _find_article(obj: dict) -> dict:
    """The object holding the article: ``obj`` itself, or one nested one level
    down under a wrapper key (``{"article": {...}}``, ``{"data": {...}}``)."""
    if _first(obj, TEXT_FIELDS) is not None and not isinstance(_first(obj, TEXT_FIELDS), dict):
        return obj
    for name in WRAPPER_FIELDS:
        inner = obj.get(name)
        if isinstance(inner, dict) and _first(inner, TEXT_FIELDS) is not None:
            return {**{k: v for k, v in obj.items() if k != name}, **inner}
    return obj


def _no_text_message(obj: dict) -> str:
    message = f"no non-empty text field (looked for {', '.join(TEXT_FIELDS)}"
    wrappers = [k for k in obj if isinstance(obj[k], (dict, list)) and obj[k]]
    if wrappers:
        message += f", and one level down under {', '.join(WRAPPER_FIELDS)}); found {', '.join(wrappers[:5])}"
        message += " holding objects or lists, but no article text in them"
    else:
        keys = ", ".join(list(obj)[:10]) or "none"
        message += f"); fields present: {keys}"
    return message


def _from_json_object(obj, source: str, key: str, record_no: int, payload: bytes | str) -> dict:
    if not isinstance(obj, dict):
        return rejected(source, STAGE, "invalid_json",
                        f"expected a JSON object, got {type(obj).__name__}", _raw(payload))
    obj = _find_article(obj)
    # A body given as a list of strings is a list of paragraphs.
    text = _as_text(_first(obj, TEXT_FIELDS), sep="\n\n")
    if not text or not text.strip():
        return rejected(source, STAGE, "no_text", _no_text_message(obj), _raw(payload))
    return {
        "id": article_id(key, record_no, payload),
        "source": source,
        "format": "json",
        "title": _as_text(_first(obj, TITLE_FIELDS)),
        "text": text,
        "author": _as_text(_first(obj, AUTHOR_FIELDS)),
        "published": _as_text(_first(obj, PUBLISHED_FIELDS)),
        "url": _as_text(_first(obj, URL_FIELDS)),
        "language_hint": _as_text(_first(obj, LANGUAGE_FIELDS)),
    }


def _raw(payload: bytes | str) -> str:
    if isinstance(payload, bytes):
        return decode_bytes(payload)[0]
    return payload


def parse_payload(data: bytes, source: str, key: str, fmt: str) -> Iterator[dict]:
    """Records from one file's (decompressed) bytes.

    Yields raw articles and rejected records; the two are told apart by the
    ``reason`` key, which only rejected records have.
    """
    if not data.strip():
        yield rejected(source, STAGE, "empty", "file is empty or only whitespace")
        return
    if looks_binary(data):
        yield rejected(source, STAGE, "binary", "file looks binary (NUL bytes), not text",
                       repr(data[:200]))
        return
    text, encoding = decode_bytes(data)
    if not text.strip():
        # Only a BOM, or Unicode spaces and separators: a JSON-lines file of
        # that would otherwise give no record at all.
        yield rejected(source, STAGE, "empty", f"file holds only whitespace once decoded ({encoding})")
        return
    if fmt == "text":
        title, body = _split_title_body(text)
        if not body.strip():
            yield rejected(source, STAGE, "no_text", "file has a title line but no body", text)
            return
        yield {
            "id": article_id(key, 0, data), "source": source, "format": "text",
            "title": title, "text": body, "author": None, "published": None,
            "url": None, "language_hint": None,
        }
    elif fmt == "html":
        yield {
            "id": article_id(key, 0, data), "source": source, "format": "html",
            "title": None, "text": text, "author": None, "published": None,
            "url": None, "language_hint": None,
        }
    elif fmt == "json":
        try:
            obj = parse_json(text)
        except JsonTooDeep as e:
            yield rejected(source, STAGE, "too_deep", f"JSON {e}", text[:RAW_LIMIT])
            return
        except ValueError as e:
            yield rejected(source, STAGE, "invalid_json", f"not valid JSON: {e}", text)
            return
        yield _from_json_object(obj, source, key, 0, data)
    elif fmt == "jsonl":
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue  # blank separator lines are not records
            line_source = f"{source}#{line_no}"
            try:
                obj = parse_json(line)
            except JsonTooDeep as e:
                yield rejected(line_source, STAGE, "too_deep", f"line {line_no}: JSON {e}", line[:RAW_LIMIT])
                continue
            except ValueError as e:
                yield rejected(line_source, STAGE, "invalid_json", f"line {line_no} is not valid JSON: {e}", line)
                continue
            yield _from_json_object(obj, line_source, key, line_no, line)
    else:
        raise ValueError(f"unknown format {fmt!r}")


class ReadFileFn(beam.DoFn):
    """Open one planned input through FileSystems and parse it into records."""

    def __init__(self, max_bytes: int):
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._max_bytes = max_bytes
        self._files = Metrics.counter(STAGE, "files")
        self._records = Metrics.counter(STAGE, "articles")

    def _reject(self, record: dict):
        return tag_rejected(STAGE, record)

    def process(self, item: InputFile):
        self._files.inc()
        fmt, gzipped = format_of(item.path)
        if fmt is None:
            yield self._reject(rejected(
                item.source, STAGE, "unsupported_format",
                "not a supported article file (.txt .md .json .jsonl .ndjson .html .htm, optionally .gz)"))
            return
        try:
            with FileSystems.open(item.path, compression_type="uncompressed") as stream:
                data = read_limited(stream, self._max_bytes, gzipped)
        except TooLarge as e:
            yield self._reject(rejected(item.source, STAGE, "too_large", str(e)))
            return
        except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
            yield self._reject(rejected(item.source, STAGE, "unreadable", f"cannot read: {e}"))
            return
        except Exception as e:  # FileSystems wraps backend errors in BeamIOError
            yield self._reject(rejected(item.source, STAGE, "unreadable", f"cannot read: {e}"))
            return
        for record in parse_payload(data, item.source, item.key, fmt):
            if "reason" in record:
                yield self._reject(record)
            else:
                self._records.inc()
                yield record


def write_plan(files: Iterable[InputFile], path: str) -> int:
    """Write the planned inputs as JSON lines to ``path`` (any FileSystems
    URL), sorted by path; returns how many. The pipeline reads the plan from
    there, so the job graph stays small whatever the number of inputs (a
    Dataflow job graph is limited to about 10 MB)."""
    count = 0
    with FileSystems.create(path) as f:
        for item in sorted(files, key=lambda i: i.path):
            f.write(json.dumps(asdict(item), ensure_ascii=False).encode("utf-8") + b"\n")
            count += 1
    return count


_INPUT_FIELDS = frozenset(f.name for f in fields(InputFile))


def read_plan(path: str) -> Iterator[InputFile]:
    """The InputFile entries of a plan written by ``write_plan``."""
    with FileSystems.open(path, compression_type="uncompressed") as f:
        for line in io.TextIOWrapper(f, encoding="utf-8"):
            if line.strip():
                entry = json.loads(line)
                yield InputFile(**{k: v for k, v in entry.items() if k in _INPUT_FIELDS})


class PlannedInputs(beam.PTransform):
    """PBegin -> the InputFile entries of the plan file ``plan``, spread over workers."""

    def __init__(self, plan: str):
        super().__init__()
        if not plan:
            raise ValueError("plan is required")
        self._plan = plan

    def expand(self, pbegin):
        return (
            pbegin
            | "PlanFile" >> beam.Create([self._plan])
            | "ReadPlan" >> beam.FlatMap(read_plan)
            | "SpreadInputs" >> beam.Reshuffle()
        )


class ReadArticles(beam.PTransform):
    """The plan file of input files -> {'articles': raw articles, 'rejected': rejected records}.

    The launcher plans the files (so a missing path is a usage error before any
    work starts, and incremental runs can skip what they have seen) and writes
    the plan (``write_plan``); this transform spreads the reading over workers.
    """

    def __init__(self, plan: str, max_bytes: int):
        super().__init__()
        if not plan:
            raise ValueError("plan is required")
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._plan = plan
        self._max_bytes = max_bytes

    def expand(self, pbegin):
        results = (
            pbegin
            | "PlannedFiles" >> PlannedInputs(self._plan)
            | "ReadAndParse" >> beam.ParDo(ReadFileFn(self._max_bytes)).with_outputs(
                REJECTED_TAG, main="articles")
        )
        return {"articles": results.articles, "rejected": results[REJECTED_TAG]}
