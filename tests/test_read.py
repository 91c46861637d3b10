import gzip
import io
import json

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipelines.read import (
    InputFile,
    ReadArticles,
    TooLarge,
    article_id,
    decode_bytes,
    format_of,
    json_depth,
    looks_binary,
    parse_json,
    parse_payload,
    read_limited,
    read_plan,
    wide_encoding,
    write_plan,
)


def parse(data: bytes, fmt: str, source="a.txt"):
    return list(parse_payload(data, source, source, fmt))


@pytest.mark.parametrize("name,expected", [
    ("a.txt", ("text", None)), ("a.MD", ("text", None)), ("a.json.gz", ("json", "gzip")),
    ("a.jsonl", ("jsonl", None)), ("a.ndjson.gz", ("jsonl", "gzip")), ("a.htm", ("html", None)),
    ("a.html.gz", ("html", "gzip")), ("a.pdf", (None, None)), ("a.tsv.gz", ("tsv", "gzip")),
    ("a.jsonl.zst", ("jsonl", "zstd")), ("a.csv.bz2", ("csv", "bzip2")), ("a.txt.ZST", ("text", "zstd")),
    ("a.parquet", ("parquet", None)), ("a.parquet.gz", (None, "gzip")), ("crawl.warc.gz", ("warc", "gzip")),
    ("old.arc.gz", ("warc", "gzip")), ("a.tsv", ("tsv", None)), ("a.gz", (None, "gzip")),
])
def test_format_of(name, expected):
    assert format_of(name) == expected


def test_text_file_first_nonempty_line_is_title():
    [rec] = parse(b"\n\nHeadline here\n\nBody one.\n\nBody two.\n", "text")
    assert rec["title"] == "Headline here"
    assert "Body one." in rec["text"] and "Headline" not in rec["text"]
    assert rec["format"] == "text"


def test_latin1_text_is_decoded_not_crashed():
    data = "Caf\u00e9 na\u00efve \u2019quoted\u2019\n\nBody with \u00e9".encode("cp1252")
    text, encoding = decode_bytes(data)
    assert "Caf\u00e9" in text and "\u2019" in text
    assert encoding != "utf-8"


@pytest.mark.parametrize("text,encoding", [
    # Repetitive western text: charset_normalizer, used before, read this as cp1257 ("d\u00e9j\u0105").
    ("Title\n" + "Caf\u00e9 d\u00e9j\u00e0 vu \u201cquoted\u201d. " * 2000, "cp1252"),
    ("Pr\u00edli\u0161 \u017elu\u0165ou\u010dk\u00fd k\u016f\u0148 \u00fap\u011bl \u010f\u00e1belsk\u00e9 \u00f3dy, "
     "\u201eodpov\u011bd\u011bl\u201c ministr. " * 20, "cp1250"),
    ("\u0104\u017euolas ir ki\u0161kis \u0161oko per tvor\u0105, \u201esak\u0117\u201c Lietuvos \u017eem\u0117s "
     "\u016bkininkai. " * 20, "cp1257"),
    ("\u041a\u0438\u0457\u0432 \u0456 \u0491\u0430\u043d\u043e\u043a: \u0443\u0440\u044f\u0434 "
     "\u0443\u0445\u0432\u0430\u043b\u0438\u0432 \u0440\u0456\u0448\u0435\u043d\u043d\u044f \u0449\u043e\u0434\u043e "
     "\u0454\u0434\u0438\u043d\u043e\u0433\u043e \u0431\u044e\u0434\u0436\u0435\u0442\u0443. " * 20, "koi8_u"),
    ("\u65e5\u672c\u306e\u9996\u76f8\u306f\u8a18\u8005\u4f1a\u898b\u3067\u3001\u7d4c\u6e08\u653f\u7b56"
     "\u306b\u3064\u3044\u3066\u8aac\u660e\u3057\u307e\u3057\u305f\u3002" * 20, "euc_jp"),
])
def test_legacy_encodings_read_back_as_written(text, encoding):
    assert decode_bytes(text.encode(encoding))[0] == text


def test_utf8_with_one_bad_byte_stays_utf8():
    text = "Z\u00fcrich und M\u00fcnchen sind St\u00e4dte. \u00c7a va tr\u00e8s bien. " * 50
    damaged = text.encode()[:100] + b"\xff" + text.encode()[100:]
    decoded, encoding = decode_bytes(damaged)
    assert encoding == "utf-8+cp1252"
    assert decoded.replace("\u00ff", "", 1) == text


def test_utf8_with_a_pasted_cp1252_line_reads_both():
    lines = ["Gr\u00fc\u00dfe aus K\u00f6ln, sagte die B\u00fcrgermeisterin.",
             "\u201eDas Caf\u00e9 ist offen\u201c, hie\u00df es."]
    data = lines[0].encode() + b"\n" + lines[1].encode("cp1252") + b"\n" + lines[0].encode()
    assert decode_bytes(data) == ("\n".join([lines[0], lines[1], lines[0]]), "utf-8+cp1252")


def test_utf8_bom_is_stripped():
    assert decode_bytes(b"\xef\xbb\xbfHello") == ("Hello", "utf-8-sig")


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"), (b"   \n\n", "empty"), (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary"),
    (b"Only a title\n", "no_text"),
])
def test_bad_text_files_are_rejected_with_reason(data, reason):
    [rec] = parse(data, "text")
    assert rec["reason"] == reason
    assert rec["stage"] == "read" and rec["source"] == "a.txt" and rec["detail"]


def test_json_field_aliases():
    obj = {"headline": "H", "body": "The body", "authors": ["A One", "B Two"],
           "date": "2024-01-02", "link": "http://x", "lang": "fr"}
    [rec] = parse(json.dumps(obj).encode(), "json", "a.json")
    assert (rec["title"], rec["text"], rec["author"], rec["published"], rec["url"], rec["language_hint"]) == (
        "H", "The body", "A One, B Two", "2024-01-02", "http://x", "fr")


def test_jsonl_lines_are_records_and_bad_lines_are_quarantined():
    data = b'{"title": "a", "text": "one"}\n\nnot json\n{"title": "no text"}\n[1, 2]\n'
    recs = parse(data, "jsonl", "f.jsonl")
    assert [r.get("reason") for r in recs] == [None, "invalid_json", "no_text", "invalid_json"]
    assert [r["source"] for r in recs] == ["f.jsonl@0", "f.jsonl@31", "f.jsonl@40", "f.jsonl@61"]
    assert recs[1]["raw"] == "not json"


def test_invalid_json_file():
    [rec] = parse(b"{nope", "json", "a.json")
    assert rec["reason"] == "invalid_json" and rec["raw"] == "{nope"


def test_ids_are_stable_and_distinguish_records():
    assert article_id("a.txt", 0, b"x") == article_id("a.txt", 0, b"x")
    assert len({article_id("a.txt", 0, b"x"), article_id("b.txt", 0, b"x"),
                article_id("a.txt", 1, b"x"), article_id("a.txt", 0, b"y")}) == 4


def test_gzip_bomb_is_stopped_without_inflating_it():
    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024))
    assert len(bomb) < 100_000
    with pytest.raises(TooLarge):
        read_limited(io.BytesIO(bomb), 1024 * 1024, "gzip")


