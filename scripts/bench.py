#!/usr/bin/env python
"""Throughput of newsbeam against the spaCy ceiling, memory and scaling, in one invocation.

    scripts/bench.py [--data DIR] [--scale N] [--limit N] [--workers auto|N] [--rounds N]

NER dominates the cost, so the best the pipeline can do is the speed of spaCy
itself on the same texts. One run of this script, in one process tree:

1. builds the input: the article files under ``--data`` (``.txt``/``.md``, first
   non-empty line the title, then one paragraph per line), optionally thinned to
   ``--limit`` evenly spaced articles, and with ``--scale N`` N-1 further copies
   whose articles are *distinct* stories (copy k of article i is the first half
   of article i's paragraphs followed by the second half of article i+k's), so
   dedupe keeps them and the work really grows N times;
2. runs the full ``newsbeam run`` with the CLI's own defaults (cold: wall time
   of the command), sampling the peak RSS of its whole process tree (the
   launcher and every worker, summed) in a thread, and the CPU time of the tree;
3. measures start-up: ``newsbeam run`` on a handful of those articles with the
   runner settings the full run used, cut into one part per worker process
   so that it runs the way the full run does (its wall time is the fixed
   cost: interpreter and Beam start, worker processes, a model load in each,
   the dedupe phase's process, output commit; the fastest of
   ``--startup-runs``); steady state = cold minus start-up, in wall time and
   in CPU time;
4. runs the ceiling: bare ``nlp.pipe`` with the same model packages loaded the
   way the pipeline loads them (``pipelines.entities.load_model``, so the same
   components are disabled), over the same texts (title and text of every
   article the run annotated, read back from its Avro output), with as many
   processes as the run used (``n_process``) and the stage's own minibatch
   size (``pipelines.entities.PIPE_BATCH_SIZE``); model loading is not timed;
5. with ``--rounds N``, repeats 2 and 4 N times (a run, then its ceiling) and
   reports the round with the median ratio: the speed of a shared VM drifts
   by a third over minutes, and a ceiling taken right after its run shares
   that run's conditions;
6. prints articles/s, words/s, the ratio pipeline/ceiling (steady state and
   cold; and by CPU seconds, which other load on the machine hardly moves),
   peak RSS, and per-stage time shares from Beam's execution-time
   counters (``summary.json`` ``timings.stage_seconds``: worker seconds spent
   inside each top-level step, summed over workers); last line one JSON object.

Timings on a shared machine are noisy: compare ratios from one invocation.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "bbc-news" / "articles"
ARTICLE_SUFFIXES = (".txt", ".md")
# Top-level step labels of pipelines.pipeline.build_pipeline -> stage; any other
# step (summary, progress, flattens) counts as "other".
STAGE_OF_STEP = (
    ("Read", "read"),
    ("Clean", "clean"),
    ("Dedupe", "dedupe"),
    ("DetectLanguage", "language"),
    ("ExtractEntities", "entities"),
    ("Aggregate", "aggregate"),
    ("Write", "write"),
)
MB = 1024 * 1024
# Below this share of the cold run, "cold minus start-up" is measurement noise.
STEADY_MIN_FRACTION = 0.1


# ---------------------------------------------------------------- input ----

def find_articles(root: Path) -> list[Path]:
    """Article files under ``root`` (recursively, hidden ones skipped), sorted."""
    found = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_file() and path.suffix.lower() in ARTICLE_SUFFIXES:
            found.append(path)
    return sorted(found)


def evenly_spaced(items: list, limit: int | None) -> list:
    """``limit`` items spread over the whole list (every category of a sorted
    folder tree, not just the first), in order; all of them without a limit."""
    if not limit or limit >= len(items):
        return list(items)
    return [items[i * len(items) // limit] for i in range(limit)]


def split_article(text: str) -> tuple[str, list[str]]:
    """(title, paragraphs): the first non-empty line, then every other non-empty line."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return "", []
    return lines[0], lines[1:]


def render_article(title: str, paragraphs: list[str]) -> str:
    return title + "\n\n" + "\n\n".join(paragraphs) + "\n"


