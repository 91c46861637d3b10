"""Read stage: planned inputs -> raw article records (or rejected records).

The launcher plans files (``pipelines.plan``) and cuts big uncompressed JSONL
files into byte ranges (``split_ranges``); ``read_unit`` turns one planned
unit into records, one record in memory at a time for files of many records
(JSONL, JSON arrays, CSV/TSV, Parquet, WARC), the whole file for one-article
formats (text, HTML, a single JSON object); gzip, bzip2 and zstd are
decompressed in bounded steps (``DecompressingReader``). Files are opened
through ``FileSystems`` so the same code reads local paths, ``gs://``,
``s3://`` and ``hdfs://``; ``parse_payload`` is the same core over bytes.

A raw article is a dict with ``id``, ``source``, ``format`` ('text', 'json',
'csv', 'parquet' or 'html'), ``title``, ``text`` (the body, or the whole page
for HTML), ``author``, ``published`` (as written in the source), ``url`` and
``language_hint``; pages from a WARC file add ``crawled``. WARC records that
are no page come out as ``{"skipped": kind}`` markers, which ReadFileFn
counts.
"""

from __future__ import annotations

import bz2
import codecs
import collections
import csv
import datetime
import io
import json
import re
import unicodedata
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields, replace

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines.records import rejected, sha256_hex, tag_rejected

