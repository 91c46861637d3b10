#!/usr/bin/env python
"""WARC reading speed: warcio vs FastWARC, records/s over one real-size file.

    scripts/bench_warc.py [--copies 20] [--work /tmp/newsbeam-warc]

Builds ``bench.warc`` and ``bench.warc.gz`` (per-record gzip, as crawlers
write them) from the article-extraction benchmark's HTML pages, ``--copies``
times over with distinct URIs, a request record before every response (as in
real crawls); then, for each library, iterates every record and reads the
HTTP body of each HTML response, as ``read.iter_warc`` does, and prints
records/s and MB/s; last, for scale, how many of these pages per second the
clean stage (trafilatura, ``clean.clean_article``) extracts in one process.
This is what chose the library ``iter_warc`` uses.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import io
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "article-extraction-benchmark" / "html"


def build(path: str, copies: int) -> int:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    pages = [gzip.open(p).read() for p in sorted(glob.glob(str(DATA / "*.html.gz")))]
    if not pages:
        raise SystemExit(f"no pages under {DATA}")
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=path.endswith(".gz"))
        for c in range(copies):
            for i, page in enumerate(pages):
                uri = f"https://example.com/{c}/{i}.html"
                request = io.BytesIO(b"GET / HTTP/1.1\r\n\r\n")
                writer.write_record(writer.create_warc_record(uri, "request", payload=request))
                http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
                response = writer.create_warc_record(uri, "response", payload=io.BytesIO(page), http_headers=http)
                writer.write_record(response)
    return os.path.getsize(path)


def with_warcio(path: str) -> tuple[int, int]:
    from warcio.archiveiterator import ArchiveIterator

    records = pages = 0
    with open(path, "rb") as f:
        for record in ArchiveIterator(f):
            records += 1
            if record.rec_type == "response" and "html" in (record.http_headers.get_header("Content-Type") or ""):
                pages += len(record.content_stream().read()) > 0
    return records, pages


def with_fastwarc(path: str) -> tuple[int, int]:
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    records = pages = 0
    # A Python file object, as FileSystems.open gives one (gzip detected by FastWARC).
    with open(path, "rb") as f:
        for record in ArchiveIterator(f, parse_http=True):
            records += 1
            if record.record_type == WarcRecordType.response and "html" in (record.http_content_type or ""):
                pages += len(record.reader.read()) > 0
    return records, pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--work", default="/tmp/newsbeam-warc")
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    for name in ("bench.warc", "bench.warc.gz"):
        path = os.path.join(args.work, name)
        size = os.path.getsize(path) if os.path.exists(path) else build(path, args.copies)
        for library, fn in (("warcio", with_warcio), ("fastwarc", with_fastwarc)):
            start = time.perf_counter()
            records, pages = fn(path)
            seconds = time.perf_counter() - start
            print(f"{name:14} {size / 1e6:7.1f} MB  {library:9} {records:6d} records ({pages} pages) "
                  f"{seconds:6.2f} s  {records / seconds:8.0f} records/s  {size / 1e6 / seconds:6.1f} MB/s")
    from pipelines.clean import clean_article
    from pipelines.read import parse_payload

    raws = [next(parse_payload(gzip.open(p).read(), p, p, "html")) for p in sorted(glob.glob(str(DATA / "*.html.gz")))]
    clean_article(raws[0])
    start = time.perf_counter()
    for raw in raws:
        clean_article(raw)
    seconds = time.perf_counter() - start
    print(f"clean stage (trafilatura) on the same pages: {len(raws) / seconds:.0f} pages/s in one process")


if __name__ == "__main__":
    main()