def paired_article(a: str, b: str) -> str:
    """A new story from two articles: the first half of ``a`` and the second half
    of ``b`` (by paragraphs). Its word shingles overlap each source by about
    half, so it is neither an exact nor a near duplicate of either, and it is
    about as long as the originals on average."""
    title_a, paras_a = split_article(a)
    title_b, paras_b = split_article(b)
    head = paras_a[:math.ceil(len(paras_a) / 2)]
    tail = paras_b[len(paras_b) // 2:]
    return render_article(f"{title_a} | {title_b}", head + tail)


def build_input(sources: list[Path], scale: int, dest: Path, root: Path) -> list[Path]:
    """Write ``scale`` copies of ``sources`` under ``dest``: copy 0 byte for byte,
    copy k >= 1 pairs article i with article (i + k) mod n."""
    if scale < 1:
        raise ValueError("scale must be at least 1")
    if scale > 1 and scale > len(sources):
        raise ValueError(f"--scale {scale} needs at least {scale} articles to pair, got {len(sources)}")
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in sources]
    written = []
    for k in range(scale):
        for i, source in enumerate(sources):
            target = dest / f"copy{k:03d}" / source.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            if k == 0:
                shutil.copyfile(source, target)
            else:
                target.write_text(paired_article(texts[i], texts[(i + k) % len(texts)]), encoding="utf-8")
            written.append(target)
    return written


# --------------------------------------------------------------- memory ----

def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (0 once it is gone)."""
    return sum(tree_rss_parts(pid))


def tree_rss_parts(pid: int) -> tuple[int, int]:
    """(resident bytes of the process, of all its descendants together)."""
    import psutil

    try:
        root = psutil.Process(pid)
        children = root.children(recursive=True)
    except psutil.Error:
        return 0, 0
    sizes = []
    for proc in (root, *children):
        try:
            sizes.append(proc.memory_info().rss)
        except psutil.Error:
            sizes.append(0)  # exited between listing and reading
    return sizes[0], sum(sizes[1:])


class PeakTreeRSS:
    """Sample a process tree's summed RSS in a background thread; ``peak`` in bytes.

    Summing RSS counts pages shared between processes (forked workers, shared
    libraries) once per process, so the figure errs on the high side.
    """

    def __init__(self, pid: int, interval: float = 0.1):
        self._pid = pid
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak = 0
        self.peak_root = 0
        self.peak_descendants = 0
        self.samples = 0

    def _run(self):
        while True:
            root, descendants = tree_rss_parts(self._pid)
            self.peak = max(self.peak, root + descendants)
            self.peak_root = max(self.peak_root, root)
            self.peak_descendants = max(self.peak_descendants, descendants)
            self.samples += 1
            if self._stop.wait(self._interval):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------- pipeline ----

def newsbeam_command(inputs: Path, output: Path, beam_args: list[str]) -> list[str]:
    return [sys.executable, "-m", "pipelines", "run", str(inputs), "--output", str(output), *beam_args]


def run_newsbeam(inputs: Path, output: Path, beam_args: list[str], log: Path,
                 sample_interval: float) -> dict:
    """Run ``newsbeam run`` as a child process; wall and CPU seconds, peak tree RSS, summary."""
    env = dict(os.environ)
    # Beam's multi-process runner starts workers with the first python on PATH.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    cmd = newsbeam_command(inputs, output, beam_args)
    with open(log, "wb") as log_file:
        cpu_before = children_cpu_seconds()
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        with PeakTreeRSS(proc.pid, sample_interval) as rss:
            status = proc.wait()
        seconds = time.perf_counter() - started
        cpu = children_cpu_seconds() - cpu_before
    if status != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"newsbeam run exited with {status}: {' '.join(cmd)}\n{tail}")
    summary_path = find_summary(output)
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss": rss.peak, "peak_rss_launcher": rss.peak_root,
            "peak_rss_workers": rss.peak_descendants, "summary_path": summary_path,
            "summary": json.loads(summary_path.read_text(encoding="utf-8"))}


def children_cpu_seconds() -> float:
    """CPU seconds of every finished descendant so far. Beam's launcher waits
    for its worker processes, so a finished run's whole tree is in it; CPU time,
    unlike wall time, hardly changes when others load the machine."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fastest(runs) -> dict:
    """The run with the least wall time, its CPU time taken from the same run."""
    return min(runs, key=lambda r: r["seconds"])