__all__ = [
    "InputFile",
    "split_ranges",
    "read_unit",
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
CSV_SUFFIXES = (".csv",)
TSV_SUFFIXES = (".tsv",)
PARQUET_SUFFIXES = (".parquet",)
WARC_SUFFIXES = (".warc", ".arc")
COMPRESSIONS = {".gz": "gzip", ".bz2": "bzip2", ".zst": "zstd"}
SUPPORTED = (".txt .md .json .jsonl .ndjson .html .htm .csv .tsv .warc .arc (each optionally .gz .bz2 .zst), "
             ".parquet")

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
# UTF-16 without a byte-order mark: at least this share of its code units has a
# NUL high byte (a Cyrillic or Greek text's spaces and punctuation are ~15 %), at
# most this share a NUL low byte (U+0100, U+0200, ... are rare); and as UTF-16
# or UTF-32 this share of the characters is printable.
WIDE_MIN_NUL_SHARE = 0.1
WIDE_MAX_STRAY_NUL_SHARE = 0.02
WIDE_MIN_PRINTABLE = 0.95
# Fewer characters than this do not show an encoding: by where NULs fall, and
# (random bytes look like 8 plausible characters 1 time in 200) by what decodes.
WIDE_MIN_CHARS = 8
WIDE_MIN_UNSPACED_CHARS = 16
# Past --max-bytes of output, a compressed stream may not grow beyond this
# many times the compressed bytes read so far (TooLarge: a bomb), so a bomb
# stops after inflating a bounded multiple of its size even in a stream read
# record by record. News compresses 3-4x (BBC JSONL: gzip 2.8x, bzip2 3.8x,
# zstd 3.1x); the same articles 20 times over stay at 2.8x and 3.8x in gzip
# and bzip2 (small windows) but reach 74x with zstd -19 (8 MiB window); bombs
# reach 1,000x (gzip) and 100,000x or more (bzip2, zstd).
MAX_COMPRESSION_RATIO = {"gzip": 100, "bzip2": 100, "zstd": 1000}
# zstd has no output bound per call: feeding it this little input at a time
# bounds one call's output (at most ~256 blocks of 128 KiB).
ZSTD_FEED = 1024
READ_CHUNK = 1 << 16
# Rows decoded from Parquet at a time: bounds memory whatever the row group size.
PARQUET_BATCH_ROWS = 256
# Uncompressed JSONL files above this are read as byte ranges of about this
# size, each a unit of work of its own (Beam's text sources split at 64 MiB too).
RANGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class InputFile:
    """One unit of reading, as planned by the launcher: a whole file, or the
    byte range [start, end) of an uncompressed JSONL file (the lines that
    start in it)."""

    path: str  # what FileSystems opens
    source: str  # the path as the user gave it (reported in every record)
    key: str  # path relative to the input root: the machine-independent part of ids
    size: int = -1  # bytes this unit reads (the file, or end - start): what a chunk of work weighs
    mtime: float = -1.0  # last modification time (seconds) when planned: incremental runs compare it
    start: int = 0  # first byte of the range
    end: int = -1  # end of the range (exclusive); -1: the end of the file
    file_size: int = -1  # size of the whole file (equal to size unless the file is split)

    @property
    def is_range(self) -> bool:
        return self.start > 0 or self.end >= 0


_UTF_BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
             (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


def utf_bom_encoding(head: bytes) -> str | None:
    """'utf-16' or 'utf-32' when the bytes start with that encoding's byte-order mark."""
    return next((encoding for bom, encoding in _UTF_BOMS if head.startswith(bom)), None)


def wide_encoding(head: bytes) -> str | None:
    """The UTF-16 or UTF-32 encoding of a file from its first bytes: by its
    byte-order mark, else by where its NULs fall. Without a mark (Windows tools
    and some exporters write none) text of any alphabet shows NUL high bytes
    in its spaces, digits and punctuation, in one byte of two (UTF-16) or in
    the top two of four (UTF-32), where a binary file has NULs in every
    position; what decodes must also be printable text."""
    if bom := utf_bom_encoding(head):
        return bom
    if b"\x00" not in head:
        return _unspaced_utf16(head)
    four = head[:len(head) - len(head) % 4]
    units = len(four) // 4
    if units >= 4:
        # A code point's top byte is always NUL, the next one but above U+FFFF.
        z = [four[i::4].count(0) for i in range(4)]
        if z[3] == units and z[2] >= (1 - WIDE_MIN_NUL_SHARE) * units and z[0] < units:
            return _printable_as(four, "utf-32-le")
        if z[0] == units and z[1] >= (1 - WIDE_MIN_NUL_SHARE) * units and z[3] < units:
            return _printable_as(four, "utf-32-be")
    two = head[:len(head) - len(head) % 2]
    units = len(two) // 2
    if units < WIDE_MIN_CHARS:
        return None
    low, high = two[0::2].count(0), two[1::2].count(0)
    if high >= WIDE_MIN_NUL_SHARE * units and low <= WIDE_MAX_STRAY_NUL_SHARE * units:
        return _printable_as(two, "utf-16-le")
    if low >= WIDE_MIN_NUL_SHARE * units and high <= WIDE_MAX_STRAY_NUL_SHARE * units:
        return _printable_as(two, "utf-16-be")
    return _unspaced_utf16(head)


# Bytes that no UTF-8 or legacy 8-bit text holds: C0 controls but tab, newline,
# vertical tab, form feed, return, and the escape that starts ISO-2022's shifts.
_CONTROL_BYTES = re.compile(b"[\x00-\x08\x0e-\x1a\x1c-\x1f]")


def _unspaced_utf16(head: bytes) -> str | None:
    """UTF-16 without a byte-order mark of text whose NULs do not show it:
    Chinese, Japanese, Thai written without spaces, Korean full of U+AC00.
    Decoded in the right byte order such text is letters of its script and
    common Han characters; text in any 8-bit or CJK multi-byte encoding read
    as UTF-16 is not (its byte pairs fall on rare ideographs, Yi, symbols,
    private-use or lone surrogates), nor is binary data or a byte repeated."""
    if len(head) < 2 * WIDE_MIN_UNSPACED_CHARS:
        return None
    try:  # UTF-8 (and ASCII) text has no control bytes; Thai UTF-16 is all bytes below 0x80 but has them
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        if not _CONTROL_BYTES.search(head):
            return None
    except UnicodeDecodeError:
        pass
    two = head[:len(head) - len(head) % 2]
    for encoding in ("utf-16-le", "utf-16-be"):
        try:
            text = codecs.getincrementaldecoder(encoding)().decode(two, final=False)
        except UnicodeDecodeError:
            continue
        if len(text) >= WIDE_MIN_UNSPACED_CHARS and len(set(text)) >= WIDE_MIN_UNSPACED_CHARS // 2 \
                and sum(map(_plausible_char, text)) >= WIDE_MIN_PRINTABLE * len(text):
            return encoding
    return None


def _plausible_char(ch: str) -> bool:
    """A character text in some script is made of: ASCII, the alphabets below
    U+2000, punctuation and symbols, CJK punctuation and kana, Hangul (Korean
    has spaces, but its commonest syllable 가 is U+AC00, whose NUL low byte
    hides the NULs' pattern), emoji, and the Han characters of everyday text
    (_common_han)."""
    o = ord(ch)
    if o < 0x2000:
        return ch.isprintable() or ch in "\t\n\r"
    if o <= 0x2BFF or 0x3000 <= o <= 0x33FF or 0xFF00 <= o <= 0xFFEF or 0xAC00 <= o <= 0xD7A3 \
            or 0x1F000 <= o <= 0x1FAFF:
        return True
    return 0x4E00 <= o <= 0x9FFF and ch in _common_han()


_COMMON_HAN = None


def _common_han() -> frozenset[str]:
    """The level-1 Han characters of GB2312 (3,755), Big5 (5,401) and JIS X 0208
    (2,965): about a third of the 20,992 in U+4E00-U+9FFF, and nearly every
    character of everyday Chinese and Japanese text. Built from the codecs once."""
    global _COMMON_HAN
    if _COMMON_HAN is None:
        both = [*range(0x40, 0x7F), *range(0x80, 0xFD)]
        tables = (("gb2312", range(0xB0, 0xD8), range(0xA1, 0xFF)),
                  ("big5", range(0xA4, 0xC7), [*range(0x40, 0x7F), *range(0xA1, 0xFF)]),
                  ("shift_jis", range(0x88, 0x99), both))
        _COMMON_HAN = frozenset(
            ch for codec, leads, trails in tables for lead in leads for trail in trails
            for ch in bytes((lead, trail)).decode(codec, errors="ignore") if "\u4e00" <= ch <= "\u9fff")
    return _COMMON_HAN


def _printable_as(head: bytes, encoding: str) -> str | None:
    try:  # not final: the sniffed bytes may end inside a surrogate pair
        text = codecs.getincrementaldecoder(encoding)().decode(head, final=False)
    except UnicodeDecodeError:
        return None
    if not text or "\x00" in text:
        return None
    printable = sum(ch.isprintable() or ch in "\t\n\r" for ch in text)
    return encoding if printable >= WIDE_MIN_PRINTABLE * len(text) else None


class _AsUTF8(io.RawIOBase):
    """A UTF-16 or UTF-32 stream read as UTF-8, a chunk at a time, so that the
    line and JSON readers (which work on UTF-8 bytes) read it as they read
    any other file. Ids and sources then count bytes of the UTF-8 text."""

    def __init__(self, stream, encoding: str):
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        self._pending = b""
        self._eof = False

    def readable(self):
        return True

    def readinto(self, buffer) -> int:
        while not self._pending and not self._eof:
            chunk = self._stream.read(READ_CHUNK)
            self._eof = not chunk
            self._pending = self._decoder.decode(chunk, final=self._eof).encode("utf-8")
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def _as_utf8(stream):
    """The buffered stream itself, or a UTF-8 view of it when it starts with a UTF-16/32 byte-order mark."""
    encoding = wide_encoding(_peek(stream))
    return io.BufferedReader(_AsUTF8(stream, encoding), buffer_size=READ_CHUNK) if encoding else stream


def split_ranges(files: Iterable[InputFile], range_bytes: int | None = None) -> list[InputFile]:
    """The planned files with every uncompressed JSONL file of more than
    ``range_bytes`` cut into byte ranges of about that size (the lines that
    start in each), so that one big dump is read by every worker; other files
    as they are. The cut depends only on the file's size, so every attempt
    of a run cuts alike."""
    range_bytes = RANGE_BYTES if range_bytes is None else range_bytes
    if range_bytes <= 0:
        raise ValueError("range_bytes must be positive")
    out: list[InputFile] = []
    for item in files:
        if item.is_range or item.size <= range_bytes or format_of(item.path) != ("jsonl", None):
            out.append(item)
            continue
        count = -(-item.size // range_bytes)
        bounds = [item.size * i // count for i in range(count + 1)]
        out.extend(replace(item, start=lo, end=hi, size=hi - lo, file_size=item.size)
                   for lo, hi in zip(bounds, bounds[1:]))
    return out


def format_of(path: str) -> tuple[str | None, str | None]:
    """(format, compression) from a file name: format one of 'text', 'json',
    'jsonl', 'html', 'csv', 'tsv', 'parquet', 'warc' or None; compression
    'gzip', 'bzip2', 'zstd' or None."""
    name = path.lower()
    compression = None
    for suffix, kind in COMPRESSIONS.items():
        if name.endswith(suffix):
            compression, name = kind, name[: -len(suffix)]
            break
    for suffixes, fmt in (
        (TEXT_SUFFIXES, "text"),
        (JSON_SUFFIXES, "json"),
        (JSONL_SUFFIXES, "jsonl"),
        (HTML_SUFFIXES, "html"),
        (CSV_SUFFIXES, "csv"),
        (TSV_SUFFIXES, "tsv"),
        (WARC_SUFFIXES, "warc"),
    ):
        if name.endswith(suffixes):
            return fmt, compression
    if name.endswith(PARQUET_SUFFIXES) and compression is None:
        return "parquet", None  # compressed inside already
    return None, compression


def article_id(key: str, record_no: int, payload: bytes | str) -> str:
    """Stable id from where the record sits under the input root and what it holds.

    The content hash is part of it so that a file edited between two runs is a
    new article (which dedupe can then fold into the old one) rather than the
    old id with different text.
    """
    return sha256_hex(f"{key}\x00{record_no}\x00{sha256_hex(payload)}")[:20]


class TooLarge(Exception):
    pass


class Truncated(EOFError):
    pass


class CorruptStream(OSError):
    pass


class _Counting(io.RawIOBase):
    """A raw stream that counts the bytes read from it."""

    def __init__(self, stream):
        self._stream = stream
        self.count = 0

    def readable(self):
        return True

    def read(self, n=-1):
        data = self._stream.read(n)
        self.count += len(data)
        return data

    def seekable(self):
        return self._stream.seekable()

    def seek(self, offset, whence=io.SEEK_SET):
        return self._stream.seek(offset, whence)

    def tell(self):
        return self._stream.tell()


_ZSTD_FRAME = b"\x28\xb5\x2f\xfd"  # how a zstd frame starts
# How every member (gzip), stream (bzip2) or frame (zstd) starts: where
# reading a compressed WARC can resume after a bad one.
_MEMBER_MAGIC = {
    "gzip": re.compile(re.escape(b"\x1f\x8b\x08")),  # ID1, ID2 and CM=deflate
    "bzip2": re.compile(re.escape(b"BZh") + b"[1-9]" + re.escape(b"1AY&SY")),  # level, then the block magic
    "zstd": re.compile(re.escape(_ZSTD_FRAME)),
}
# A .warc.zst may open with its dictionary in a skippable frame of this magic
# (IIPC's WARC-zstd, as Archive Team's wget-at writes it); the dictionary may
# itself be zstd-compressed.
_ZSTD_DICT_FRAME = b"\x5d\x2a\x4d\x18"
MAX_ZSTD_DICT_BYTES = 64 << 20


def _decompressor(compression: str, zstd_dict=None):
    if compression == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if compression == "bzip2":
        return bz2.BZ2Decompressor()
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor(dict_data=zstd_dict).decompressobj()
    raise ValueError(f"unknown compression {compression!r}")


class DecompressingReader(io.RawIOBase):
    """Decompress ``stream`` (gzip, bzip2 or zstd; concatenated members or
    frames included) in bounded steps.

    Output is produced at most a chunk at a time, so nothing is ever inflated
    whole; past ``floor`` bytes of output it must stay within
    MAX_COMPRESSION_RATIO (by compression) times the compressed input read (TooLarge
    otherwise: a decompression bomb). A stream that ends inside a member is
    Truncated. Such an error (and a corrupt stream's) first ends the output
    as if the stream ended, so that all that decompressed before it reaches
    the reader (a buffered reader drops what it holds when its raw stream
    raises), and is raised by ``check()`` once the reader is done.
    """

    def __init__(self, stream, compression: str, floor: int, ratio: int | None = None):
        self._source = _Counting(stream)
        self._compression = compression
        self._decompressor = _decompressor(compression)
        self._floor = floor
        self._ratio = ratio or MAX_COMPRESSION_RATIO[compression]
        self._pending = b""  # compressed input not yet given to the decompressor
        self._out = b""
        self._at = 0  # how much of _out was handed out
        self.error: Exception | None = None
        self._started = False  # inside a member: EOF now is a truncation
        self._source_done = False
        self.produced = 0
        self._member_start = 0  # where the member being read starts in ``stream``
        # (output offset, stream offset) of the latest members' starts: a reader
        # that fails at some output offset names the member to give up by it.
        self._members: collections.deque = collections.deque(maxlen=4096)
        self._zstd_dict = None

    def _new_decompressor(self):
        return _decompressor(self._compression, self._zstd_dict)

    def _fill(self, n: int) -> None:
        """Read on until ``_pending`` holds ``n`` bytes or the source ends."""
        while len(self._pending) < n and not self._source_done:
            more = self._source.read(max(READ_CHUNK, n - len(self._pending)))
            self._source_done = not more
            self._pending += more

    def _take_zstd_dictionary(self) -> None:
        """The dictionary frame at the start of a .zst (``_pending`` starts
        with it): loaded for every frame that follows, and consumed."""
        import zstandard

        self._fill(8)
        size = int.from_bytes(self._pending[4:8], "little") if len(self._pending) >= 8 else -1
        if size < 0 or size > MAX_ZSTD_DICT_BYTES:
            raise CorruptStream(f"zstd dictionary frame of {size} bytes (at most {MAX_ZSTD_DICT_BYTES})")
        self._fill(8 + size)
        if len(self._pending) < 8 + size:
            raise Truncated("zstd stream ends inside its dictionary frame (truncated file)")
        content, self._pending = self._pending[8:8 + size], self._pending[8 + size:]
        if content[:4] == _ZSTD_FRAME:
            content = zstandard.ZstdDecompressor().decompress(content, max_output_size=MAX_ZSTD_DICT_BYTES)
        self._zstd_dict = zstandard.ZstdCompressionDict(content)
        self._decompressor = self._new_decompressor()

    def readable(self):
        return True

    def _check(self):
        if self.produced > self._floor and self.produced > self._ratio * max(self._source.count, 1):
            raise TooLarge(
                f"{self._compression} stream decompresses to more than {self._ratio}x its compressed size "
                f"after {self.produced} bytes: a decompression bomb")

    def _next_input(self) -> bytes | None:
        """Compressed bytes for the next call; None at the end of the stream."""
        d = self._decompressor
        if self._compression == "gzip" and d.unconsumed_tail:
            return d.unconsumed_tail
        if self._compression == "bzip2" and self._started and not d.needs_input:
            return b""  # bzip2 holds more output for the input it has
        if not self._pending and not self._source_done:
            self._pending = self._source.read(READ_CHUNK)
            self._source_done = not self._pending
        while not self._started and self._pending and not self._pending.strip(b"\x00"):
            # NUL padding after the last member (tape-style gzip) is no new member.
            self._pending = self._source.read(READ_CHUNK)
            self._source_done = not self._pending
        if (self._compression == "zstd" and not self._started and self.produced == 0 and self._zstd_dict is None
                and self._pending[:4] == _ZSTD_DICT_FRAME):
            self._take_zstd_dictionary()
            return self._next_input()
        if not self._pending:
            if self._started:
                raise Truncated(f"{self._compression} stream ends early (truncated file)")
            return None
        if not self._started:
            self._member_start = self._position() - len(self._pending)
            self._members.append((self.produced, self._member_start))
        limit = ZSTD_FEED if self._compression == "zstd" else len(self._pending)
        data, self._pending = self._pending[:limit], self._pending[limit:]
        return data

    def _position(self) -> int:
        try:
            return self._source.tell()
        except (OSError, AttributeError, ValueError):
            return -(1 << 62)  # cannot tell: skip_to_next_member will not seek

    def _step(self) -> bool:
        """Produce some output; False at the end of the stream."""
        data = self._next_input()
        if data is None:
            return False
        d = self._decompressor
        self._started = True
        out = d.decompress(data) if self._compression == "zstd" else d.decompress(data, READ_CHUNK)
        self.produced += len(out)
        self._out += out
        self._check()
        if d.eof:
            # Concatenated members (gzip) and frames (zstd, bzip2) continue the stream.
            self._pending = d.unused_data + self._pending
            self._decompressor = self._new_decompressor()
            self._started = False
        return True

    def readinto(self, buffer) -> int:
        while self._at >= len(self._out):
            self._out, self._at = b"", 0
            if self.error is not None:
                return 0
            try:
                if not self._step():
                    return 0
            except TooLarge:
                raise
            except EOFError as e:  # truncated: said by check(), after what came before
                self.error = e
            except Exception as e:  # zlib.error, OSError (bz2), ZstdError: one kind for every codec
                self.error = CorruptStream(f"corrupt {self._compression} data: {e}")
        n = min(len(buffer), len(self._out) - self._at)
        buffer[:n] = self._out[self._at:self._at + n]
        self._at += n
        return n

    def check(self) -> None:
        """Raise the error that ended the stream early, if one did."""
        if self.error is not None:
            raise self.error

    def skip_to_next_member(self, at_output: int | None = None) -> bool:
        """Give up a member (gzip; a bzip2 stream, a zstd frame: corrupt, or
        holding bytes the reader cannot use): the one being read, or the one
        holding output offset ``at_output``. Reading goes on from the next
        member header after its start in the compressed file (which must be
        seekable); False when there is none. What was decompressed past the member's start but not
        read is dropped. Bytes that look like a header but start no member
        fail deflate or the CRC and are skipped the same way, so this always
        moves forward."""
        # A WARC record's offset + length leaves out the CRLF CRLF that ends it: a member starting
        # within those 4 bytes is the one that follows the record, where reading failed.
        members = [m for m in self._members if at_output is None or m[0] <= at_output + 4]
        if not members or members[-1][1] < 0 or not self._source.seekable():
            return False
        out_start, start = members[-1]
        later = [m for m in self._members if m[0] > out_start]
        if later:  # already decompressed ahead: offsets go on from the member after it
            self.produced = later[0][0]
        self._members.clear()
        self._out, self._at, self.error = b"", 0, None
        self._decompressor, self._started = self._new_decompressor(), False
        magic = _MEMBER_MAGIC[self._compression]
        keep = 9  # longer than any magic's match less one byte: a header across two reads is found
        at = start + 1
        self._source.seek(at)
        data = b""
        while True:
            chunk = self._source.read(READ_CHUNK)
            data += chunk
            found = magic.search(data)
            if found:
                self._source.seek(at + found.start())
                self._pending, self._source_done = b"", False
                return True
            if not chunk:
                self._pending, self._source_done = b"", True
                return False
            tail = data[-keep:]
            at += len(data) - len(tail)
            data = tail


def open_decompressed(stream, compression: str | None, floor: int):
    """(a buffered binary stream of the decompressed content, a function that
    raises if decompression ended early); ``stream`` itself when uncompressed."""
    if compression is None:
        return stream, lambda: None
    reader = DecompressingReader(stream, compression, floor)
    return io.BufferedReader(reader, buffer_size=READ_CHUNK), reader.check


def read_limited(stream, max_bytes: int, compression: str | None = None) -> bytes:
    """Read at most ``max_bytes`` (after decompression), raising TooLarge past it.

    Decompressing in bounded chunks is what keeps a bomb from allocating its
    full expanded size.
    """
    decompressed, check = open_decompressed(stream, compression, max_bytes)
    data = decompressed.read(max_bytes + 1)
    if len(data) <= max_bytes:
        check()
    if len(data) > max_bytes:
        after = f" after {compression} decompression" if compression else ""
        raise TooLarge(f"larger than --max-bytes={max_bytes}{after}")
    return data


def looks_binary(data: bytes) -> bool:
    head = data[:BINARY_SNIFF_BYTES]
    if wide_encoding(head):  # UTF-16 and UTF-32 text has NULs but is text
        return False
    return b"\x00" in head


def _utf8_with_cp1252(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler: bytes that are not UTF-8 are read as cp1252.

    A UTF-8 feed with a bad byte is nearly always one that pasted legacy
    (cp1252) text; reading those bytes as cp1252 gives the letters back, where
    ``replace`` would lose them. cp1252's five unassigned bytes become U+FFFD.
    """
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return error.object[error.start:error.end].decode("cp1252", errors="replace"), error.end


UTF8_FALLBACK = "newsbeam-cp1252"
codecs.register_error(UTF8_FALLBACK, _utf8_with_cp1252)

# uchardet is fast (about 1 ms per 10 KB) but linear: a long file is judged by samples of it.
DETECT_SAMPLE_BYTES = 128 * 1024
_ESCAPED_RUN = re.compile("[\udc80-\udcff]+")
_C1_BYTES = re.compile(b"[\x80-\x9f]")
_NON_ASCII = re.compile("[^\x00-\x7f]")

# Encodings uchardet tells apart reliably: CJK multi-byte ones (whose byte
# pairs often happen to be valid UTF-8 too, so they are tried first) and code
# pages of other scripts than Latin. Its answer stands.
_MULTIBYTE_CODECS = frozenset((
    "shift_jis", "cp932", "euc_jp", "iso2022_jp", "gb18030", "gbk", "gb2312", "big5", "big5hkscs", "cp950",
    "euc_kr", "cp949", "iso2022_kr"))
_SCRIPT_CODECS = _MULTIBYTE_CODECS | frozenset((
    "cp1251", "koi8-r", "koi8-u", "cp866", "iso8859-5", "cp1253", "iso8859-7", "cp1255", "iso8859-8",
    "cp1256", "iso8859-6", "cp874", "tis-620"))
# Where news in a Latin-script language shipped before UTF-8 (its Windows code
# page first). For Latin text uchardet often names a code page of the right
# family but the wrong language, or a DOS or Mac one no web page used
# (Icelandic cp1252 as IBM852, Albanian as ISO-8859-13): its answer stands
# only when it is one of these for the language the text is in.
_LATIN_PAGES = {
    **dict.fromkeys(("bs", "cs", "hr", "hu", "pl", "ro", "sk", "sl", "sr"), ("cp1250", "iso8859-2")),
    **dict.fromkeys(("tr", "az", "ku"), ("cp1254", "iso8859-9")),
    **dict.fromkeys(("lt", "lv"), ("cp1257", "iso8859-13", "iso8859-4")),
    "et": ("cp1257", "cp1252", "iso8859-15"),
    **dict.fromkeys(("mt", "eo"), ("iso8859-3",)),
    "vi": ("cp1258",),
}
_WESTERN_PAGES = ("cp1252", "iso8859-15")
# The Windows code page that holds an ISO-8859 page's letters plus curly
# quotes, dashes and the euro in bytes 0x80-0x9F (C1 controls, never text, in ISO-8859).
_WINDOWS_OF = {"iso8859-1": "cp1252", "iso8859-15": "cp1252", "iso8859-2": "cp1250", "iso8859-7": "cp1253",
               "iso8859-8": "cp1255", "iso8859-9": "cp1254", "iso8859-13": "cp1257", "iso8859-4": "cp1257",
               "iso8859-6": "cp1256", "tis-620": "cp874"}
_LANGID = None


def _mostly_utf8(data: bytes) -> bool:
    """True when the bytes are UTF-8 with a few bad spots: at least as many
    valid non-ASCII characters as runs of bytes that are not UTF-8. Legacy
    single-byte text almost never forms valid multi-byte sequences."""
    text = data.decode("utf-8", errors="surrogateescape")
    bad_runs = _ESCAPED_RUN.findall(text)
    # Thai in TIS-620 forms 3-byte sequences (a vowel E0-E3, then two bytes A0-BF)
    # that decode to unassigned code points: those are not UTF-8 text.
    counts = collections.Counter(_NON_ASCII.findall(text))
    valid = sum(n for ch, n in counts.items() if unicodedata.category(ch) not in ("Cn", "Cc", "Co", "Cs"))
    return valid > 0 and valid >= len(bad_runs)


def _detect_sample(data: bytes) -> bytes:
    if len(data) <= 3 * DETECT_SAMPLE_BYTES:
        return data
    mid = len(data) // 2 - DETECT_SAMPLE_BYTES // 2
    return (data[:DETECT_SAMPLE_BYTES] + b"\n" + data[mid:mid + DETECT_SAMPLE_BYTES] + b"\n"
            + data[-DETECT_SAMPLE_BYTES:])


def _uchardet(sample: bytes) -> str | None:
    import cchardet

    name = cchardet.detect(sample).get("encoding")
    try:
        return codecs.lookup(name).name if name else None
    except LookupError:
        return None


def _language_of(sample: bytes) -> str:
    """The language of text whose accented letters may be misread: the rest carries it."""
    global _LANGID
    if _LANGID is None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        _LANGID = LanguageIdentifier.from_model_file(MODEL_FILE)
    return _LANGID.classify(sample[:8192].decode("cp1252", errors="replace"))[0]


def detect_encoding(data: bytes) -> str:
    """The legacy encoding of bytes that are not UTF-8, as a Python codec name.

    uchardet (faust-cchardet) names it; for Latin-script text its answer is
    checked against the code pages the text's language (py3langid) shipped in.
    """
    sample = _detect_sample(data)
    return _legacy_encoding(sample, _uchardet(sample))


def _legacy_encoding(sample: bytes, guess: str | None) -> str:
    if guess not in _SCRIPT_CODECS:
        pages = _LATIN_PAGES.get(_language_of(sample), _WESTERN_PAGES)
        guess = guess if guess in pages or (guess == "iso8859-1" and "cp1252" in pages) else pages[0]
    if guess in _WINDOWS_OF and (guess == "iso8859-1" or _C1_BYTES.search(sample)):
        guess = _WINDOWS_OF[guess]
    return "koi8-u" if guess == "koi8-r" else guess  # KOI8-U is KOI8-R with Ukrainian letters for box drawing


def decode_bytes(data: bytes) -> tuple[str, str]:
    """Decode text whatever its encoding: (text, encoding used).

    UTF-8 first (news files mostly are); then a CJK multi-byte encoding when
    uchardet names one; then UTF-8 with a few bad bytes, read as cp1252
    (``utf-8+cp1252``: a feed that pasted legacy text); then the legacy code
    page ``detect_encoding`` gives; cp1252, then latin-1, which maps every
    byte and so can never fail, as the last resort. ``scripts/evaluate.py
    encodings`` measures it against charset_normalizer, used before.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors=UTF8_FALLBACK), "utf-8-sig"
    if wide := wide_encoding(data[:BINARY_SNIFF_BYTES]):
        return data.decode(wide, errors="replace"), wide
    if shifted := _iso2022(data):
        return data.decode(shifted), shifted
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    sample = _detect_sample(data)
    guess = _uchardet(sample)
    if guess in _MULTIBYTE_CODECS:
        try:
            return data.decode(guess), guess
        except UnicodeDecodeError:
            guess = None
    if _mostly_utf8(sample):  # a sample: the check builds a string per non-ASCII character
        return data.decode("utf-8", errors=UTF8_FALLBACK), "utf-8+cp1252"
    for encoding in (_legacy_encoding(sample, guess), "cp1252"):
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            pass
    return data.decode("latin-1"), "latin-1"


def _iso2022(data: bytes) -> str | None:
    """ISO-2022-JP or -KR (Japanese and Korean mail and old news feeds): 7-bit,
    so valid UTF-8 too, but with ESC sequences that shift into the character
    set, which no other text has; uchardet names which one."""
    if b"\x1b$" not in data[:DETECT_SAMPLE_BYTES] or not data.isascii():
        return None
    guess = _uchardet(_detect_sample(data))
    if guess in ("iso2022_jp", "iso2022_kr"):
        try:
            data.decode(guess)
            return guess
        except UnicodeDecodeError:
            pass
    return None


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


def _json_article(text: str, source: str, key: str, record_no: int, payload: bytes | str,
                  where: str | None = None) -> dict:
    """One JSON document's text -> its article, or a rejected record (too deep,
    invalid, not an article); ``where`` names the document inside its file."""
    try:
        obj = parse_json(text)
    except JsonTooDeep as e:
        return rejected(source, STAGE, "too_deep", f"{where}: JSON {e}" if where else f"JSON {e}",
                        text[:RAW_LIMIT])
    except ValueError as e:
        return rejected(source, STAGE, "invalid_json",
                        f"{where} is not valid JSON: {e}" if where else f"not valid JSON: {e}", text)
    return _from_json_object(obj, source, key, record_no, payload)


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


def _record(source: str, key: str, position: int, payload: bytes | str, fmt: str, text: str, **fields) -> dict:
    record = {"id": article_id(key, position, payload), "source": source, "format": fmt, "title": None,
              "text": text, "author": None, "published": None, "url": None, "language_hint": None}
    record.update(fields)
    return record


def _parse_whole(data: bytes, source: str, key: str, fmt: str) -> Iterator[dict]:
    """The one article of a text, HTML or single-object JSON file."""
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
        yield _record(source, key, 0, data, "text", body, title=title)
    elif fmt == "html":
        yield _record(source, key, 0, data, "html", text)
    elif fmt == "json":
        yield _json_article(text, source, key, 0, data)
    else:
        raise ValueError(f"{fmt!r} is not a one-article format")


def _starts_array(head: bytes) -> bool:
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"[")


def _peek(stream, n: int = BINARY_SNIFF_BYTES) -> bytes:
    return stream.peek(n)[:n]


def _skip_line(stream) -> int:
    """Read through the end of the current line without keeping it; bytes read."""
    skipped = 0
    while True:
        piece = stream.readline(READ_CHUNK)
        skipped += len(piece)
        if not piece or piece.endswith(b"\n"):
            return skipped


def iter_jsonl(stream, source: str, key: str, max_bytes: int, start: int = 0, end: int = -1) -> Iterator[dict]:
    """Records of the JSON lines that start in [start, end) of ``stream`` (a
    buffered binary stream, seekable when ``start`` > 0), one line in memory
    at a time. A line is named ``path@BYTE`` (the offset of its first byte in
    the file, decompressed) and its id derives from that offset, so both are
    the same whether the file is read whole or in ranges, in parts or not."""
    if start > 0:
        # The file's first bytes decide whether it is binary for every range alike.
        stream.seek(0)
        binary = looks_binary(_peek(stream))
        if binary:
            return  # the range at 0 rejects the file once
        # As in Beam's text source: the line that straddles ``start`` belongs to the range before.
        stream.seek(start - 1)
        pos = start - 1 + _skip_line(stream)
    else:
        pos = 0
        if looks_binary(_peek(stream)):
            yield rejected(source, STAGE, "binary", "file looks binary (NUL bytes), not JSON lines",
                           repr(_peek(stream, 200)))
            return
    any_line = False
    while end < 0 or pos < end:
        line = stream.readline(max_bytes + 1)
        if not line:
            break
        line_pos = pos
        pos += len(line)
        line_source = f"{source}@{line_pos}"
        if len(line) > max_bytes and not line.endswith(b"\n"):
            pos += _skip_line(stream)
            any_line = True
            yield rejected(line_source, STAGE, "too_large", f"line longer than --max-bytes={max_bytes}",
                           _raw(line[:RAW_LIMIT]))
            continue
        text = decode_bytes(line)[0].rstrip("\r\n")
        if not text.strip():
            continue  # blank separator lines (also a lone BOM or Unicode spaces) are not records
        any_line = True
        yield _json_article(text, line_source, key, line_pos, text, where=f"line at byte {line_pos}")
    if start == 0 and end < 0 and not any_line:
        yield rejected(source, STAGE, "empty", "file is empty or holds only whitespace lines")


_SKIPPED = object()
_STRING_STOP = re.compile(r'["\\]')
_VALUE_STOP = re.compile(r'["{}\[\]]')


def iter_json_array(stream, source: str, key: str, max_bytes: int) -> Iterator[dict]:
    """Records of a JSON array of articles, one element in memory at a time
    (``path#N``, N from 1). ``json.JSONDecoder.raw_decode`` parses each
    element as soon as it is complete, with the same guards as parse_json.
    (ijson's C backend, the usual choice, crashes the process on a number of
    5,000 digits: a worker must survive any input.)"""
    decoder = json.JSONDecoder(parse_int=_parse_int)
    utf8 = codecs.getincrementaldecoder("utf-8")(errors=UTF8_FALLBACK)
    buf, i, eof = "", 0, False

    def fill(want: int) -> bool:
        nonlocal buf, i, eof
        if eof:
            return False
        data = stream.read(want)
        eof = not data
        buf = buf[i:] + utf8.decode(data, final=eof)
        i = 0
        return not eof or bool(buf)

    def skip_ws() -> str:
        nonlocal i
        while True:
            while i < len(buf) and buf[i] in " \t\r\n\ufeff":
                i += 1
            if i < len(buf):
                return buf[i]
            if not fill(READ_CHUNK):
                return ""

    def skip_value() -> bool:
        """Move past the object, array or string at ``i`` without keeping it
        (an element over --max-bytes); False when it does not end."""
        nonlocal buf, i
        if buf[i] not in "{[\"":
            return False
        depth, in_string = 0, False
        while True:
            match = (_STRING_STOP if in_string else _VALUE_STOP).search(buf, i)
            if match is None:
                i = len(buf)
                if not fill(READ_CHUNK):
                    return False
                continue
            c, i = match.group(), match.end()
            if in_string:
                if c == "\\":
                    if i >= len(buf) and not fill(READ_CHUNK):
                        return False
                    i += 1
                else:
                    in_string = False
            elif c == '"':
                in_string = True
            elif c in "{[":
                depth += 1
            else:
                depth -= 1
            if depth == 0 and not in_string:
                return True

    if looks_binary(_peek(stream)):
        yield rejected(source, STAGE, "binary", "file looks binary (NUL bytes), not JSON", repr(_peek(stream, 200)))
        return
    skip_ws()
    i += 1  # the '[' (the caller checked)
    n = 0
    while True:
        c = skip_ws()
        if c == "]" and n == 0:
            yield rejected(source, STAGE, "empty", "the JSON array holds no element")
            return
        if not c:
            yield rejected(f"{source}#{n + 1}", STAGE, "invalid_json", f"array ends early after element {n}")
            return
        n += 1
        element_source = f"{source}#{n}"
        want = READ_CHUNK
        while True:
            try:
                obj, j = decoder.raw_decode(buf, i)
                break
            except RecursionError:
                yield rejected(element_source, STAGE, "too_deep",
                               f"element {n}: JSON nested deeper than {MAX_JSON_DEPTH} levels; the rest of the "
                               "array is not read", buf[i:i + RAW_LIMIT])
                return
            except ValueError as e:
                if len(buf) - i > max_bytes:
                    raw = buf[i:i + RAW_LIMIT]
                    if not skip_value():
                        yield rejected(element_source, STAGE, "too_large",
                                       f"element {n} is larger than --max-bytes={max_bytes} and does not end; "
                                       "the rest of the array is not read", raw)
                        return
                    obj = _SKIPPED
                    break
                if not fill(want):  # the element cannot be completed: invalid, not just unfinished
                    yield rejected(element_source, STAGE, "invalid_json",
                                   f"element {n} is not valid JSON: {e}; the rest of the array is not read",
                                   buf[i:i + RAW_LIMIT])
                    return
                want *= 2  # geometric reads keep re-parsing a large element cheap
        if obj is _SKIPPED:  # skipped whole, never in memory
            yield rejected(element_source, STAGE, "too_large",
                           f"element {n} is larger than --max-bytes={max_bytes}", raw)
            text = ""
        else:
            text = buf[i:j]
            i = j
        if obj is _SKIPPED:
            pass
        elif json_depth(obj) > MAX_JSON_DEPTH:
            yield rejected(element_source, STAGE, "too_deep",
                           f"element {n}: JSON nested deeper than {MAX_JSON_DEPTH} levels", text[:RAW_LIMIT])
        elif len(text) > max_bytes:
            yield rejected(element_source, STAGE, "too_large",
                           f"element {n} is larger than --max-bytes={max_bytes}", text[:RAW_LIMIT])
        else:
            yield _from_json_object(obj, element_source, key, n, text)
        c = skip_ws()
        if c == ",":
            i += 1
        elif c == "]":
            return
        else:
            yield rejected(f"{source}#{n + 1}", STAGE, "invalid_json",
                           f"expected ',' or ']' after element {n}, found {c or 'the end of the file'!r}; "
                           "the rest of the array is not read", buf[i:i + 200])
            return


def _sniff_encoding(head: bytes) -> str:
    """The encoding of a stream from its first bytes (decode_bytes' choice, for streams)."""
    if head.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    if wide := wide_encoding(head):
        return wide
    if shifted := _iso2022(head):
        return shifted
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return "utf-8"
    except UnicodeDecodeError:
        encoding = decode_bytes(head)[1]
        return "utf-8" if encoding == "utf-8+cp1252" else encoding


class _RecordTooLarge(Exception):
    pass


def iter_csv(stream, source: str, key: str, max_bytes: int, delimiter: str = ",") -> Iterator[dict]:
    """Records of a CSV/TSV file with a header row (``path#N``, N the data
    row from 1), quoted multi-line fields included, one record in memory at a
    time. A record the csv module cannot parse (an unclosed quote, text after
    a closing quote) or longer than --max-bytes is rejected with its first
    line, and reading resumes on the line after that: a broken quote costs
    one row, not the rest of the file."""
    head = _peek(stream, READ_CHUNK)
    if not head.strip():
        yield rejected(source, STAGE, "empty", "file is empty or only whitespace")
        return
    if looks_binary(head):
        yield rejected(source, STAGE, "binary", "file looks binary (NUL bytes), not CSV", repr(head[:200]))
        return
    encoding = _sniff_encoding(head)
    errors = UTF8_FALLBACK if encoding.startswith("utf-8") else "replace"
    text = io.TextIOWrapper(stream, encoding=encoding, errors=errors, newline="")
    # The csv module's own limit is 128 KiB per field; records are bounded below instead.
    csv.field_size_limit(max(csv.field_size_limit(), max_bytes + 1))

    def physical_lines():
        while True:
            piece = text.readline(max_bytes + 1)
            if not piece:
                return
            if len(piece) > max_bytes and not piece.endswith(("\n", "\r")):
                # Drop the rest of an over-long line, so that it is one rejection, not many.
                while (rest := text.readline(READ_CHUNK)) and not rest.endswith(("\n", "\r")):
                    pass
            yield piece

    lines = physical_lines()
    pending: collections.deque[str] = collections.deque()
    header: list[str] | None = None
    n = 0
    while True:
        consumed: list[str] = []

        def feed(consumed: list[str]):
            size = 0
            while True:
                line = pending.popleft() if pending else next(lines, None)
                if line is None:
                    return
                consumed.append(line)
                size += len(line)
                if size > max_bytes:
                    raise _RecordTooLarge
                yield line

        reader = csv.reader(feed(consumed), delimiter=delimiter, strict=True)
        try:
            row = next(reader)
        except StopIteration:
            break
        except (csv.Error, _RecordTooLarge) as e:
            n += header is not None
            reason, detail = (("too_large", f"record longer than --max-bytes={max_bytes}")
                              if isinstance(e, _RecordTooLarge) else ("invalid_csv", f"cannot parse the record: {e}"))
            if header is None:
                yield rejected(source, STAGE, reason, f"header row: {detail}",
                               consumed[0][:RAW_LIMIT] if consumed else None)
                return
            pending.extendleft(reversed(consumed[1:]))
            yield rejected(f"{source}#{n}", STAGE, reason, f"row {n}: {detail}; reading resumes on its next line",
                           consumed[0][:RAW_LIMIT] if consumed else None)
            continue
        if not row or not any(cell.strip() for cell in row):
            continue  # blank lines separate nothing in CSV
        if header is None:
            header = [h.strip().lstrip("\ufeff") for h in row]
            continue
        n += 1
        raw = "".join(consumed)
        obj = {name: value for name, value in zip(header, row) if name}
        record = _from_json_object(obj, f"{source}#{n}", key, n, raw)
        if "reason" in record:
            record["raw"] = raw[:RAW_LIMIT]
        else:
            record["format"] = "csv"
        yield record
    if header is None:
        yield rejected(source, STAGE, "empty", "file has no header row")
    elif n == 0:
        yield rejected(source, STAGE, "empty", "file has a header row but no data row", ",".join(header)[:RAW_LIMIT])


def _json_value(value):
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return decode_bytes(value)[0]
    return str(value)


def iter_parquet(stream, source: str, key: str, max_bytes: int) -> Iterator[dict]:
    """Records of a Parquet file, one per row (``path#N``, N from 1), read a
    batch of one row group at a time with pyarrow (a Beam dependency)."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(stream)
    n = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
        for row in batch.to_pylist():
            n += 1
            row = {k: (_json_value(v) if isinstance(v, (datetime.datetime, datetime.date, bytes)) else v)
                   for k, v in row.items()}
            payload = json.dumps(row, ensure_ascii=False, sort_keys=True, default=_json_value)
            row_source = f"{source}#{n}"
            if len(payload) > max_bytes:
                yield rejected(row_source, STAGE, "too_large", f"row {n} is larger than --max-bytes={max_bytes}",
                               payload[:RAW_LIMIT])
                continue
            record = _from_json_object(row, row_source, key, n, payload)
            if "reason" not in record:
                record["format"] = "parquet"
            yield record
    if n == 0:
        yield rejected(source, STAGE, "empty", "Parquet file without rows")


_HTML_TYPES = ("text/html", "application/xhtml+xml")


def _counter_name(kind: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", kind.lower()).strip("_") or "unknown"


def _decode_html(payload: bytes, charset: str | None) -> str:
    """The page's text: the HTTP charset when it decodes the page, else decode_bytes."""
    if charset and not payload.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        try:
            return payload.decode(charset)
        except (LookupError, UnicodeDecodeError):
            pass
    return decode_bytes(payload)[0]


def _warc_page(record, max_bytes: int) -> tuple[str, tuple]:
    """What one WARC record is: ("skipped", (kind,)), ("rejected", (reason,
    detail, raw)) or ("page", (payload, text, url, crawled))."""
    kind = record.rec_type or "unknown"
    if kind != "response":
        return "skipped", (_counter_name(kind),)
    http = record.http_headers
    if http is None:
        return "skipped", ("response_not_http",)
    status = http.get_statuscode() or ""
    if not status.startswith("2"):
        return "skipped", (f"response_status_{status[:1] if status[:1].isdigit() else 'none'}xx",)
    content_type = (http.get_header("Content-Type") or "").lower()
    mime = content_type.split(";")[0].strip()
    if mime not in _HTML_TYPES:
        return "skipped", ("response_" + _counter_name(mime.split("/")[0] or "none"),)
    try:
        payload = record.content_stream().read(max_bytes + 1)
    except Exception as e:  # a broken chunked or gzip body: this record only
        return "rejected", ("unreadable", f"cannot decode the record's HTTP body: {type(e).__name__}: {e}", None)
    if len(payload) > max_bytes:
        return "rejected", ("too_large", f"page larger than --max-bytes={max_bytes}", None)
    if not payload.strip():
        return "rejected", ("empty", "response record with an empty body", None)
    if looks_binary(payload):
        return "rejected", ("binary", "HTML response whose body looks binary (NUL bytes)", repr(payload[:200]))
    match = re.search(r"charset=[\"']?([\w.:-]+)", content_type)
    return "page", (payload, _decode_html(payload, match and match.group(1)),
                    record.rec_headers.get_header("WARC-Target-URI"), record.rec_headers.get_header("WARC-Date"))


def iter_warc(stream, source: str, key: str, max_bytes: int, shift: int = 0, first: bool = True) -> Iterator[dict]:
    """Records of a WARC (or ARC) file: every HTTP ``response`` record with
    an HTML content type is a page (``path@BYTE``, the record's offset in the
    uncompressed file) for the HTML path of the clean stage; ``url`` is
    WARC-Target-URI, ``crawled`` the WARC-Date, and ``published`` is left to
    the page's own metadata (the crawl date is not the publication date).
    Every other record yields ``{"skipped": kind}`` so that it is counted,
    never lost silently. warcio reads it (chosen over FastWARC by
    scripts/bench_warc.py: both parse far faster than the HTML stage extracts,
    and warcio also reads ARC and writes the WARCs the tests build).

    ``shift`` is added to the offsets of a stream that is not the file's
    start and cannot seek, whose own offsets count from 0 (``first`` False:
    a later segment of a compressed WARC, see ``iter_warc_compressed``, which may
    hold no record)."""
    from warcio.archiveiterator import ArchiveIterator

    base = 0  # where the current iterator started in the stream
    any_record = not first
    while True:
        # warcio's offsets are the stream's own (tell()) when it can seek, so they stay right after a resync.
        records = ArchiveIterator(stream, arc2warc=True)
        last_end = base + shift
        try:
            for record in records:
                try:
                    what, value = _warc_page(record, max_bytes)
                except Exception as e:  # headers warcio parsed but that we cannot use: this record only
                    what, value = "rejected", ("unreadable", f"cannot read the WARC record: {type(e).__name__}: {e}",
                                               None)
                # Only now: warcio reads the record to its end to know where it starts.
                any_record = True
                offset = records.get_record_offset() + shift
                last_end = offset + records.get_record_length()
                page_source = f"{source}@{offset}"
                missing = getattr(record.raw_stream, "limit", 0) or 0
                if missing > 0:  # warcio hands out a cut record as if it were whole
                    yield rejected(page_source, STAGE, "unreadable",
                                   f"WARC record cut short ({missing} bytes of its Content-Length missing: "
                                   "the file is truncated)")
                elif what == "skipped":
                    yield {"skipped": value[0], "source": page_source}
                elif what == "rejected":
                    yield rejected(page_source, STAGE, *value)
                else:
                    payload, text, url, crawled = value
                    yield _record(page_source, key, offset, payload, "html", text, url=url, crawled=crawled)
            if not any_record:
                yield rejected(source, STAGE, "empty", "no WARC record in the file")
            return
        except (TooLarge, EOFError):
            raise
        except Exception as e:  # warcio's ArchiveLoadFailed: no WARC record where one should start
            seekable = getattr(stream, "seekable", lambda: False)()
            if not seekable:
                raise WarcGap(last_end, e) from e
            # The record at last_end may be whole (a bad one before it broke the
            # framing): try it, unless reading already failed right there.
            resume = _next_warc_record(stream, last_end if last_end > base else base + 1)
            where = f"bytes {last_end} to {resume}" if resume is not None else f"from byte {last_end} to the end"
            yield rejected(f"{source}@{last_end}", STAGE, "unreadable",
                           f"{where} hold no readable WARC record ({type(e).__name__}: {str(e)[:200]})"
                           + ("; reading resumes at the next record" if resume is not None else ""))
            if resume is None:
                return
            stream.seek(resume)
            base = resume


class _Segment(io.RawIOBase):
    """``reader`` up to its next gap: a buffered reader dropped at a gap closes this, not ``reader``."""

    def __init__(self, reader):
        self._reader = reader

    def readable(self):
        return True

    def readinto(self, buffer) -> int:
        return self._reader.readinto(buffer)


class WarcGap(Exception):
    """No WARC record where one should start, at ``offset`` of a stream that cannot seek."""

    def __init__(self, offset: int, cause: Exception):
        super().__init__(f"{type(cause).__name__}: {str(cause)[:200]}")
        self.offset = offset


_MEMBER_NAME = {"gzip": "gzip member", "bzip2": "bzip2 stream", "zstd": "zstd frame"}


def iter_warc_compressed(raw, source: str, key: str, max_bytes: int, compression: str) -> Iterator[dict]:
    """Records of a compressed WARC, read as ``iter_warc`` reads one
    uncompressed, except that a bad spot (a corrupt member, or bytes in a
    member that hold no WARC record) costs the rest of that member, usually
    its one record: reading resumes at the next member (gzip member, bzip2
    stream, zstd frame), as WARC writers put one record in each. Offsets
    count decompressed bytes, those of a corrupt member up to where it
    broke. A file compressed as one member loses what follows the damage."""
    reader = DecompressingReader(raw, compression, max_bytes)
    member = _MEMBER_NAME[compression]
    first = True
    while True:
        try:
            yield from iter_warc(io.BufferedReader(_Segment(reader), buffer_size=READ_CHUNK), source, key,
                                 max_bytes, shift=reader.produced, first=first)
            reader.check()
            return
        except (CorruptStream, WarcGap) as e:
            where = e.offset if isinstance(e, WarcGap) else reader.produced
            resumes = reader.skip_to_next_member(e.offset if isinstance(e, WarcGap) else None)
            what = "holds no WARC record" if isinstance(e, WarcGap) else "is corrupt"
            yield rejected(f"{source}@{where}", STAGE, "unreadable",
                           f"the {member} at byte {where} of the decompressed WARC {what} ({e}); "
                           + (f"reading resumes at the next {member}" if resumes else f"no {member} follows"))
            if not resumes:
                return
        first = False


def _next_warc_record(stream, start: int) -> int | None:
    """The offset of the next line starting 'WARC/1.' at or after ``start`` in a seekable stream."""
    marker = b"\nWARC/1."
    stream.seek(start - 1)
    pos, tail = start - 1, b""
    while True:
        chunk = stream.read(READ_CHUNK)
        if not chunk:
            return None
        data = tail + chunk
        found = data.find(marker)
        if found >= 0:
            return pos - len(tail) + found + 1
        tail = data[-(len(marker) - 1):]
        pos += len(chunk)


def iter_records(stream, source: str, key: str, fmt: str, max_bytes: int) -> Iterator[dict]:
    """Records of one (decompressed, buffered) multi-record stream."""
    if fmt == "jsonl":
        yield from iter_jsonl(stream, source, key, max_bytes)
    elif fmt == "json":
        yield from iter_json_array(stream, source, key, max_bytes)
    elif fmt in ("csv", "tsv"):
        yield from iter_csv(stream, source, key, max_bytes, "\t" if fmt == "tsv" else ",")
    elif fmt == "warc":
        yield from iter_warc(stream, source, key, max_bytes)
    else:
        raise ValueError(f"unknown format {fmt!r}")


def parse_payload(data: bytes, source: str, key: str, fmt: str) -> Iterator[dict]:
    """Records from one file's (decompressed) bytes, in any format.

    Yields raw articles and rejected records, told apart by the ``reason``
    key, which only rejected records have (and, from WARC files,
    ``{"skipped": kind}`` for records that are no page).
    """
    if fmt in ("json", "jsonl") and (encoding := wide_encoding(data[:BINARY_SNIFF_BYTES])):
        data = data.decode(encoding, errors="replace").encode("utf-8")
    if fmt in ("text", "html") or (fmt == "json" and not _starts_array(data[:READ_CHUNK])):
        yield from _parse_whole(data, source, key, fmt)
        return
    if fmt == "parquet":
        yield from iter_parquet(io.BytesIO(data), source, key, max(len(data), 1))
        return
    yield from iter_records(io.BufferedReader(io.BytesIO(data)), source, key, fmt, max(len(data), 1))


def _buffered(stream):
    return stream if hasattr(stream, "peek") else io.BufferedReader(_Counting(stream), buffer_size=READ_CHUNK)


def read_unit(item: InputFile, max_bytes: int) -> Iterator[dict]:
    """Every record of one planned unit (a file or a byte range of one):
    articles, rejected records and WARC ``skipped`` markers. Whatever happens
    to the file (unreadable, truncated, a bomb), the records before are kept
    and the failure is one rejected record."""
    fmt, compression = format_of(item.path)
    if fmt is None:
        yield rejected(item.source, STAGE, "unsupported_format", f"not a supported article file ({SUPPORTED})")
        return
    source = f"{item.source}@{item.start}" if item.start > 0 else item.source
    done = 0
    held = None  # "the file is empty", unless decompression failed: then that failure is the file's one record
    try:
        with FileSystems.open(item.path, compression_type="uncompressed") as raw:
            if fmt == "parquet":
                records = iter_parquet(raw, item.source, item.key, max_bytes)
            elif fmt == "jsonl" and item.is_range:
                stream = _buffered(raw)
                if not wide_encoding(_peek(stream)):
                    records = iter_jsonl(stream, item.source, item.key, max_bytes, item.start, item.end)
                elif item.start == 0:
                    # Lines of UTF-16/32 cannot be found from a byte offset: the first range reads the file.
                    records = iter_jsonl(_as_utf8(stream), item.source, item.key, max_bytes)
                else:
                    records = iter(())
            elif fmt == "warc" and compression is not None:
                records = iter_warc_compressed(raw, item.source, item.key, max_bytes, compression)
                check = _nothing
            else:
                decompressed, check = open_decompressed(raw, compression, max_bytes)
                stream = _buffered(decompressed)
                if fmt in ("json", "jsonl"):
                    stream = _as_utf8(stream)
                if fmt in ("text", "html") or (fmt == "json" and not _starts_array(_peek(stream, READ_CHUNK))):
                    records = _parse_whole(read_limited(stream, max_bytes), item.source, item.key, fmt)
                    check()
                else:
                    records = iter_records(stream, item.source, item.key, fmt, max_bytes)
            for record in records:
                if record.get("reason") == "empty" and record.get("source") == item.source and not done:
                    held = record
                    continue
                done += 1
                yield record
            if fmt != "parquet" and not item.is_range:
                check()
        if held is not None:
            yield held
    except TooLarge as e:
        yield rejected(source, STAGE, "too_large", _after(str(e), done))
    except EOFError as e:  # Truncated among them: what was read is kept, the cut is said
        yield rejected(source, STAGE, "unreadable", _after(f"file is truncated: {e}", done))
    except Exception as e:  # OSError, zlib/bz2/zstd errors, ArrowInvalid, warcio's ArchiveLoadFailed, BeamIOError
        yield rejected(source, STAGE, "unreadable", _after(f"cannot read: {type(e).__name__}: {e}", done))


def _nothing() -> None:
    pass


def _after(detail: str, done: int) -> str:
    return f"{detail} (after {done} records, which are kept)" if done else detail


def _as_input(element) -> InputFile:
    if isinstance(element, InputFile):
        return element
    return InputFile(**{k: v for k, v in dict(element).items() if k in _INPUT_FIELDS})


class ReadFileFn(beam.DoFn):
    """One planned unit (an InputFile or its dict) -> raw articles, and rejected
    records on the 'rejected' output; WARC records that are no page are
    counted as ``read:warc_skipped_<kind>``."""

    def __init__(self, max_bytes: int):
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._max_bytes = max_bytes
        self._files = Metrics.counter(STAGE, "files")
        self._records = Metrics.counter(STAGE, "articles")

    def process(self, element):
        item = _as_input(element)
        if item.start == 0:
            self._files.inc()
        for record in read_unit(item, self._max_bytes):
            if "skipped" in record:
                Metrics.counter(STAGE, f"warc_skipped_{record['skipped']}").inc()
            elif "reason" in record:
                yield tag_rejected(STAGE, record)
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
