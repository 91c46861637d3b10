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
    parse_json,
    parse_payload,
    read_limited,
    read_plan,
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
