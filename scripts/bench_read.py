#!/usr/bin/env python
"""One big JSONL dump through newsbeam with 1 and 2 workers: wall time, CPU, peak RSS.

    scripts/bench_read.py [--gb 1.0] [--workers 1,2] [--work /tmp/newsbeam-bench-read] [--languages fi]
                          [--read-only] [--slice-gb G]

Builds ``dump.jsonl`` of about ``--gb`` GB from the BBC articles in
../shared/data/bbc-news: every record pairs the first half of one article's
paragraphs with the second half of another's (distinct ids and texts, so
dedupe keeps nearly all), then runs ``newsbeam run`` on it once per worker
count. ``--languages fi`` rejects every (English) article at the language
stage, so the figures are reading, cleaning and language detection without
NER. An uncompressed JSONL is cut into byte ranges (read.RANGE_BYTES), so
both workers read the one file. Printed per run: wall seconds, CPU seconds
(user + system of every process of the run), CPU / wall (cores busy), peak
RSS summed over the run's processes (sampled every 0.5 s), articles per
second of wall time, and the summary's counts. The RSS samples (seconds,
launcher MiB, each worker's MiB) go to ``rss-<workers>.tsv`` in ``--work``:
where the peak is, the launcher's and any one worker's peak are printed too.

``--read-only`` runs only the read stage instead (the plan of the dump's
byte ranges -> ``ReadArticles`` -> a count, on the FnApiRunner with N
worker processes): what this stage does with one big file, without the
later stages' cost (about 8 ms of CPU per BBC article, mostly language
detection and cleaning, which makes a full run over 1 GB take most of an
hour). ``--slice-gb`` runs the full pipeline on the first G GB of the dump
(whole lines) instead of all of it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
BBC = REPO.parent / "shared" / "data" / "bbc-news" / "articles"


def build(path: Path, gb: float) -> tuple[int, int]:
    articles = []
    for p in sorted(BBC.rglob("*.txt")):
        lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
        title, paragraphs = lines[0].strip(), [x for x in lines[1:] if x.strip()]
        if len(paragraphs) >= 2:
            articles.append((title, paragraphs))
    if not articles:
        raise SystemExit(f"no BBC articles under {BBC}")
    n, target, size, k = len(articles), int(gb * 1e9), 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while size < target:
            a = k % n
            b = (a + 1 + k // n) % n  # a distinct (a, b) pair for every k below n * (n - 1)
            (ta, pa), (_, pb) = articles[a], articles[b]
            text = "\n\n".join(pa[: len(pa) // 2] + pb[len(pb) // 2:])
            line = json.dumps({"id": f"bbc-{k}", "title": f"{ta} ({k})", "text": text}, ensure_ascii=False) + "\n"
            f.write(line)
            size += len(line.encode("utf-8"))
            k += 1
    return k, size


READ_ONLY = """
import sys, apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from pipelines.read import InputFile, ReadArticles, split_ranges, write_plan
dump, plan, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
import os
units = split_ranges([InputFile(dump, dump, os.path.basename(dump), size=os.path.getsize(dump))])
write_plan(units, plan)
opts = PipelineOptions(runner="FnApiRunner", direct_num_workers=workers, direct_running_mode="multi_processing")
with beam.Pipeline(options=opts) as p:
    out = p | ReadArticles(plan, max_bytes=10 << 20)
    (out["articles"] | "N" >> beam.combiners.Count.Globally()
     | "Print" >> beam.Map(lambda n: print(f"articles read: {n} from {len(units)} ranges", flush=True)))
"""


def run(dump: Path, out: Path, workers: int, languages: str, read_only: bool = False,
        trace_path: Path | None = None) -> dict:
    if read_only:
        out.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-c", READ_ONLY, str(dump), str(out / "plan.jsonl"), str(workers)]
    else:
        cmd = [sys.executable, "-m", "pipelines", "run", str(dump), "--output", str(out), "--languages", languages,
               "--quiet", f"--direct_num_workers={workers}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO)
    top = psutil.Process(proc.pid)
    peak = peak_at = launcher_peak = worker_peak = 0
    trace = open(trace_path, "w") if trace_path else None
    while proc.poll() is None:
        try:
            launcher = top.memory_info().rss
            workers = [c.memory_info().rss for c in top.children(recursive=True)]
        except psutil.Error:
            time.sleep(0.5)
            continue
        t, rss = time.perf_counter() - start, launcher + sum(workers)
        if rss > peak:
            peak, peak_at = rss, t
        launcher_peak, worker_peak = max(launcher_peak, launcher), max([worker_peak, *workers])
        if trace:
            trace.write(f"{t:.1f}\t{launcher >> 20}\t" + "\t".join(str(w >> 20) for w in workers) + "\n")
        time.sleep(0.5)
    wall = time.perf_counter() - start
    if trace:
        trace.close()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"newsbeam run failed ({proc.returncode}): {' '.join(cmd)}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = None if read_only else json.loads((out / "summary.json").read_text())
    return {"workers": workers, "wall": wall, "cpu": cpu, "peak_rss": peak, "peak_at": peak_at,
            "launcher_peak": launcher_peak, "worker_peak": worker_peak, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--work", default="/tmp/newsbeam-bench-read")
    parser.add_argument("--languages", default="fi")
    parser.add_argument("--read-only", action="store_true", help="run only the read stage (see above)")
    parser.add_argument("--slice-gb", type=float, default=0.0, help="full runs over the first G GB only")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    dump = work / "dump.jsonl"
    if not dump.exists() or abs(dump.stat().st_size - args.gb * 1e9) > 0.01 * args.gb * 1e9:
        started = time.perf_counter()
        records, size = build(dump, args.gb)
        print(f"built {dump}: {records} records, {size / 1e9:.2f} GB in {time.perf_counter() - started:.0f} s")
    if args.slice_gb:
        part = work / f"slice-{args.slice_gb:g}.jsonl"
        if not part.exists():
            with open(dump, "rb") as f, open(part, "wb") as g:
                g.write(f.read(int(args.slice_gb * 1e9)) + f.readline())
        dump = part
    size = dump.stat().st_size
    print(f"input: {dump} ({size / 1e9:.2f} GB); machine: {os.cpu_count()} cores; load {os.getloadavg()[0]:.1f}")
    for workers in (int(w) for w in args.workers.split(",")):
        r = run(dump, work / f"out-{workers}", workers, args.languages, args.read_only,
                work / f"rss-{workers}.tsv")
        line = (f"workers={workers}: wall {r['wall']:.0f} s, CPU {r['cpu']:.0f} s "
                f"(CPU/wall {r['cpu'] / r['wall']:.2f}), peak RSS {r['peak_rss'] / 2**30:.2f} GiB "
                f"at {r['peak_at']:.0f} s (alone: launcher {r['launcher_peak'] / 2**30:.2f}, "
                f"one worker {r['worker_peak'] / 2**30:.2f}), "
                f"{size / 1e6 / r['wall']:.1f} MB/s")
        s = r["summary"]
        if s:
            n = s["inputs"]["records"]
            line += (f", {n / r['wall']:.0f} records/s; records {n}, articles {s['articles']}, duplicates "
                     f"{s['duplicates']['total']}, rejected {s['rejected']['total']}, "
                     f"parts {s['execution'].get('parts')}, phase seconds {s['timings'].get('phase_seconds')}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