def find_summary(output: Path) -> Path:
    """The run's summary.json (at the top of the output, or in the newest run folder)."""
    direct = output / "summary.json"
    if direct.is_file():
        return direct
    found = sorted(output.rglob("summary.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise RuntimeError(f"no summary.json under {output}")
    return found[-1]


def workers_of(summary: dict) -> int:
    """Worker processes the run used: those of a run in parts, else the ones
    in the Beam options it recorded."""
    execution = summary.get("execution") or {}
    if execution.get("workers"):
        return int(execution["workers"])
    options = summary.get("options") or {}
    if options.get("direct_running_mode") in ("multi_processing", "multi_threading"):
        return int(options.get("direct_num_workers") or 1)
    return 1


def models_of(summary: dict) -> dict[str, str]:
    """language -> model the run used, as its summary records them (the CLI
    default when it does not)."""
    from pipelines.options import DEFAULT_SPACY_MODELS, parse_model_map

    recorded = ((summary.get("versions") or {}).get("models")) or {}
    models = {lang: info["package"] for lang, info in recorded.items() if isinstance(info, dict) and "package" in info}
    return models or parse_model_map(DEFAULT_SPACY_MODELS)


def annotated_texts(run_folder: Path, models: dict[str, str]) -> dict[str, list[str]]:
    """Texts the run sent to NER, per model package: title and text of every
    kept article whose language has a model, read back from its Avro output."""
    import fastavro

    texts: dict[str, list[str]] = {}
    for path in sorted((run_folder / "articles").glob("*.avro")):
        with open(path, "rb") as f:
            for article in fastavro.reader(f):
                package = models.get(article.get("language"))
                if package is not None:
                    texts.setdefault(package, []).extend([article.get("title") or "", article["text"]])
    return texts


def word_count(texts: list[str]) -> int:
    return sum(len(t.split()) for t in texts)


# -------------------------------------------------------------- ceiling ----

def run_ceiling(texts: dict[str, list[str]], workers: int, batch_size: int, sample_interval: float) -> dict:
    """Bare ``nlp.pipe`` over the texts; models are loaded before the clock starts."""
    from pipelines.entities import load_model

    load_started = time.perf_counter()
    models = {package: load_model(package) for package in texts}
    load_seconds = time.perf_counter() - load_started
    entities = 0
    with PeakTreeRSS(os.getpid(), sample_interval) as rss:
        # This thread's CPU (not the sampler's) plus the pipe's worker processes.
        cpu_before = time.thread_time() + children_cpu_seconds()
        started = time.perf_counter()
        for package, package_texts in texts.items():
            kwargs = {"batch_size": batch_size}
            if workers > 1:
                kwargs["n_process"] = workers
            for doc in models[package].pipe(package_texts, **kwargs):
                entities += len(doc.ents)
        seconds = time.perf_counter() - started
        cpu = time.thread_time() + children_cpu_seconds() - cpu_before
    return {"seconds": seconds, "cpu_seconds": cpu, "load_seconds": load_seconds, "peak_rss": rss.peak,
            "entities": entities}


# -------------------------------------------------------------- figures ----

def stage_shares(stage_seconds: dict[str, float]) -> dict[str, float]:
    """Top-level step seconds -> share of the total per stage (sums to 1)."""
    grouped: dict[str, float] = {}
    for step, seconds in stage_seconds.items():
        stage = next((name for prefix, name in STAGE_OF_STEP if step.startswith(prefix)), "other")
        grouped[stage] = grouped.get(stage, 0.0) + seconds
    total = sum(grouped.values())
    if total <= 0:
        return {}
    return {stage: round(s / total, 4) for stage, s in sorted(grouped.items(), key=lambda kv: -kv[1])}


def figures(*, scale: int, limit: int | None, workers: int, articles_in: int, texts: dict[str, list[str]],
            full: dict, startup: dict, ceiling: dict) -> dict:
    """The headline numbers of one bench run (all rates over the same texts)."""
    words = sum(word_count(t) for t in texts.values())
    cold = full["seconds"]
    # The start-up run processes a few articles too; that work is noise next to
    # the fixed cost it measures. When the fixed cost is (nearly) all of the
    # run, the difference is noise and no steady-state figure is given.
    steady = cold - startup["seconds"]
    measurable = steady > STEADY_MIN_FRACTION * cold
    summary = full["summary"]
    stage_seconds = (summary.get("timings") or {}).get("stage_seconds") or {}
    ceiling_wps = words / max(ceiling["seconds"], 1e-9)

    cpu_steady = full["cpu_seconds"] - startup["cpu_seconds"]
    cpu_measurable = cpu_steady > STEADY_MIN_FRACTION * full["cpu_seconds"]

    def per_steady_second(amount, digits):
        return round(amount / steady, digits) if measurable else None

    return {
        "scale": scale,
        "limit": limit,
        "workers": workers,
        "articles_in": articles_in,
        "articles_annotated": sum(len(t) for t in texts.values()) // 2,
        "words": words,
        "seconds_cold": round(cold, 3),
        "seconds_startup": round(startup["seconds"], 3),
        "seconds_steady": round(steady, 3) if measurable else None,
        "ceiling_seconds": round(ceiling["seconds"], 3),
        "articles_per_second": per_steady_second(articles_in, 2),
        "articles_per_second_cold": round(articles_in / cold, 2),
        "words_per_second": per_steady_second(words, 1),
        "words_per_second_cold": round(words / cold, 1),
        "ceiling_words_per_second": round(ceiling_wps, 1),
        "ratio": round(words / steady / ceiling_wps, 3) if measurable else None,
        "ratio_cold": round(words / cold / ceiling_wps, 3),
        "cpu_seconds_cold": round(full["cpu_seconds"], 2),
        "cpu_seconds_startup": round(startup["cpu_seconds"], 2),
        "cpu_seconds_steady": round(cpu_steady, 2) if cpu_measurable else None,
        "ceiling_cpu_seconds": round(ceiling["cpu_seconds"], 2),
        "ratio_cpu": round(ceiling["cpu_seconds"] / cpu_steady, 3) if cpu_measurable else None,
        "peak_rss_mb": round(full["peak_rss"] / MB, 1),
        "peak_rss_launcher_mb": round(full.get("peak_rss_launcher", 0) / MB, 1),
        "peak_rss_workers_mb": round(full.get("peak_rss_workers", 0) / MB, 1),
        "ceiling_peak_rss_mb": round(ceiling["peak_rss"] / MB, 1),
        "stage_shares": stage_shares(stage_seconds),
        "stage_seconds": stage_seconds,
        "phase_seconds": (summary.get("timings") or {}).get("phase_seconds") or {},
        "phase_seconds_startup": ((startup.get("summary") or {}).get("timings") or {}).get("phase_seconds") or {},
    }


def round_line(f: dict) -> str:
    ratio = "n/a" if f["ratio"] is None else f"{f['ratio']:.3f}"
    ratio_cpu = "n/a" if f["ratio_cpu"] is None else f"{f['ratio_cpu']:.3f}"
    return (f"cold {f['seconds_cold']:.1f} s, ceiling {f['ceiling_seconds']:.1f} s, ratio {ratio} "
            f"(cpu {ratio_cpu}, cold {f['ratio_cold']:.3f})")


def combine_rounds(rounds: list[dict]) -> dict:
    """One report from several rounds (each a full run followed by a ceiling
    run). The machine's speed drifts over minutes on a shared host, so a single
    run and a single ceiling taken a minute apart can disagree by a third; each
    round pairs a run with the ceiling right after it, and the headline figures
    are those of the round with the median ratio (all from one round, so they
    stay consistent with each other). Peak RSS is the highest of any round."""
    if not rounds:
        raise ValueError("no rounds")
    ordered = sorted(rounds, key=lambda f: -1.0 if f["ratio"] is None else f["ratio"])
    median = ordered[(len(ordered) - 1) // 2]
    return {
        **median,
        "rounds": len(rounds),
        "ratio_rounds": [f["ratio"] for f in rounds],
        "ratio_cpu_rounds": [f["ratio_cpu"] for f in rounds],
        "peak_rss_mb": max(f["peak_rss_mb"] for f in rounds),
        "peak_rss_launcher_mb": max(f["peak_rss_launcher_mb"] for f in rounds),
        "peak_rss_workers_mb": max(f["peak_rss_workers_mb"] for f in rounds),
        "ceiling_peak_rss_mb": max(f["ceiling_peak_rss_mb"] for f in rounds),
    }


def format_report(f: dict) -> str:
    lines = [
        f"input: {f['articles_in']} articles (scale {f['scale']}"
        + (f", limit {f['limit']}" if f["limit"] else "") + f"), {f['articles_annotated']} annotated, "
        f"{f['words']} words to NER; {f['workers']} worker process(es)",
        f"newsbeam run   cold {f['seconds_cold']:8.2f} s   {f['articles_per_second_cold']:8.2f} articles/s "
        f"  {f['words_per_second_cold']:10.1f} words/s",
        f"  start-up          {f['seconds_startup']:8.2f} s   (newsbeam run on a few articles)",
        f"  steady state      {f['seconds_steady']:8.2f} s   {f['articles_per_second']:8.2f} articles/s "
        f"  {f['words_per_second']:10.1f} words/s" if f["ratio"] is not None else
        "  steady state      not measurable: start-up is nearly the whole run (use more articles)",
        f"ceiling nlp.pipe    {f['ceiling_seconds']:8.2f} s   {'':>8}              "
        f"{f['ceiling_words_per_second']:10.1f} words/s",
        "ratio pipeline/ceiling: " + (f"{f['ratio']:.3f} steady state, " if f["ratio"] is not None else "")
        + f"{f['ratio_cold']:.3f} cold (target >= 0.85, issue 13)",
        *([f"rounds: {f['rounds']} (full run, then ceiling); ratio per round "
           + ", ".join("n/a" if r is None else f"{r:.3f}" for r in f["ratio_rounds"])
           + "; figures above from the round with the median ratio"] if f.get("rounds", 1) > 1 else []),
        "ratio by CPU seconds, ceiling/pipeline steady state (less sensitive to other load on the machine): "
        + (f"{f['ratio_cpu']:.3f}" if f["ratio_cpu"] is not None else "not measurable")
        + f" ({f['ceiling_cpu_seconds']:.1f} s / {f['cpu_seconds_cold']:.1f} - {f['cpu_seconds_startup']:.1f} s)",
        f"peak RSS, newsbeam process tree: {f['peak_rss_mb']:.0f} MB (peaks apart: launcher "
        f"{f['peak_rss_launcher_mb']:.0f} MB, worker processes together {f['peak_rss_workers_mb']:.0f} MB; "
        f"ceiling: {f['ceiling_peak_rss_mb']:.0f} MB)",
        *(["phases, wall s (start-up run's): " + ", ".join(
            f"{phase} {seconds:.1f} ({f['phase_seconds_startup'].get(phase, 0.0):.1f})"
            for phase, seconds in f["phase_seconds"].items())] if f.get("phase_seconds") else []),
        "stage time shares (Beam execution-time counters, worker seconds):",
    ]
    for stage, share in f["stage_shares"].items():
        lines.append(f"  {stage:<10} {share * 100:5.1f} %")
    if not f["stage_shares"]:
        lines.append("  - (the runner reported no execution-time counters)")
    return "\n".join(lines)


# ----------------------------------------------------------------- main ----

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder of article files (.txt/.md, title line then paragraphs); "
                             "default: ../shared/data/bbc-news/articles")
    parser.add_argument("--scale", default="1",
                        help="N or N,M,...: N times the articles, all distinct; several scales are measured one "
                             "after the other and compared in a table (default 1)")
    parser.add_argument("--no-ner", action="store_true",
                        help="memory and scaling only: the runs keep no language (--languages fi on English news), "
                             "so nothing reaches NER; no ceiling, no ratio")
    parser.add_argument("--ceiling-sample", type=int, default=4000,
                        help="the ceiling runs over the texts of at most this many evenly spaced annotated articles "
                             "(words/s does not depend on how many; default 4000, 0: all)")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only this many evenly spaced articles of --data (default: all)")
    parser.add_argument("--workers", default="auto",
                        help="'auto' (default): the CLI's own choice; N: pass --direct_running_mode=multi_processing "
                             "--direct_num_workers=N to the run (1: in-process)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="N: N rounds of (full run, then ceiling), reporting the round with the median ratio "
                             "(the machine's speed drifts: use 3 for a figure to quote; default 1)")
    parser.add_argument("--startup-articles", type=int, default=4,
                        help="articles in the start-up run (default 4)")
    parser.add_argument("--startup-runs", type=int, default=2,
                        help="start-up runs; the fastest counts, as the least disturbed by other load (default 2)")
    parser.add_argument("--ceiling-batch-size", type=int, default=None,
                        help="nlp.pipe batch size for the ceiling, in texts (default: the entities stage's own, "
                             "pipelines.entities.PIPE_BATCH_SIZE; with titles and texts mixed, small batches "
                             "waste less padding and are faster)")
    parser.add_argument("--sample-interval", type=float, default=0.1, help="seconds between RSS samples")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to build inputs and outputs (default: a temporary folder, removed after)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    try:
        args.scales = [int(x) for x in str(args.scale).split(",") if x.strip()]
    except ValueError:
        parser.error("--scale takes N or N,M,... (positive integers)")
    if not args.scales or min(args.scales) < 1:
        parser.error("--scale must be at least 1")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.startup_runs < 1:
        parser.error("--startup-runs must be at least 1")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be positive")
    if args.workers != "auto" and (not args.workers.isdigit() or int(args.workers) < 1):
        parser.error("--workers is 'auto' or a positive integer")
    if not args.data.is_dir():
        parser.error(f"--data {args.data} is not a folder")
    return args


def worker_args(workers: int) -> list[str]:
    if workers == 1:
        return ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
    return ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]


def startup_args(workers: int, files: list[Path]) -> list[str]:
    """The full run's runner settings for the start-up run, and with several
    workers a ``--chunk-bytes`` that cuts its few articles into one part per
    worker: a run that small would otherwise stay in the launcher alone
    (``orchestrate.MULTIPROCESS_MIN_BYTES``), and its fixed cost would then
    leave out what every bigger run pays: the worker processes' start, a
    model load in each, the dedupe phase's own process."""
    args = worker_args(workers)
    if workers == 1:
        return args
    sizes = [p.stat().st_size for p in files]
    # A part's limit of an even share plus the biggest article: even parts, exactly `workers` of them.
    return [*args, f"--chunk-bytes={-(-sum(sizes) // workers) + max(sizes)}"]


def sample_texts(texts: dict[str, list[str]], limit: int) -> dict[str, list[str]]:
    """At most ``limit`` (title, text) pairs per model, evenly spaced; all when 0."""
    if not limit:
        return texts
    out = {}
    for package, flat in texts.items():
        pairs = [flat[i:i + 2] for i in range(0, len(flat), 2)]
        out[package] = [t for pair in evenly_spaced(pairs, limit) for t in pair]
    return out


def measure_scale(args, sources: list[Path], scale: int, workdir: Path) -> dict:
    """One scale: build its input, run the rounds, return its figures."""
    from pipelines.entities import PIPE_BATCH_SIZE

    inputs = workdir / "input"
    shutil.rmtree(inputs, ignore_errors=True)
    written = build_input(sources, scale, inputs, args.data)
    print(f"bench: scale {scale}: {len(written)} articles ({sum(p.stat().st_size for p in written) / 1e6:.1f} MB) "
          f"in {inputs}", flush=True)
    forced = [] if args.workers == "auto" else worker_args(int(args.workers))
    if args.no_ner:
        forced = [*forced, "--languages", "fi"]
    per_round, startup, texts, workers = [], None, None, 1
    for n in range(1, args.rounds + 1):
        output = workdir / "out"
        shutil.rmtree(output, ignore_errors=True)  # a fresh output: no state from the round before
        print(f"bench: scale {scale}, round {n}/{args.rounds}: full run ...", flush=True)
        full = run_newsbeam(inputs, output, forced, workdir / "run.log", args.sample_interval)
        if args.no_ner:
            per_round.append(memory_figures(scale, len(written), full))
            continue
        if startup is None:
            workers = workers_of(full["summary"])
            startup_inputs = workdir / "startup-input"
            shutil.rmtree(startup_inputs, ignore_errors=True)
            startup_files = build_input(evenly_spaced(sources, max(args.startup_articles, workers)), 1,
                                        startup_inputs, args.data)
            print(f"bench: {args.startup_runs} start-up run(s) ({workers} worker process(es)) ...", flush=True)
            startup = fastest(run_newsbeam(startup_inputs, workdir / "startup-out",
                                           startup_args(workers, startup_files),
                                           workdir / "startup.log", args.sample_interval)
                              for _ in range(args.startup_runs))
            startup_workers = workers_of(startup["summary"])
            if startup_workers != workers:
                raise RuntimeError(f"the start-up run used {startup_workers} worker process(es), "
                                   f"the full run {workers}: its fixed cost would not be the full run's")
            texts = annotated_texts(full["summary_path"].parent, models_of(full["summary"]))
        sample = sample_texts(texts, args.ceiling_sample)
        print(f"bench: scale {scale}, round {n}/{args.rounds}: ceiling, nlp.pipe over "
              f"{sum(len(t) for t in sample.values())} texts with {workers} process(es) ...", flush=True)
        ceiling = run_ceiling(sample, workers, args.ceiling_batch_size or PIPE_BATCH_SIZE, args.sample_interval)
        # The ceiling's speed, measured on a sample, applied to all the texts the run annotated.
        ratio_of_sample = word_count([t for ts in texts.values() for t in ts]) / max(
            word_count([t for ts in sample.values() for t in ts]), 1)
        ceiling = {**ceiling, "seconds": ceiling["seconds"] * ratio_of_sample,
                   "cpu_seconds": ceiling["cpu_seconds"] * ratio_of_sample}
        per_round.append(figures(scale=scale, limit=args.limit, workers=workers, articles_in=len(written),
                                 texts=texts, full=full, startup=startup, ceiling=ceiling))
        if args.rounds > 1:
            print(f"bench: round {n}: {round_line(per_round[-1])}", flush=True)
    if args.no_ner:
        return min(per_round, key=lambda f: f["seconds_cold"])
    return combine_rounds(per_round)


def memory_figures(scale: int, articles_in: int, full: dict) -> dict:
    summary = full["summary"]
    return {
        "scale": scale, "articles_in": articles_in, "seconds_cold": round(full["seconds"], 3),
        "cpu_seconds_cold": round(full["cpu_seconds"], 2), "peak_rss_mb": round(full["peak_rss"] / MB, 1),
        "peak_rss_launcher_mb": round(full["peak_rss_launcher"] / MB, 1),
        "peak_rss_workers_mb": round(full["peak_rss_workers"] / MB, 1),
        "parts": (summary.get("execution") or {}).get("parts"),
        "phase_seconds": (summary.get("timings") or {}).get("phase_seconds"),
        "ratio": None,
    }


def scale_table(results: list[dict]) -> str:
    """One line per scale, and the growth of time and memory from the smallest scale to each."""
    base = results[0]
    lines = [f"{'scale':>5} {'articles':>9} {'parts':>5} {'wall s':>9} {'peak RSS MB':>11} {'ratio':>6} "
             f"{'time x':>7} {'RSS x':>6}"]
    for f in results:
        ratio = "n/a" if f.get("ratio") is None else f"{f['ratio']:.3f}"
        lines.append(f"{f['scale']:>5} {f['articles_in']:>9,} {str(f.get('parts') or '-'):>5} "
                     f"{f['seconds_cold']:>9.1f} {f['peak_rss_mb']:>11.0f} {ratio:>6} "
                     f"{f['seconds_cold'] / base['seconds_cold']:>7.2f} {f['peak_rss_mb'] / base['peak_rss_mb']:>6.2f}")
    lines.append(f"(time x and RSS x: relative to scale {base['scale']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sources = evenly_spaced(find_articles(args.data), args.limit)
    if not sources:
        print(f"bench: no article files under {args.data}", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="newsbeam-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        results = []
        for scale in args.scales:
            result = measure_scale(args, sources, scale, workdir)
            result.setdefault("scale", scale)
            if not args.no_ner:
                result["parts"] = (json.loads(find_summary(workdir / "out").read_text()).get("execution")
                                   or {}).get("parts")
                print(format_report(result))
            else:
                print(f"bench: scale {scale}: {result['seconds_cold']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB "
                      f"(launcher {result['peak_rss_launcher_mb']:.0f} MB), {result['parts']} part(s)")
            results.append(result)
        if len(results) > 1:
            print("memory and scaling, NER off (--languages fi):" if args.no_ner else
                   "throughput, memory and scaling:")
            print(scale_table(results))
        print(json.dumps(results if len(results) > 1 else results[0], sort_keys=True))
        return 0
    finally:
        if args.keep or args.workdir:
            print(f"bench: work folder kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