def test_read_limited_plain_and_concatenated_gzip():
    assert read_limited(io.BytesIO(b"abc"), 3, None) == b"abc"
    with pytest.raises(TooLarge):
        read_limited(io.BytesIO(b"abcd"), 3, None)
    two_members = gzip.compress(b"ab") + gzip.compress(b"cd")
    assert read_limited(io.BytesIO(two_members), 10, "gzip") == b"abcd"


def test_read_articles_transform(tmp_path, test_pipeline):
    (tmp_path / "ok.txt").write_text("Title\n\nSome body text.\n")
    (tmp_path / "lines.jsonl.gz").write_bytes(gzip.compress(b'{"text": "x"}\nbroken\n'))
    (tmp_path / "big.txt").write_text("T\n\n" + "word " * 1000)
    (tmp_path / "notes.pdf").write_bytes(b"%PDF")
    files = [InputFile(str(p), p.name, p.name) for p in sorted(tmp_path.iterdir())]
    plan = str(tmp_path / "plan" / "plan.jsonl")
    assert write_plan(files, plan) == 4
    with test_pipeline() as p:
        out = p | ReadArticles(plan, max_bytes=1000)
        assert_that(out["articles"] | "Src" >> beam.Map(lambda r: r["source"]),
                    equal_to(["ok.txt", "lines.jsonl.gz@0"]), label="articles")
        assert_that(out["rejected"] | "Why" >> beam.Map(lambda r: (r["source"], r["reason"])),
                    equal_to([("big.txt", "too_large"), ("lines.jsonl.gz@14", "invalid_json"),
                              ("notes.pdf", "unsupported_format")]), label="rejected")


def test_constructor_validates():
    with pytest.raises(ValueError):
        ReadArticles("plan.jsonl", max_bytes=0)
    with pytest.raises(ValueError):
        ReadArticles("", max_bytes=10)


def test_plan_file_round_trip(tmp_path):
    files = [InputFile(str(tmp_path / n), n, n, size=i, mtime=1.5 * i) for i, n in enumerate(["b.txt", "a ü.txt"])]
    plan = str(tmp_path / "p.jsonl")
    assert write_plan(files, plan) == 2
    assert list(read_plan(plan)) == sorted(files, key=lambda f: f.path)


# --- hostile JSON (issue 15) -------------------------------------------------

def _one(data: bytes, fmt: str = "json") -> list[dict]:
    return list(parse_payload(data, "s.json", "s.json", fmt))


def test_deeply_nested_json_is_rejected_not_a_crash():
    deep = b'{"title": "t", "text": ' + b"[" * 600 + b'"x"' + b"]" * 600 + b"}"
    [record] = _one(deep)
    assert record["reason"] == "too_deep" and "64" in record["detail"]


def test_a_jsonl_line_100000_deep_loses_only_itself():
    data = b'{"text": "first body"}\n' + b"[" * 100_000 + b"]" * 100_000 + b'\n{"text": "second body"}\n'
    records = _one(data, "jsonl")
    assert [r.get("reason") for r in records] == [None, "too_deep", None]
    assert [r["text"] for r in records if "reason" not in r] == ["first body", "second body"]
    assert len(records[1]["raw"]) <= 64 * 1024


def test_numbers_of_any_length_are_valid_json():
    [record] = _one(b'{"title": "t", "text": "body here", "views": ' + b"9" * 5000 + b"}")
    assert "reason" not in record and record["text"] == "body here"


def test_a_list_of_strings_as_the_body_is_paragraphs():
    [record] = _one(b'{"title": "t", "text": ["First paragraph.", "Second one."]}')
    assert record["text"] == "First paragraph.\n\nSecond one."


@pytest.mark.parametrize("wrapper", ["article", "data", "item"])
def test_an_article_one_level_down_under_a_known_key_is_found(wrapper):
    data = json.dumps({"status": "ok", wrapper: {"headline": "H", "body": "The body.", "url": "u"}}).encode()
    [record] = _one(data)
    assert (record["title"], record["text"], record["url"]) == ("H", "The body.", "u")


def test_no_text_message_names_the_keys_it_found():
    [record] = _one(json.dumps({"payload": {"x": 1}, "meta": "m"}).encode())
    assert record["reason"] == "no_text" and "payload" in record["detail"]
    [record] = _one(json.dumps({"meta": "m"}).encode())
    assert "fields present: meta" in record["detail"]


def test_parse_json_and_depth():
    assert parse_json('{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}
    assert json_depth({"a": [1, {"b": 2}]}) == 3 and json_depth(5) == 0
    with pytest.raises(ValueError):
        parse_json("[" * 70 + "]" * 70)


@pytest.mark.parametrize("cut", [1, 8, 9, 20])
def test_a_truncated_gzip_is_unreadable_not_a_shorter_article(cut):
    packed = gzip.compress(("Title\n" + "word " * 400).encode())
    with pytest.raises(EOFError):
        read_limited(io.BytesIO(packed[:-cut]), 1 << 20, "gzip")
    # Whole and concatenated members still read in full.
    assert read_limited(io.BytesIO(packed + packed), 1 << 20, "gzip").count(b"word") == 800


@pytest.mark.parametrize("data", [b"\xef\xbb\xbf", "\u2028\x1c\x85\n".encode(), "\ufeff\u3000".encode()])
def test_only_a_bom_or_unicode_spaces_is_empty_for_every_format(data):
    for fmt in ("text", "json", "jsonl", "html"):
        [record] = parse_payload(data, "s", "k", fmt)
        assert record["reason"] == "empty"


def test_a_rejected_record_with_a_lone_surrogate_can_be_written_as_avro():
    import fastavro

    from pipelines.records import load_schema, rejected

    record = rejected("x.json", "clean", "empty_after_clean", "no text", raw="before \ud9b3 after")
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(load_schema("rejected")), [record])
    assert record["raw"] == "before ? after"


# --- formats as news data ships (issue 14) -----------------------------------

import bz2  # noqa: E402
import csv as csv_module  # noqa: E402

import zstandard  # noqa: E402

from pipelines.read import (  # noqa: E402
    RANGE_BYTES,
    DecompressingReader,
    read_unit,
    split_ranges,
)

COMPRESS = {
    None: lambda d: d,
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "zstd": lambda d: zstandard.ZstdCompressor().compress(d),
}
SUFFIX = {None: "", "gzip": ".gz", "bzip2": ".bz2", "zstd": ".zst"}
ARTICLES = [{"title": f"Title {i}", "text": f"Body of article {i}, with words.", "url": f"https://x/{i}"}
            for i in range(7)]


def _unit(path, **kw) -> InputFile:
    return InputFile(str(path), path.name, path.name, size=path.stat().st_size, **kw)


def _read(path, max_bytes=1 << 20) -> list[dict]:
    return list(read_unit(_unit(path), max_bytes))


def _articles(records):
    return [r for r in records if "reason" not in r and "skipped" not in r]


def _jsonl(objs, newline="\n") -> bytes:
    return "".join(json.dumps(o) + newline for o in objs).encode()


@pytest.mark.parametrize("compression", ["gzip", "bzip2", "zstd"])
def test_every_compression_reads_whole_and_concatenated(compression):
    packed = COMPRESS[compression](b"hello ") + COMPRESS[compression](b"world")
    assert read_limited(io.BytesIO(packed), 100, compression) == b"hello world"
    with pytest.raises(TooLarge):
        read_limited(io.BytesIO(packed), 5, compression)


@pytest.mark.parametrize("compression", ["gzip", "bzip2", "zstd"])
def test_a_truncated_stream_is_an_eof_error_for_every_compression(compression):
    packed = COMPRESS[compression](("Title\n" + "word %d " * 4000).encode())
    with pytest.raises(EOFError):
        read_limited(io.BytesIO(packed[: len(packed) // 2]), 1 << 20, compression)


@pytest.mark.parametrize("compression", ["gzip", "bzip2", "zstd"])
def test_a_bomb_stops_without_inflating_even_when_streamed(compression):
    # Newlines only: a JSONL reader skips blank lines, so only the ratio guard stops it.
    bomb = COMPRESS[compression](b"\n" * (200 * 1024 * 1024))
    assert len(bomb) < 300_000
    reader = DecompressingReader(io.BytesIO(bomb), compression, floor=1 << 20)
    with pytest.raises(TooLarge, match="bomb"):
        while reader.read(1 << 16):
            pass
    # Stopped after a bounded multiple of what it read, far below 200 MB.
    assert reader.produced < 40 * 1024 * 1024


@pytest.mark.parametrize("compression", [None, "gzip", "bzip2", "zstd"])
def test_jsonl_in_every_compression_gives_the_same_records(tmp_path, compression):
    path = tmp_path / ("a.jsonl" + SUFFIX[compression])
    path.write_bytes(COMPRESS[compression](_jsonl(ARTICLES)))
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(_jsonl(ARTICLES))
    got, want = (list(read_unit(InputFile(str(p), p.name, "key"), 1 << 20)) for p in (path, plain))
    assert [r["title"] for r in got] == [a["title"] for a in ARTICLES]
    assert [r["id"] for r in got] == [r["id"] for r in want]  # same key, same records: same ids
    assert all(r["source"].startswith(path.name + "@") for r in got)


def test_a_jsonl_bomb_file_is_one_rejection(tmp_path):
    path = tmp_path / "bomb.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(b"\n" * (100 * 1024 * 1024)))
    [record] = _read(path, max_bytes=1 << 20)
    assert record["reason"] == "too_large" and "bomb" in record["detail"]


def test_max_bytes_bounds_one_jsonl_record_not_the_file(tmp_path):
    path = tmp_path / "a.jsonl"
    long = {"title": "long", "text": "word " * 500}
    path.write_bytes(_jsonl(ARTICLES[:2] + [long] + ARTICLES[2:4]))
    records = _read(path, max_bytes=300)  # the file is ~3 KB
    assert [r.get("reason") for r in records] == [None, None, "too_large", None, None]


def _ranges_of(path, pieces: int) -> list[InputFile]:
    size = path.stat().st_size
    return split_ranges([_unit(path)], range_bytes=-(-size // pieces))


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("pieces", [2, 3, 7, 40])
def test_a_split_jsonl_gives_exactly_the_records_of_the_whole_file(tmp_path, newline, pieces):
    path = tmp_path / "a.jsonl"
    lines = _jsonl(ARTICLES * 3, newline)
    path.write_bytes(lines + b'{"title": "last", "text": "no newline at the end"}')  # last line unterminated
    whole = _read(path)
    ranges = _ranges_of(path, pieces)
    assert len(ranges) == pieces and ranges[0].start == 0 and ranges[-1].end == path.stat().st_size
    assert all(a.end == b.start for a, b in zip(ranges, ranges[1:]))
    split = [r for unit in ranges for r in read_unit(unit, 1 << 20)]
    assert split == whole and len(whole) == 22
    assert whole[-1]["title"] == "last"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-16-le no BOM", "utf-16-be no BOM",
                                      "utf-32-le no BOM", "utf-32-be no BOM"])
def test_utf16_and_utf32_json_lines_and_arrays_read_as_utf8_would(tmp_path, encoding):
    encoding, _, no_bom = encoding.partition(" ")
    # Python's utf-16/utf-32 write their own BOM
    bom = "" if no_bom else {"utf-16-be": "\ufeff"}.get(encoding, "")
    objs = [dict(a, text=a["text"] + " \u00e9t\u00e9 \u4e2d\u6587 \U0001f600") for a in ARTICLES]
    utf8 = tmp_path / "a.jsonl"
    utf8.write_bytes(_jsonl(objs))
    wide = tmp_path / "w.jsonl"
    wide.write_bytes((bom + _jsonl(objs).decode()).encode(encoding))
    expected = [dict(r, source=r["source"].replace("a.jsonl", "w.jsonl")) for r in _read(utf8)]
    got = _read(wide)
    assert [(r["source"], r["text"], r["title"]) for r in got] == [
        (r["source"], r["text"], r["title"]) for r in expected]
    # Cut in ranges, it is read once, whole, by the first range, with the same records.
    assert [r for unit in _ranges_of(wide, 3) for r in read_unit(unit, 1 << 20)] == got
    array = tmp_path / "w.json"
    array.write_bytes((bom + json.dumps(objs)).encode(encoding))
    assert [r["text"] for r in _read(array)] == [o["text"] for o in objs]
    assert [r["text"] for r in parse_payload(array.read_bytes(), "w.json", "w.json", "json")] == [
        o["text"] for o in objs]
    csv_text = "title,text\n" + "".join(f'{o["title"]},"{o["text"]}"\n' for o in objs)
    rows = parse_payload((bom + csv_text).encode(encoding), "w.csv", "w.csv", "csv")
    assert [r["text"] for r in rows] == [o["text"] for o in objs]
    # Without a BOM, a text too short to show where its NULs fall is not taken for UTF-16/32.
    short = "Caf\u00e9 au lait" if no_bom else "Caf\u00e9"
    assert decode_bytes((bom + short).encode(encoding))[0] == short


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le"])
@pytest.mark.parametrize("text", [
    "Headline\n\nThe council met on Monday to discuss the budget for 2025.",
    "\u0417\u0430\u0433\u043e\u043b\u043e\u0432\u043e\u043a\n\n\u0421\u043e\u0432\u0435\u0442 "
    "\u0441\u043e\u0431\u0440\u0430\u043b\u0441\u044f \u0432 \u043f\u043e\u043d\u0435\u0434\u0435"
    "\u043b\u044c\u043d\u0438\u043a, \u0447\u0442\u043e\u0431\u044b \u043e\u0431\u0441\u0443\u0434"
    "\u0438\u0442\u044c \u0431\u044e\u0434\u0436\u0435\u0442.",
])
def test_utf16_and_utf32_text_without_a_bom_is_text_not_binary(encoding, text):
    data = (text * 3).encode(encoding)
    assert not looks_binary(data)
    assert decode_bytes(data) == (text * 3, encoding)


UNSPACED = {
    "zh": "\u8bb0\u8005\u4eca\u5929\u4ece\u5e02\u653f\u5e9c\u83b7\u6089\uff0c\u7b2c\u4e00\u6279\u65b0"
          "\u5efa\u5b66\u6821\u5c06\u5728\u660e\u5e74\u79cb\u5b63\u5f00\u5b66\u3002\u6559\u80b2\u5c40"
          "\u8868\u793a\uff0c\u8fd9\u4e9b\u5b66\u6821\u5c06\u4e3a\u5468\u8fb9\u793e\u533a\u63d0\u4f9b"
          "\u66f4\u591a\u7684\u5b66\u4f4d\u3002",
    "zh-Hant": "\u8a18\u8005\u4eca\u5929\u5f9e\u5e02\u653f\u5e9c\u7372\u6089\uff0c\u7b2c\u4e00\u6279"
               "\u65b0\u5efa\u5b78\u6821\u5c07\u5728\u660e\u5e74\u79cb\u5b63\u958b\u5b78\u3002\u6559"
               "\u80b2\u5c40\u8868\u793a\uff0c\u9019\u4e9b\u5b78\u6821\u5c07\u70ba\u5468\u908a\u793e"
               "\u5340\u63d0\u4f9b\u66f4\u591a\u7684\u5b78\u4f4d\u3002",
    "ja": "\u6771\u4eac\u90fd\u306f\u5341\u65e5\u3001\u65b0\u3057\u3044\u9632\u707d\u8a08\u753b\u3092"
          "\u767a\u8868\u3057\u305f\u3002\u8a08\u753b\u3067\u306f\u3001\u5927\u5730\u9707\u304c\u8d77"
          "\u304d\u305f\u5834\u5408\u306e\u907f\u96e3\u6240\u306e\u6570\u3092\u5897\u3084\u3057\u3001"
          "\u98df\u6599\u306e\u5099\u84c4\u3092\u5f37\u5316\u3059\u308b\u3002",
    "th": "\u0e01\u0e23\u0e38\u0e07\u0e40\u0e17\u0e1e\u0e21\u0e2b\u0e32\u0e19\u0e04\u0e23\u0e1b\u0e23"
          "\u0e30\u0e01\u0e32\u0e28\u0e41\u0e1c\u0e19\u0e43\u0e2b\u0e21\u0e48\u0e40\u0e1e\u0e37\u0e48"
          "\u0e2d\u0e25\u0e14\u0e21\u0e25\u0e1e\u0e34\u0e29\u0e17\u0e32\u0e07\u0e2d\u0e32\u0e01\u0e32"
          "\u0e28\u0e43\u0e19\u0e40\u0e21\u0e37\u0e2d\u0e07 \u0e42\u0e14\u0e22\u0e08\u0e30\u0e40\u0e1e"
          "\u0e34\u0e48\u0e21\u0e23\u0e16\u0e42\u0e14\u0e22\u0e2a\u0e32\u0e23\u0e44\u0e1f\u0e1f\u0e49"
          "\u0e32",
}


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("lang", sorted(UNSPACED))
def test_utf16_without_a_bom_of_unspaced_scripts_is_read(tmp_path, lang, encoding):
    # Chinese, Japanese and Thai carry too little ASCII for the NULs to show UTF-16:
    # what decodes in one byte order is that script's text, in the other it is not.
    title, body = f"{lang} 2025", UNSPACED[lang] * 2
    data = f"{title}\n{body}\n".encode(encoding)
    assert not looks_binary(data)
    assert decode_bytes(body.encode(encoding)) == (body, encoding)
    path = tmp_path / "a.txt"
    path.write_bytes(data)
    (article,) = _read(path)
    assert (article["title"], article["text"]) == (title, body)


@pytest.mark.parametrize("lang, encoding", [
    ("zh", "gb18030"), ("zh", "gbk"), ("zh-Hant", "big5"), ("ja", "shift_jis"), ("ja", "euc_jp"),
    ("ja", "iso2022_jp"), ("th", "cp874"), ("th", "tis_620")])
def test_legacy_encodings_of_unspaced_scripts_are_not_taken_for_utf16(lang, encoding):
    for text in (UNSPACED[lang], UNSPACED[lang] * 20, UNSPACED[lang][:12]):
        data = text.encode(encoding)
        assert wide_encoding(data) is None
        assert not decode_bytes(data)[1].startswith("utf-16")


@pytest.mark.parametrize("text, encoding", [
    (UNSPACED["ja"], "iso2022_jp"),
    ("\uc11c\uc6b8\uc2dc\ub294 \uc624\ub298 \uc0c8\ub85c\uc6b4 \uad50\ud1b5 \uacc4\ud68d\uc744 "
     "\ubc1c\ud45c\ud588\ub2e4.", "iso2022_kr")])
def test_iso2022_text_is_read_though_it_is_7_bit(tmp_path, text, encoding):
    data = f"Title\n{text}\n".encode(encoding)
    assert data.isascii() and decode_bytes(data) == (f"Title\n{text}\n", encoding)
    path = tmp_path / "a.txt"
    path.write_bytes(data)
    assert _read(path)[0]["text"] == text
    # An escape and a dollar sign in ASCII text do not make it ISO-2022.
    assert decode_bytes(b"Price: \x1b$5 off") == ("Price: \x1b$5 off", "utf-8")


def test_latin_text_and_random_bytes_are_not_taken_for_utf16():
    import random

    french = "Le conseil s\u2019est r\u00e9uni lundi \u00e0 l\u2019h\u00f4tel de ville. " * 30
    for data in (french.encode("cp1252"), french.encode("iso8859-15", errors="replace"), french.encode(),
                 b"Plain ASCII news text, 2025.\n" * 40):
        assert wide_encoding(data[:8192]) is None
    rng = random.Random(7)
    noise = [bytes(rng.randrange(1, 256) for _ in range(rng.choice((32, 200, 8192)))) for _ in range(300)]
    assert sum(wide_encoding(b) is not None for b in noise) <= 1
    # One byte over and over is no text in any encoding (0xC3C3 would be a Hangul syllable).
    assert [wide_encoding(bytes([b]) * 4096) for b in (0x41, 0xC3, 0x0E, 0xE9, 0x4E)] == [None] * 5


def test_binary_files_with_nuls_stay_binary():
    import gzip
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("a.txt", "hello " * 100)
    samples = [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00\x00\x00\x01\x00\x08\x06\x00\x00\x00" * 40,
        buffer.getvalue(), gzip.compress(b"\x00" * 5000), bytes(range(256)) * 20, b"\x00\x01" * 5000,
        "int main() { return 0; }".encode("ascii").replace(b" ", b"\x00") * 50,
    ]
    assert [looks_binary(b) for b in samples] == [True] * len(samples)


def test_a_range_boundary_on_a_line_start_or_inside_a_line(tmp_path):
    path = tmp_path / "a.jsonl"
    data = _jsonl(ARTICLES[:4])
    path.write_bytes(data)
    starts = [0] + [i + 1 for i, c in enumerate(data) if c == ord("\n")][:-1]
    whole = [r["source"] for r in _read(path)]
    for cut in sorted({starts[2] - 1, starts[2], starts[2] + 1}):
        units = [_unit(path, start=0, end=cut, file_size=len(data)),
                 _unit(path, start=cut, end=len(data), file_size=len(data))]
        first, second = (list(read_unit(u, 1 << 20)) for u in units)
        assert [r["source"] for r in first + second] == whole
        # A line belongs to the range it starts in.
        assert len(first) == sum(1 for s in starts if s < cut)


def test_split_ranges_cuts_only_big_uncompressed_jsonl():
    big = InputFile("/d/big.jsonl", "big.jsonl", "big.jsonl", size=3 * RANGE_BYTES + 5)
    others = [InputFile("/d/big.jsonl.gz", "g", "g", size=10 * RANGE_BYTES),
              InputFile("/d/big.csv", "c", "c", size=10 * RANGE_BYTES),
              InputFile("/d/small.jsonl", "s", "s", size=RANGE_BYTES)]
    out = split_ranges([big, *others])
    assert out[4:] == others
    assert [(u.start, u.end) for u in out[:4]] == [(0, big.size // 4), (big.size // 4, big.size // 2),
                                                  (big.size // 2, 3 * big.size // 4), (3 * big.size // 4, big.size)]
    assert sum(u.size for u in out[:4]) == big.size and all(u.file_size == big.size for u in out[:4])
    assert split_ranges(out) == out  # already cut: left as is
    with pytest.raises(ValueError):
        split_ranges([big], range_bytes=0)


def test_a_binary_jsonl_is_one_rejection_split_or_not(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_bytes(b"\x00\x01" * 5000)
    ranges = _ranges_of(path, 4)
    assert [r["reason"] for u in ranges for r in read_unit(u, 1 << 20)] == ["binary"]


@pytest.mark.parametrize("compression", [None, "gzip", "zstd"])
def test_a_json_array_is_one_article_per_element(tmp_path, compression):
    path = tmp_path / ("a.json" + SUFFIX[compression])
    items = ARTICLES + [{"headline": "no body"}, 5, {"body": ["Para one.", "Para two."], "headline": "H"}]
    path.write_bytes(COMPRESS[compression](json.dumps(items, indent=2).encode()))
    records = _read(path)
    assert [r["source"] for r in records] == [f"{path.name}#{n}" for n in range(1, 11)]
    assert [r.get("reason") for r in records] == [None] * 7 + ["no_text", "invalid_json", None]
    assert records[9]["text"] == "Para one.\n\nPara two."
    assert len({r["id"] for r in _articles(records)}) == 8


def test_a_json_array_is_streamed_and_max_bytes_bounds_one_element(tmp_path):
    path = tmp_path / "a.json"
    items = [{"title": f"t{i}", "text": "word " * 50} for i in range(2000)]  # ~600 KB
    path.write_bytes(json.dumps(items).encode())
    records = _read(path, max_bytes=1000)  # far less than the file
    assert len(records) == 2000 and not [r for r in records if "reason" in r]
    # An element over the limit is rejected and skipped without being held,
    # whether it fits the read buffer or is far bigger; the rest is read.
    items[1000]["text"] = "word " * 500
    items[1500]["text"] = ['"quoted {[" \\ ' * 10_000, {"nested": ["]}" * 10_000]}]  # ~300 KB
    path.write_bytes(json.dumps(items).encode())
    records = _read(path, max_bytes=1000)
    assert len(records) == 2000
    assert [n for n, r in enumerate(records) if "reason" in r] == [1000, 1500]
    assert {records[1000]["reason"], records[1500]["reason"]} == {"too_large"}
    assert records[1999]["title"] == "t1999" and records[1501]["title"] == "t1501"


@pytest.mark.parametrize("data,reasons", [
    (b"[]", ["empty"]),
    (b" [ ]\n", ["empty"]),
    (b'[{"text": "a b"}, {"text": ', [None, "invalid_json"]),
    (b'[{"text": "a b"} {"text": "c"}]', [None, "invalid_json"]),
    (b'[{"text": "a b"}, {"text": "x", "n": ' + b"9" * 5000 + b"}]", [None, None]),
    (b"[" + b"[" * 100_000, ["too_deep"]),
    (b"[null, " + b'"' + b"x" * 10_000 + b'"]', ["invalid_json", "too_large"]),
    (b'[{"text": "a b"}, {"text": "' + b"x" * 10_000, [None, "too_large"]),
])
def test_broken_json_arrays_keep_what_came_before(data, reasons):
    assert [r.get("reason") for r in read_unit_bytes(data, max_bytes=8000)] == reasons


def read_unit_bytes(data: bytes, max_bytes: int) -> list[dict]:
    from pipelines.read import iter_records

    return list(iter_records(io.BufferedReader(io.BytesIO(data)), "s.json", "s.json", "json", max_bytes))


def test_a_single_object_json_is_still_bounded_as_a_whole_file(tmp_path):
    path = tmp_path / "one.json"
    path.write_bytes(json.dumps({"title": "t", "text": "word " * 500}).encode())
    [record] = _read(path, max_bytes=1000)
    assert record["reason"] == "too_large"


def _csv_bytes(rows, delimiter=",", header=("title", "body", "date", "link")) -> bytes:
    out = io.StringIO()
    writer = csv_module.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


@pytest.mark.parametrize("fmt,delimiter", [("csv", ","), ("tsv", "\t")])
@pytest.mark.parametrize("compression", [None, "bzip2"])
def test_csv_and_tsv_rows_with_multi_line_bodies(tmp_path, fmt, delimiter, compression):
    rows = [("First", "Line one.\nLine two, with a comma and \"quotes\".", "2024-01-02", "u1"),
            ("No body", "", "2024-01-03", "u2"),
            ("Third", "Body\tthree.", "", "u3")]
    path = tmp_path / (f"a.{fmt}" + SUFFIX[compression])
    path.write_bytes(COMPRESS[compression](_csv_bytes(rows, delimiter)))
    records = _read(path)
    assert [r.get("reason") for r in records] == [None, "no_text", None]
    first, empty, third = records
    assert (first["title"], first["text"], first["published"], first["url"]) == (
        "First", 'Line one.\nLine two, with a comma and "quotes".', "2024-01-02", "u1")
    assert first["source"] == f"{path.name}#1" and third["source"] == f"{path.name}#3"
    assert "No body" in empty["raw"]  # the row itself, so nothing is lost
    assert third["text"] == "Body\tthree."


def test_a_broken_csv_row_costs_that_row_only():
    data = (b"title,text\n"
            b'A,"body a"\n'
            b'B,"body b" trailing\n'  # text after a closing quote
            b'C,"body c"\n'
            b'D,"unclosed\n')
    records = list(parse_payload(data, "a.csv", "a.csv", "csv"))
    assert [(r["source"], r.get("reason")) for r in records] == [
        ("a.csv#1", None), ("a.csv#2", "invalid_csv"), ("a.csv#3", None), ("a.csv#4", "invalid_csv")]
    assert records[1]["raw"].startswith("B,")


@pytest.mark.parametrize("fmt,head", [("csv", b"title,text\n"), ("json", b"[")])
def test_a_cp1252_row_in_a_utf8_stream_keeps_its_letters(fmt, head):
    good = "Gr\u00fc\u00dfe aus K\u00f6ln"
    pasted = "\u201eCaf\u00e9\u201c"
    if fmt == "csv":
        data = head + f"A,{good}\n".encode() + b"B," + pasted.encode("cp1252") + b"\n"
    else:
        data = (head + f'{{"text": "{good}"}}, {{"text": "'.encode() + pasted.encode("cp1252") + b'"}]')
    records = list(parse_payload(data, f"a.{fmt}", f"a.{fmt}", fmt))
    assert [r["text"] for r in records] == [good, pasted]


def test_a_csv_row_longer_than_max_bytes_is_rejected_and_reading_goes_on(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(_csv_bytes([("A", "short body", "", ""), ("B", "word " * 400, "", ""),
                                 ("C", "another body", "", "")]))
    records = _read(path, max_bytes=500)
    assert [r.get("reason") for r in records] == [None, "too_large", None]


def test_a_header_only_or_empty_csv(tmp_path):
    assert [r["reason"] for r in parse_payload(b"", "a.csv", "a.csv", "csv")] == ["empty"]
    [record] = parse_payload(b"title,text\n", "a.csv", "a.csv", "csv")
    assert record["reason"] == "empty" and record["raw"] == "title,text"


def _parquet(path, rows, row_group_size=3):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), str(path), row_group_size=row_group_size)


def test_parquet_rows_by_row_group_with_the_json_aliases(tmp_path):
    import datetime as dt

    rows = [{"headline": f"H{i}", "content": f"Body {i}." if i != 4 else None, "authors": ["A", "B"],
             "datePublished": dt.datetime(2024, 1, i + 1, 12, 0), "link": f"u{i}", "views": i}
            for i in range(8)]
    path = tmp_path / "a.parquet"
    _parquet(path, rows)
    records = _read(path)
    assert [r["source"] for r in records] == [f"a.parquet#{n}" for n in range(1, 9)]
    assert records[4]["reason"] == "no_text" and "H4" in records[4]["raw"]
    ok = records[0]
    assert (ok["title"], ok["text"], ok["author"], ok["published"], ok["url"], ok["format"]) == (
        "H0", "Body 0.", "A, B", "2024-01-01T12:00:00", "u0", "parquet")
    assert len({r["id"] for r in _articles(records)}) == 7


def test_a_corrupt_parquet_is_one_unreadable_record(tmp_path):
    path = tmp_path / "a.parquet"
    path.write_bytes(b"PAR1 not really parquet PAR1")
    [record] = _read(path)
    assert record["reason"] == "unreadable"


def _warc(path, records, gz):
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=gz)
        for kind, uri, content_type, body, status in records:
            http = None
            if kind in ("response", "request"):
                first = "GET / HTTP/1.1" if kind == "request" else status
                http = StatusAndHeaders(first, [("Content-Type", content_type)], protocol="HTTP/1.1",
                                        is_http_request=kind == "request")
            writer.write_record(writer.create_warc_record(uri, kind, payload=io.BytesIO(body), http_headers=http,
                                                          warc_content_type=None if http else content_type))


PAGE = (b"<html><head><title>Page %d</title></head><body><article><h1>Page %d</h1>"
        b"<p>Vladimir Putin met the press in Kyiv on Monday and talked for a long while about the talks.</p>"
        b"</article></body></html>")


@pytest.mark.parametrize("gz", [False, True])
def test_warc_responses_with_html_are_pages_and_the_rest_is_counted(tmp_path, gz):
    path = tmp_path / ("c.warc.gz" if gz else "c.warc")
    _warc(path, [
        ("warcinfo", None, "application/warc-fields", b"software: test\r\n", None),
        ("request", "https://a/1", "text/html", b"", None),
        ("response", "https://a/1", "text/html; charset=utf-8", PAGE % (1, 1), "200 OK"),
        ("response", "https://a/img.png", "image/png", b"\x89PNG", "200 OK"),
        ("response", "https://a/moved", "text/html", b"", "301 Moved Permanently"),
        ("metadata", "https://a/1", "application/warc-fields", b"via: x\r\n", None),
        ("response", "https://a/2", "application/xhtml+xml", PAGE % (2, 2), "200 OK"),
        ("response", "https://a/3", "text/html", b"   ", "200 OK"),
    ], gz)
    records = _read(path)
    assert [r.get("skipped") or r.get("reason") or "page" for r in records] == [
        "warcinfo", "request", "page", "response_image", "response_status_3xx", "metadata", "page", "empty"]
    pages = _articles(records)
    assert [p["url"] for p in pages] == ["https://a/1", "https://a/2"]
    assert all(p["format"] == "html" and p["published"] is None and p["crawled"] for p in pages)
    assert all(p["source"].startswith(path.name + "@") for p in pages) and b"Page 1" in pages[0]["text"].encode()
    # A page's id does not change when other records are added after it.
    assert len({p["id"] for p in pages}) == 2


def _arc(records) -> list[bytes]:
    """ARC v1 records, as the Internet Archive wrote them before WARC: a
    filedesc record, then one 'URL IP DATE CONTENT-TYPE LENGTH' line and the
    raw HTTP response per fetch. Built by hand: warcio reads ARC but writes
    only WARC."""
    def record(url, content_type, payload):
        header = b"%s 192.0.2.1 20240301120000 %s %d\n" % (url.encode(), content_type.encode(), len(payload))
        return header + payload + b"\n"

    desc = b"1 0 newsbeam-test\nURL IP-address Archive-date Content-type Archive-length\n"
    out = [record("filedesc://test.arc", "text/plain", desc)]
    for url, content_type, body in records:
        http = b"HTTP/1.0 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (content_type.encode(), len(body))
        out.append(record(url, content_type.split(";")[0], http + body))
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_an_arc_file_is_read_as_a_warc(tmp_path, gz):
    import gzip

    parts = _arc([("https://a/1", "text/html; charset=utf-8", PAGE % (1, 1)),
                  ("https://a/logo.png", "image/png", b"\x89PNG"),
                  ("https://a/2", "text/html", PAGE % (2, 2))])
    path = tmp_path / ("old.arc.gz" if gz else "old.arc")
    # An .arc.gz is one gzip member per record, like a .warc.gz.
    path.write_bytes(b"".join(gzip.compress(p) for p in parts) if gz else b"".join(parts))
    records = _read(path)
    assert [r.get("skipped") or r.get("reason") or "page" for r in records] == [
        "warcinfo", "page", "response_image", "page"]
    pages = _articles(records)
    assert [p["url"] for p in pages] == ["https://a/1", "https://a/2"]
    assert [p["crawled"] for p in pages] == ["2024-03-01T12:00:00Z"] * 2 and pages[0]["published"] is None
    assert b"Page 2" in pages[1]["text"].encode() and pages[1]["source"] == f"{path.name}@{sum(map(len, parts[:3]))}"


def test_a_warc_cut_short_keeps_the_records_before(tmp_path):
    path = tmp_path / "c.warc"
    _warc(path, [("response", f"https://a/{i}", "text/html", PAGE % (i, i), "200 OK") for i in range(5)], False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 150])
    records = _read(path)
    assert len(_articles(records)) == 4
    assert records[-1]["reason"] == "unreadable" and "truncated" in records[-1]["detail"]
    # Compressed and cut: the decompressor says so; the pages before are kept.
    gz = tmp_path / "c.warc.gz"
    _warc(gz, [("response", f"https://a/{i}", "text/html", PAGE % (i, i), "200 OK") for i in range(5)], True)
    gz.write_bytes(gz.read_bytes()[:-40])
    records = _read(gz)
    assert len(_articles(records)) == 4 and records[-1]["reason"] == "unreadable"


@pytest.mark.parametrize("junk", [b"garbage, not a record\r\n\r\n",
                                  b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: zz\r\n\r\n"])
def test_junk_between_warc_records_loses_no_record(tmp_path, junk):
    path = tmp_path / "c.warc"
    _warc(path, [("response", f"https://a/{i}", "text/html", PAGE % (i, i), "200 OK") for i in range(4)], False)
    data = path.read_bytes()
    cut = data.index(b"WARC/1.0", data.index(b"WARC/1.0", 1) + 1)  # before the third record
    path.write_bytes(data[:cut] + junk + data[cut:])
    records = _read(path)
    assert [p["url"] for p in _articles(records)] == [f"https://a/{i}" for i in range(4)]
    [bad] = [r for r in records if "reason" in r]
    assert bad["reason"] == "unreadable" and "resumes" in bad["detail"]


def _warc_records(path, records) -> list[bytes]:
    """The uncompressed WARC of ``records`` (written at ``path``), one bytes per record."""
    _warc(path, records, False)
    data = path.read_bytes()
    starts = [i for i in range(len(data)) if data.startswith(b"WARC/1.0\r\n", i)] + [len(data)]
    return [data[a:b] for a, b in zip(starts, starts[1:])]


def _per_record(path, compression, records) -> list[bytes]:
    """The WARC of ``records`` compressed one record per member (gzip), stream
    (bzip2) or frame (zstd), as WARC writers do: the members, in order."""
    # zstd with its checksum (as the zstd tool writes it): damage in literals is found too.
    pack = zstandard.ZstdCompressor(write_checksum=True).compress if compression == "zstd" else COMPRESS[compression]
    return [pack(record) for record in _warc_records(path, records)]


@pytest.mark.parametrize("compression", ["gzip", "bzip2", "zstd"])
@pytest.mark.parametrize("damage", ["corrupt_member", "junk_member", "corrupt_header"])
def test_a_bad_member_of_a_compressed_warc_loses_only_its_record(tmp_path, damage, compression):
    path = tmp_path / ("c.warc" + SUFFIX[compression])
    members = _per_record(tmp_path / "plain.warc", compression,
                          [("response", f"https://a/{i}", "text/html", PAGE % (i, i), "200 OK") for i in range(5)])
    third = members[2]
    if damage == "corrupt_member":  # bytes flipped inside the compressed data
        mid = len(third) // 2
        members[2] = third[:mid] + bytes(b ^ 0x5A for b in third[mid:mid + 8]) + third[mid + 8:]
    elif damage == "junk_member":  # a whole member that holds no WARC record
        members.insert(2, COMPRESS[compression](b"not a WARC record\r\n\r\n" * 20))
    else:  # the member's header broken (gzip: flags that say fields not there; bzip2, zstd: the magic)
        at = 3 if compression == "gzip" else 2
        members[2] = third[:at] + (b"\xff" if compression == "gzip" else b"x") + third[at + 1:]
    path.write_bytes(b"".join(members))
    records = _read(path)
    urls = [p["url"] for p in _articles(records)]
    bad = [r for r in records if "reason" in r]
    if damage == "junk_member":
        assert urls == [f"https://a/{i}" for i in range(5)]
    else:
        assert urls == ["https://a/0", "https://a/1", "https://a/3", "https://a/4"]
    assert bad and all(r["reason"] == "unreadable" for r in bad)
    member = {"gzip": "gzip member", "bzip2": "bzip2 stream", "zstd": "zstd frame"}[compression]
    assert any(f"resumes at the next {member}" in r["detail"] for r in bad)
    # Read again, the same ids: they do not depend on how the damage was read around.
    assert [r.get("id") for r in _read(path)] == [r.get("id") for r in records]


def _zstd_dictionary_frame(samples, compressed: bool) -> tuple[bytes, "zstandard.ZstdCompressionDict"]:
    """The skippable frame that opens a dictionary-compressed .warc.zst (IIPC's
    WARC-zstd, as wget-at writes it), holding the dictionary raw or zstd-compressed."""
    import struct

    dictionary = zstandard.train_dictionary(2048, samples)
    content = dictionary.as_bytes()
    if compressed:
        content = zstandard.ZstdCompressor().compress(content)
    return struct.pack("<II", 0x184D2A5D, len(content)) + content, dictionary


@pytest.mark.parametrize("compressed_dictionary", [False, True])
def test_a_warc_zst_with_its_dictionary_is_read(tmp_path, compressed_dictionary):
    pages = [("response", f"https://a/{i}", "text/html", PAGE % (i, i), "200 OK") for i in range(40)]
    plain = _warc_records(tmp_path / "plain.warc", pages)
    frame, dictionary = _zstd_dictionary_frame(plain, compressed_dictionary)
    packer = zstandard.ZstdCompressor(dict_data=dictionary)
    members = [packer.compress(r) for r in plain]
    path = tmp_path / "c.warc.zst"
    path.write_bytes(frame + b"".join(members))
    records = _read(path)
    assert [p["url"] for p in _articles(records)] == [f"https://a/{i}" for i in range(40)]
    assert [p["source"] for p in _articles(records)][1] == f"c.warc.zst@{len(plain[0])}"
    # Damage in one frame: the dictionary still decodes the frames after it.
    members[5] = members[5][:6] + bytes(b ^ 0x5A for b in members[5][6:14]) + members[5][14:]
    path.write_bytes(frame + b"".join(members))
    urls = [p["url"] for p in _articles(_read(path))]
    assert urls == [f"https://a/{i}" for i in range(40) if i != 5]


def test_a_jsonl_zst_with_a_dictionary_frame_is_read(tmp_path):
    lines = [_jsonl([a]) for a in ARTICLES]
    frame, dictionary = _zstd_dictionary_frame(lines * 20, compressed=True)
    path = tmp_path / "a.jsonl.zst"
    path.write_bytes(frame + zstandard.ZstdCompressor(dict_data=dictionary).compress(b"".join(lines)))
    assert [r["title"] for r in _read(path)] == [a["title"] for a in ARTICLES]


def test_a_zst_dictionary_frame_cut_short_is_one_unreadable_record(tmp_path):
    frame, _ = _zstd_dictionary_frame([_jsonl([a]) for a in ARTICLES] * 20, compressed=False)
    path = tmp_path / "a.jsonl.zst"
    path.write_bytes(frame[: len(frame) // 2])
    [record] = _read(path)
    assert record["reason"] == "unreadable" and "dictionary" in record["detail"]


def test_a_wrong_content_length_loses_only_that_record(tmp_path):
    path = tmp_path / "c.warc"
    _warc(path, [("response", f"https://a/{i}", "text/html", PAGE % (i, i), "200 OK") for i in range(3)], False)
    data = path.read_bytes()
    second = data.index(b"WARC/1.0", 1)
    length = data.index(b"Content-Length: ", second)
    path.write_bytes(data[:length] + data[length:].replace(b"Content-Length: 2", b"Content-Length: 1", 1))
    records = _read(path)
    assert [p["url"] for p in _articles(records)][::2] == ["https://a/0", "https://a/2"]


def test_read_articles_transform_counts_warc_skips_and_reads_ranges(tmp_path, test_pipeline):
    from apache_beam.metrics import MetricsFilter

    from pipelines.read import PlannedInputs  # noqa: F401  (the transform under test reads the plan)

    _warc(tmp_path / "c.warc", [("request", "https://a/1", "text/html", b"", None),
                                ("response", "https://a/1", "text/html", PAGE % (1, 1), "200 OK"),
                                ("metadata", "https://a/1", "application/warc-fields", b"x: y\r\n", None)], False)
    (tmp_path / "a.jsonl").write_bytes(_jsonl(ARTICLES))
    files = split_ranges([_unit(tmp_path / "c.warc"), _unit(tmp_path / "a.jsonl")], range_bytes=200)
    assert len(files) > 3
    plan = str(tmp_path / "plan.jsonl")
    write_plan(files, plan)
    whole = [r["source"] for r in _read(tmp_path / "a.jsonl")]
    p = test_pipeline()
    out = p | ReadArticles(plan, max_bytes=1 << 20)
    assert_that(out["articles"] | beam.Map(lambda r: r["source"]), equal_to(whole + ["c.warc@0"][:0]
                                                                            + [_warc_page_source(tmp_path)]))
    result = p.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed for c in result.metrics().query(MetricsFilter())["counters"]}
    assert counters["warc_skipped_request"] == 1 and counters["warc_skipped_metadata"] == 1
    assert counters["files"] == 2 and counters["articles"] == len(ARTICLES) + 1


def _warc_page_source(tmp_path) -> str:
    [page] = _articles(_read(tmp_path / "c.warc"))
    return page["source"]


@pytest.mark.parametrize("compression", ["gzip", "bzip2", "zstd"])
def test_a_cut_compressed_jsonl_keeps_every_line_that_decompressed(tmp_path, compression):
    data = _jsonl([{"title": f"t{i}", "text": f"body number {i} " * 5} for i in range(20_000)])  # 2.3 MB
    packed = COMPRESS[compression](data)  # bzip2 blocks are 900 kB: a cut keeps whole blocks only
    cut = packed[: len(packed) * 2 // 3]
    # What a plain decompressor recovers from the cut file: its complete lines must all be articles.
    recovered = {"gzip": lambda: zlib_partial(cut), "bzip2": lambda: bz2.BZ2Decompressor().decompress(cut),
                 "zstd": lambda: zstandard.ZstdDecompressor().decompressobj().decompress(cut)}[compression]()
    path = tmp_path / ("a.jsonl" + SUFFIX[compression])
    path.write_bytes(cut)
    records = _read(path)
    assert len(_articles(records)) == recovered.count(b"\n") > 1000
    assert records[-1]["reason"] == "unreadable" and "truncated" in records[-1]["detail"]
    assert "which are kept" in records[-1]["detail"]


def zlib_partial(data: bytes) -> bytes:
    import zlib

    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)


# --- the same articles whatever the container (shared data) -------------------

def _bbc(shared_data, n=60) -> list[dict]:
    paths = sorted((shared_data / "bbc-news" / "articles").rglob("*.txt"))[::15][:n]
    out = []
    for path in paths:
        [raw] = list(parse_payload(path.read_bytes(), str(path), path.name, "text"))
        out.append({"title": raw["title"], "text": raw["text"], "path": path})
    return out


def _clean_titles_and_texts(records) -> list[tuple]:
    from pipelines.clean import clean_article

    cleaned = [clean_article(r) for r in _articles(records)]
    return [(a["title"], a["text"]) for a in cleaned if "reason" not in a]


def test_bbc_articles_are_the_same_in_every_container(shared_data, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    items = _bbc(shared_data)
    rows = [{"title": a["title"], "text": a["text"]} for a in items]
    folder = tmp_path / "txt"
    folder.mkdir()
    for n, a in enumerate(items):
        (folder / f"{n:03d}.txt").write_bytes(a["path"].read_bytes())
    (tmp_path / "all.jsonl.gz").write_bytes(gzip.compress(_jsonl(rows)))
    (tmp_path / "all.json").write_bytes(json.dumps(rows, ensure_ascii=False).encode())
    pq.write_table(pa.Table.from_pylist(rows), str(tmp_path / "all.parquet"), row_group_size=16)
    (tmp_path / "all.csv").write_bytes(_csv_bytes([(r["title"], r["text"]) for r in rows], header=("title", "text")))
    as_txt = _clean_titles_and_texts(r for p in sorted(folder.iterdir()) for r in _read(p))
    assert len(as_txt) == len(items)
    for name in ("all.jsonl.gz", "all.json", "all.parquet", "all.csv"):
        # The entity stage reads only title and text, so the same clean title
        # and text are the same entities and entity counts.
        assert _clean_titles_and_texts(_read(tmp_path / name)) == as_txt, name


def test_a_warc_of_the_extraction_benchmark_scores_as_its_html_files(shared_data, tmp_path):
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("newsbeam_eval_clean", REPO / "scripts" / "evaluation" / "clean.py")
    evaluation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evaluation)
    from pipelines.clean import clean_article

    data = shared_data / "article-extraction-benchmark"
    truth = json.loads((data / "ground-truth.json").read_text(encoding="utf-8"))
    ids = sorted(i for i in truth if (data / "html" / f"{i}.html.gz").exists())[:25]
    pages = {i: gzip.decompress((data / "html" / f"{i}.html.gz").read_bytes()) for i in ids}
    path = tmp_path / "bench.warc.gz"
    _warc(path, [rec for i in ids for rec in (
        ("request", truth[i]["url"], "text/html", b"", None),
        ("response", truth[i]["url"], "text/html", pages[i], "200 OK"))], True)

    def f1(raw: dict, gold: str) -> float:
        article = clean_article(raw, min_words=0)
        return evaluation.score(article.get("text") if "reason" not in article else None, gold)[2]

    from_html = [f1(next(parse_payload(pages[i], f"{i}.html", f"{i}.html", "html")), truth[i]["articleBody"])
                 for i in ids]
    records = _read(path, max_bytes=10 << 20)
    assert sum(1 for r in records if r.get("skipped") == "request") == len(ids)
    warc_pages = _articles(records)
    assert [p["url"] for p in warc_pages] == [truth[i]["url"] for i in ids]
    from_warc = [f1(p, truth[i]["articleBody"]) for p, i in zip(warc_pages, ids)]
    assert from_warc == from_html
    assert sum(from_warc) / len(ids) > 0.8  # and the extraction is the real one, not an empty match


def test_files_of_many_records_without_any_are_one_empty_record(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"title": pa.array([], pa.string()), "text": pa.array([], pa.string())}),
                   str(tmp_path / "none.parquet"))
    (tmp_path / "none.warc").write_bytes(b"")
    (tmp_path / "none.jsonl.gz").write_bytes(gzip.compress(b"\n\n"))
    for name in ("none.parquet", "none.warc", "none.jsonl.gz"):
        [record] = _read(tmp_path / name)
        assert record["reason"] == "empty", name
