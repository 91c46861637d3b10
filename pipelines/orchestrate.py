"""Run orchestration: plan -> units of work -> pipeline runs -> commit.

Everything a ``newsbeam run`` or ``newsbeam watch`` does between parsing the
command line and printing the outcome lives here: validating the invocation,
building the runner, executing the pipeline into a staging folder, writing the
summary and publishing (standalone) or committing (``--state-dir``) the result.
The stages in ``pipelines/`` know nothing of this; ``cli.py`` only parses and
prints.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata

from apache_beam.io.filesystems import FileSystems

__all__ = [
    "Prepared", "RunFailed", "PublishFailed", "prepare", "check_output_writable", "beam_options",
    "make_runner", "limit_malloc_arenas", "build_summary", "stage_seconds", "user_counters",
    "run_standalone", "run_incremental", "acquire_lock", "default_exclude", "version",
    "RECORD_FOLDERS", "LAUNCHER_ARGS", "failure_line", "root_cause", "execute", "execute_in_parts",
    "plan_parts", "part_bytes", "part_name", "resume_key", "run_unit", "runs_in_parts",
]

RECORD_FOLDERS = ("articles", "duplicates", "rejected", "entity_counts")
# Below this much input the cost of starting worker processes (each loads the
# spaCy model) is more than a second core saves.
MULTIPROCESS_MIN_BYTES = 512 * 1024
LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")
# Launcher-only arguments: not pipeline options.
LAUNCHER_ARGS = ("command", "inputs", "interval", "max_failures", "verbose")

_LOG = logging.getLogger("newsbeam")
# glibc gives each thread that allocates its own malloc arena and keeps freed
# memory in it; Beam's launcher and worker processes run many threads. With
# the default (8 arenas per core) the process tree of a run on 16x the BBC
# articles peaked at 2,712 MB, with two at 2,263 MB; no slower (4x: 213 s, 193 s).
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt parameter number in glibc's malloc.h


class RunFailed(Exception):
    """The pipeline failed; the previous output is untouched (exit status 1)."""


class PublishFailed(Exception):
    """A committed run could not be published; the next run finishes it (exit status 1)."""


def version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


_ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Exit)\b:?.*)$")


def root_cause(error: BaseException) -> str:
    """The one line that says what went wrong, out of Beam's wrapped errors
    (a worker's failure arrives as a RuntimeError holding its traceback)."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = str(error) or type(error).__name__
    found = [m.group(1) for m in map(_ERROR_LINE.match, text.splitlines()) if m]
    line = found[-1] if found else next((t.strip() for t in text.splitlines() if t.strip()), text)
    if not found and not line.startswith(type(error).__name__):
        line = f"{type(error).__name__}: {line}"
    return line if len(line) <= 300 else line[:297] + "..."


def failure_line(error: BaseException, outcome: str) -> str:
    """'<what failed>; <what it means for the output> (details in <log>)': the
    traceback goes to a log file, the user gets one line."""
    import tempfile
    import traceback

    _LOG.debug("run failed", exc_info=error)
    try:
        fd, log = tempfile.mkstemp(prefix="newsbeam-error-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(traceback.format_exception(error)))
        where = f" (traceback in {log}; --verbose shows it)"
    except OSError:
        where = " (--verbose shows the traceback)"
    return f"the run failed: {root_cause(error)}; {outcome}{where}"


def check_output_writable(output: str) -> None:
    from pipelines.plan import UsageError

    probe = FileSystems.join(output, ".newsbeam-write-probe")
    try:
        if not FileSystems.exists(output):
            FileSystems.mkdirs(output)
        with FileSystems.create(probe) as f:
            f.write(b"ok")
        FileSystems.delete([probe])
    except Exception as e:
        raise UsageError(f"output {output!r} is not writable: {e}") from e


def beam_options(beam_args: list[str], ns: argparse.Namespace, total_bytes: int):
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.options import DEFAULT_EXCLUDE, NewsbeamOptions

    ours = {k: v for k, v in vars(ns).items() if k not in LAUNCHER_ARGS}
    if ours.get("exclude") is None:
        ours["exclude"] = list(DEFAULT_EXCLUDE)
    given = {a.split("=", 1)[0] for a in beam_args if a.startswith("--")}
    if "--runner" not in given:
        ours["runner"] = "FnApiRunner"
    runner = ours.get("runner") or next(
        (a.split("=", 1)[1] for a in beam_args if a.startswith("--runner=")), "")
    if (runner.split(".")[-1] in LOCAL_RUNNERS and total_bytes >= MULTIPROCESS_MIN_BYTES
            and "--direct_running_mode" not in given and "--direct_num_workers" not in given):
        ours["direct_running_mode"] = "multi_processing"
        ours["direct_num_workers"] = 2
    if "--default_sdk_harness_log_level" not in given:
        # Worker processes log every bundle at INFO; users want warnings and progress.
        ours["default_sdk_harness_log_level"] = "WARNING"
    options = PipelineOptions(beam_args, **ours)
    return options, options.view_as(NewsbeamOptions)


def _options_parser(options_class):
    parser = argparse.ArgumentParser(add_help=False)
    options_class._add_argparse_args(parser)
    return parser


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas in this process and, through the environment
    they inherit, in the local worker processes it starts (a value the user
    set is kept). Returns whether this process's cap took effect: not on
    systems without glibc, where nothing is changed."""
    os.environ.setdefault("MALLOC_ARENA_MAX", str(arenas))
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
        wanted = int(os.environ["MALLOC_ARENA_MAX"])
    except (OSError, AttributeError, ValueError):
        return False
    return bool(mallopt(_M_ARENA_MAX, wanted))


def make_runner(options):
    """The runner object for ``options``.

    The local FnApiRunner is built the way Beam's DirectRunner builds it, with
    the pipeline options in its provision info: otherwise its worker processes
    start without them (no log level, no custom options).
    """
    from apache_beam.options.pipeline_options import StandardOptions
    from apache_beam.runners import create_runner

    name = options.view_as(StandardOptions).runner or "FnApiRunner"
    if name.split(".")[-1] != "FnApiRunner":
        return create_runner(name)
    limit_malloc_arenas()
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    from pipelines.options import NewsbeamOptions

    # Workers parse these before importing newsbeam, so newsbeam's own options
    # would only be warned about there; the transforms carry their settings.
    ours = {action.dest for action in _options_parser(NewsbeamOptions)._actions}
    beam_only = {k: v for k, v in options.get_all_options(drop_default=True).items() if k not in ours}
    encoded = JobServiceHandle.encode_pipeline_options(beam_only)
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))


def _read_summary_parts(folder: str) -> tuple[list[dict], list[dict]]:
    """The tallies (summed per kind and key) and top entities in ``folder``'s JSON-lines parts."""
    sums: Counter = Counter()
    top: list[dict] = []
    try:
        matches = FileSystems.match([FileSystems.join(folder, "*")])[0].metadata_list
    except Exception:  # no parts
        matches = []
    for match in matches:
        with FileSystems.open(match.path) as f:
            for line in f.read().decode("utf-8").splitlines():
                if not line.strip():
                    continue
                obj = json.loads(line)
                if "top_entities" in obj:
                    top = obj["top_entities"]
                else:
                    sums[(obj["kind"], obj["key"])] += obj["count"]
    return [{"kind": k, "key": key, "count": n} for (k, key), n in sorted(sums.items())], top


def build_summary(tallies: list[dict], top: list[dict], files: int, models: dict[str, str] | None = None) -> dict:
    from pipelines.entities import coverage

    articles = sum(t["count"] for t in tallies if t["kind"] == "articles")
    duplicates = {t["key"]: t["count"] for t in tallies if t["kind"] == "duplicates"}
    rejected = {t["key"]: t["count"] for t in tallies if t["kind"] == "rejected"}
    languages = {t["key"]: t["count"] for t in tallies if t["kind"] == "articles"}
    entities = {t["key"]: t["count"] for t in tallies if t["kind"] == "entities"}
    return {
        "inputs": {"files": files, "records": articles + sum(duplicates.values()) + sum(rejected.values())},
        "articles": articles,
        "duplicates": {"total": sum(duplicates.values()), **dict(sorted(duplicates.items()))},
        "rejected": {"total": sum(rejected.values()), **dict(sorted(rejected.items()))},
        "languages": dict(sorted(languages.items(), key=lambda kv: (-kv[1], kv[0]))),
        "entities": coverage(models, languages, entities),
        "top_entities": top,
    }


# Beam's per-transform execution-time counter (state sampler): time spent inside
# each step itself, not in the steps it feeds, summed over worker processes.
_EXECUTION_MSECS = "ptransform_execution_time:total_msecs"


def stage_seconds(result) -> dict[str, float]:
    """Worker seconds per top-level step of a finished run, from Beam's
    execution-time counters; empty when the runner does not report them."""
    try:
        counters = result.monitoring_metrics().query()["counters"]
    except Exception:  # not every runner's result has monitoring metrics
        return {}
    totals: dict[str, float] = {}
    for counter in counters:
        if _EXECUTION_MSECS in counter.key.metric.name and counter.key.step:
            step = counter.key.step.split("/", 1)[0]
            totals[step] = totals.get(step, 0.0) + (counter.committed or 0) / 1000.0
    return {step: round(s, 3) for step, s in sorted(totals.items(), key=lambda kv: -kv[1]) if s > 0}


def user_counters(result) -> dict[str, int]:
    """The stages' named counters (``stage:name``, e.g. ``clean:rule_photo_credit``)
    of a finished run, summed over steps; empty when the runner does not report them."""
    try:
        counters = result.metrics().query()["counters"]
    except Exception:  # not every runner's result reports metrics
        return {}
    totals: dict[str, int] = {}
    for counter in counters:
        key = f"{counter.key.metric.namespace}:{counter.key.metric.name}"
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[key] = totals.get(key, 0) + (value or 0)
    return dict(sorted(totals.items()))


def _versions(models: dict[str, str]) -> dict:
    return {
        "newsbeam": version("newsbeam"),
        "apache-beam": version("apache-beam"),
        "spacy": version("spacy"),
        "models": {lang: {"package": pkg, "version": version(pkg.replace("_", "-"))}
                   for lang, pkg in sorted(models.items())},
    }


@dataclass
class Prepared:
    """A validated invocation: its arguments, planned inputs and NER models."""

    ns: argparse.Namespace
    beam_args: list[str]
    files: list
    models: dict
    skipped: dict = field(default_factory=dict)  # planned paths not read, by reason

    def never_read(self) -> tuple[str, ...]:
        """newsbeam's own folders: never inputs, wherever they sit."""
        return tuple(f for f in (self.ns.output, self.ns.state_dir) if f)


def prepare(ns: argparse.Namespace, beam_args: list[str], empty_folder_ok: bool = False) -> Prepared:
    """Plan the inputs and validate every option; raises UsageError. Writes nothing."""
    from pipelines.entities import check_models_installed
    from pipelines.options import parse_model_map
    from pipelines.plan import UsageError, plan_inputs

    ns = argparse.Namespace(**vars(ns))
    skipped: Counter = Counter()
    try:
        files = plan_inputs(ns.inputs, tuple(ns.exclude) if ns.exclude else default_exclude(),
                            never_read=tuple(f for f in (ns.output, ns.state_dir) if f), skipped=skipped)
    except UsageError:
        # watch: a folder that exists but holds nothing yet is fine.
        if not (empty_folder_ok and all(FileSystems.get_scheme(i) is not None or os.path.isdir(i)
                                        for i in ns.inputs)):
            raise
        files = []
    _, nb = beam_options(beam_args, ns, sum(max(f.size, 0) for f in files))
    problems = nb.validate_newsbeam()
    if problems:
        raise UsageError("; ".join(problems))
    models = parse_model_map(nb.spacy_model)
    problems = check_models_installed(models)
    if problems:
        raise UsageError("; ".join(problems))
    if ns.state_dir:
        # Recorded in the state (HEAD, run.json): must not depend on the working directory.
        for name in ("state_dir", "output"):
            if FileSystems.get_scheme(getattr(ns, name)) is None:
                setattr(ns, name, os.path.abspath(getattr(ns, name)))
    return Prepared(ns, beam_args, files, models, dict(sorted(skipped.items())))


WORK = "_work"
WARC_SKIPPED = "read:warc_skipped_"  # counters ReadFileFn keeps per kind of WARC record that is no page
PLAN_FILE = "plan.jsonl"
DONE = "done"
PART_DIGITS = 6


def runs_in_parts(options) -> bool:
    """Whether a run executes in parts: on Beam's local runners, which hold
    every shuffle in the launcher's memory, unless ``--chunk-bytes 0``. A
    cluster runner's own shuffle handles any size: it runs one pipeline."""
    from apache_beam.options.pipeline_options import StandardOptions

    from pipelines.options import NewsbeamOptions

    runner = (options.view_as(StandardOptions).runner or "FnApiRunner").split(".")[-1]
    return runner in LOCAL_RUNNERS and options.view_as(NewsbeamOptions).chunk_bytes > 0


def plan_parts(files: list, part_size: int, limit: int | None = None) -> list[list]:
    """The inputs dealt out to as many parts as ``part_size`` asks for (the
    total over ``part_size``, rounded up): taken in path order, each goes to
    the part with the fewest bytes so far. So the parts come out even, and
    each holds inputs from all over the input: a folder laid out by topic,
    source or date gives every part a share of each, and the work left after
    dedupe, which drops more in some folders than in others, stays even
    across the workers. A part never holds more than ``limit`` bytes (default
    ``part_size``): an input that would take it over goes to a part of its
    own; so does an input bigger than that. The plan depends only on the
    inputs' paths and sizes, so every attempt of a run plans the same parts,
    which is what lets a resumed run skip the parts it finished."""
    import heapq
    import math

    limit = part_size if limit is None else limit
    if part_size <= 0 or limit <= 0:
        raise ValueError("part_size and limit must be positive")
    ordered = sorted(files, key=lambda f: f.path)
    total = sum(max(f.size, 0) for f in ordered)
    parts: list[list] = [[] for _ in range(max(1, math.ceil(total / part_size)))]
    emptiest = [(0, i) for i in range(len(parts))]  # (bytes so far, part): a heap, the first of equals on top
    for item in ordered:
        weight = max(item.size, 0)
        size, index = emptiest[0] if emptiest else (0, -1)
        if index < 0 or (size > 0 and size + weight > limit):
            parts.append([])
            size, index = 0, len(parts) - 1
        else:
            heapq.heappop(emptiest)
        parts[index].append(item)
        if size + weight < limit:  # a full part is dealt nothing more
            heapq.heappush(emptiest, (size + weight, index))
    return [part for part in parts if part]


def part_bytes(total: int, chunk_bytes: int, workers: int) -> int:
    """The size to cut parts at: at most ``chunk_bytes``, and as even as it can
    be over a number of parts that is a multiple of ``workers`` (an input
    worth spreading, of at least ``MULTIPROCESS_MIN_BYTES``, keeps every
    worker busy to the end rather than one finishing a big part alone)."""
    import math

    count = max(1, math.ceil(total / chunk_bytes))
    if total >= MULTIPROCESS_MIN_BYTES and workers > 1:
        count = math.ceil(count / workers) * workers
    return max(1, math.ceil(total / count))


def part_name(index: int) -> str:
    return f"p{index:0{PART_DIGITS}d}"


def resume_key(files: list, ns: argparse.Namespace) -> str:
    """What makes two attempts the same run: the same inputs (path, size,
    mtime), options and newsbeam version."""
    import hashlib

    settings = {k: v for k, v in sorted(vars(ns).items()) if k not in LAUNCHER_ARGS}
    payload = json.dumps({
        "inputs": [(f.path, f.size, f.mtime) for f in sorted(files, key=lambda f: f.path)],
        "options": settings, "version": version("newsbeam"),
    }, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _single_process_args(beam_args: list[str]) -> tuple[list[str], int | None]:
    """Beam arguments for one part's pipeline (the parts are spread over
    processes instead), and the number of workers the user asked for."""
    kept, workers, skip = [], None, False
    for i, arg in enumerate(beam_args):
        if skip:
            skip = False
            continue
        name, eq, value = arg.partition("=")
        if name in ("--direct_num_workers", "--direct_running_mode"):
            if not eq and i + 1 < len(beam_args):
                value, skip = beam_args[i + 1], True
            if name == "--direct_num_workers":
                try:
                    workers = int(value)
                except ValueError:
                    workers = None
            continue
        kept.append(arg)
    return kept, workers


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 2))


def run_unit(spec: dict) -> dict:
    """Run one unit of work (a phase, for one part of the input or for all)
    in this process: a Beam pipeline of its own, except the dedupe phase,
    which reads the fingerprint files in passes (``pipeline.run_dedupe_phase``);
    returns its metrics. Called in the launcher or in a worker process of the pool."""
    import apache_beam as beam

    from pipelines import pipeline as composition
    from pipelines.records import load_schemas

    started = time.time()
    ns = argparse.Namespace(**spec["ns"])
    from apache_beam.options.pipeline_options import DirectOptions

    options, nb = beam_options(spec["beam_args"], ns, 0)
    phase, part, work = spec["phase"], spec.get("part"), spec["work"]
    if phase == "dedupe":
        counters = composition.run_dedupe_phase(work, nb, load_schemas(), spec.get("state_in"),
                                                spec.get("state_out"))
        seconds = round(time.time() - started, 3)
        return {"seconds": seconds, "counters": counters, "stage_seconds": {"Dedupe": seconds}}
    options.view_as(DirectOptions).direct_running_mode = "in_memory"
    options.view_as(DirectOptions).direct_num_workers = 1
    schemas = load_schemas()
    p = beam.Pipeline(runner=make_runner(options), options=options)
    if phase == "clean":
        composition.build_clean_phase(p, spec["plan"], part, work, nb, schemas, state_out=spec.get("state_out"))
    elif phase == "annotate":
        composition.build_annotate_phase(p, part, work, nb, schemas)
    elif phase == "merge":
        composition.build_merge_phase(p, work, nb, schemas, spec.get("state_in"), spec.get("state_out"))
    else:
        raise ValueError(f"unknown phase {phase!r}")
    result = p.run()
    result.wait_until_finish()
    return {"seconds": round(time.time() - started, 3), "counters": user_counters(result),
            "stage_seconds": stage_seconds(result)}


_progress_counter = None


def _count_progress(n: int) -> None:
    with _progress_counter.get_lock():
        _progress_counter.value += n


def _init_pool_worker(counter, verbose: bool) -> None:
    """Set up a worker process of the pool: its annotated articles are added
    to ``counter``; interrupts are the launcher's to handle."""
    import signal

    global _progress_counter
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_malloc_arenas()
    logging.basicConfig(level=logging.WARNING if verbose else logging.ERROR, format="%(message)s")
    _progress_counter = counter
    from pipelines import pipeline as composition

    composition.progress_sink = _count_progress


def _unit_outputs(phase: str, part: str | None, work: str, out_dir: str, state_out: str | None) -> list[str]:
    """Glob patterns of everything a unit writes: deleted before it runs, so
    a unit cut short is redone from nothing."""
    from pipelines.aggregate import CSV_NAME
    from pipelines.pipeline import WORK_DIRS
    from pipelines.state import MANIFEST_PARTS, TOTALS

    def w(kind, pattern):
        return FileSystems.join(work, WORK_DIRS[kind], pattern)

    def o(folder, pattern):
        return FileSystems.join(out_dir, folder, pattern)

    patterns = {
        "clean": [w("clean", f"{part}-*"), w("fingerprints", f"{part}-*"), o("rejected", f"{part}-clean-*"),
                  w("summary", f"{part}-clean-*")],
        "dedupe": [o("duplicates", "*"), w("duplicate_ids", "*"), w("summary", "dedupe-*")],
        "annotate": [o("articles", f"{part}-*"), o("rejected", f"{part}-annotate-*"), w("counts", f"{part}-*"),
                     w("summary", f"{part}-annotate-*")],
        "merge": [o("entity_counts", "*"), FileSystems.join(out_dir, CSV_NAME), w("summary", "merge-*")],
    }[phase]
    if state_out:
        patterns += {
            "clean": [FileSystems.join(state_out, MANIFEST_PARTS, f"{part}-*")],
            "dedupe": [FileSystems.join(state_out, "dedupe", "*")],
            "annotate": [],
            "merge": [FileSystems.join(state_out, TOTALS + "*")],
        }[phase]
    return patterns


def _delete_matching(patterns: list[str]) -> None:
    from pipelines.state import _delete

    for pattern in patterns:
        try:
            found = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
        except Exception:  # nothing there
            found = []
        _delete(found)


def _delete_beam_temp(folders: list[str]) -> None:
    """Beam's write transforms stage files in ``beam-temp-*`` folders next to
    their output; a killed unit leaves them behind."""
    import glob

    from pipelines.state import _delete

    for folder in filter(None, folders):
        if FileSystems.get_scheme(folder) in (None, "file"):
            _delete(sorted(glob.glob(os.path.join(folder, "**", "beam-temp-*"), recursive=True)))
        else:
            _delete_matching([FileSystems.join(folder, "**", "beam-temp-*")])


def _count_records(pattern: str) -> int:
    """Records in the Avro files matching ``pattern`` (read from each file's blocks)."""
    import fastavro

    total = 0
    try:
        paths = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    except Exception:
        return 0
    for path in paths:
        with FileSystems.open(path, compression_type="uncompressed") as f:
            total += sum(block.num_records for block in fastavro.block_reader(f))
    return total


def execute_in_parts(prep: Prepared, files: list, out_dir: str, final_output: str, state_in: str | None,
                     state_out: str | None) -> tuple[dict, dict, dict]:
    """Run the four phases over ``files`` into ``out_dir``: returns (counters,
    stage seconds, what the summary says of the execution). A unit of work that finished
    in an earlier attempt of the same run (its marker under the work folder)
    is not run again."""
    import concurrent.futures
    import multiprocessing

    from pipelines.console import ProgressDisplay, start_line
    from pipelines.pipeline import WORK_DIRS
    from pipelines.read import RANGE_BYTES, split_ranges, write_plan
    from pipelines.state import read_text, write_atomic

    work = FileSystems.join(out_dir, WORK)
    ns = argparse.Namespace(**{**vars(prep.ns), "output": out_dir})
    beam_args, asked = _single_process_args(prep.beam_args)
    _, nb = beam_options(beam_args, ns, 0)
    wanted = asked or default_workers()
    # A big uncompressed JSONL file is byte ranges, each a unit parts are made of, cut no bigger than a
    # part: a range is never split further, so a bigger one would hold a bigger part in a worker's memory.
    size = part_bytes(sum(max(f.size, 0) for f in files), nb.chunk_bytes, wanted)
    parts = plan_parts(split_ranges(files, range_bytes=min(RANGE_BYTES, size)), size, limit=nb.chunk_bytes)
    names = [part_name(i) for i in range(len(parts))]
    key = resume_key(files, prep.ns)
    marker_dir = FileSystems.join(work, DONE)
    run_key = FileSystems.join(work, "run-key")
    previous = read_text(run_key)
    if previous is not None and previous.strip() != key:
        from pipelines.state import _delete

        _delete([work])
        previous = None
    done: dict[str, dict] = {}
    resumed = 0
    if previous is not None:
        for unit in [f"clean-{n}" for n in names] + ["dedupe"] + [f"annotate-{n}" for n in names] + ["merge"]:
            text = read_text(FileSystems.join(marker_dir, unit + ".json"))
            if text:
                done[unit] = json.loads(text)
        resumed = len(done)
        if done:
            _LOG.warning("newsbeam: resuming: %d of %d units of work were done by an earlier attempt",
                         len(done), 2 * len(parts) + 2)
    else:
        write_atomic(run_key, key.encode("utf-8"))
    _delete_beam_temp([out_dir, state_out])
    for name, part in zip(names, parts):
        plan = FileSystems.join(work, "plan", f"{name}.jsonl")
        if f"clean-{name}" not in done:
            write_plan(part, plan)

    workers = max(1, min(wanted, len(parts)))
    _LOG.warning("%s", start_line(len(files), sum(max(f.size, 0) for f in files), final_output,
                                  "FnApiRunner", workers))
    base = {"ns": vars(ns), "beam_args": beam_args, "work": work, "state_in": state_in, "state_out": state_out}
    counter = multiprocessing.get_context("spawn").Value("q", 0)
    global _progress_counter
    _progress_counter = counter
    from pipelines import pipeline as composition

    composition.progress_sink = _count_progress
    progress = ProgressDisplay(sum(max(f.size, 0) for f in files), "bytes", nb.progress_interval)
    timings: dict[str, float] = {}
    pool = alone = None
    if workers > 1:
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_pool_worker, initargs=(counter, bool(getattr(prep.ns, "verbose", False))))

    def run_all(phase: str, specs: list[tuple[str, dict]], unit: str, total: int, done_before: int,
                amount_of=None, in_pool=None) -> None:
        """Run the units of one phase (in the pool when there are several, or in
        ``in_pool``), reporting progress: ``amount_of(unit)`` is what a finished unit
        adds; without it the shared count of annotated articles is the progress."""
        executor = in_pool or pool
        phase_started = time.time()
        todo = [(u, sp) for u, sp in specs if u not in done]
        for _, sp in todo:
            _delete_matching(_unit_outputs(sp["phase"], sp.get("part"), work, out_dir, state_out))
        counted_from = counter.value
        finished = 0
        progress.update(done_before, phase=phase, total=total, unit=unit)

        def now_done() -> int:
            live = finished if amount_of else counter.value - counted_from
            return done_before + live

        def record(u: str, result: dict) -> None:
            nonlocal finished
            done[u] = result
            write_atomic(FileSystems.join(marker_dir, u + ".json"), json.dumps(result).encode("utf-8"))
            finished += amount_of(u) if amount_of else 0

        if executor is None:
            for u, sp in todo:
                progress.update(now_done())
                record(u, run_unit(sp))
        else:
            futures = {executor.submit(run_unit, sp): u for u, sp in todo}
            pending = set(futures)
            while pending:
                finished_now, pending = concurrent.futures.wait(
                    pending, timeout=1.0, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in finished_now:
                    record(futures[future], future.result())  # a failed unit fails the run
                progress.update(now_done())
        timings[phase] = round(time.time() - phase_started, 3)

    try:
        sizes = {f"clean-{n}": sum(max(f.size, 0) for f in part) for n, part in zip(names, parts)}
        run_all("read+clean", [(f"clean-{n}", {**base, "phase": "clean", "part": n,
                                               "plan": FileSystems.join(work, "plan", f"{n}.jsonl")})
                               for n in names], "bytes", sum(sizes.values()),
                sum(v for u, v in sizes.items() if u in done), amount_of=sizes.get)
        # Dedupe holds state for every article of the run at once: in a process of its own
        # (when there is a pool), which gives that memory back when it ends, instead of in
        # a pool worker that would keep it, fragmented, through the annotate phase.
        if pool is not None and "dedupe" not in done:
            alone = concurrent.futures.ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1,
                initializer=_init_pool_worker, initargs=(counter, bool(getattr(prep.ns, "verbose", False))))
        run_all("dedupe", [("dedupe", {**base, "phase": "dedupe"})], "units", 1, int("dedupe" in done),
                amount_of=lambda u: 1, in_pool=alone)
        if alone is not None:
            alone.shutdown(wait=True)
        clean_articles = _count_records(FileSystems.join(work, WORK_DIRS["fingerprints"], "*.avro"))
        duplicates = _count_records(FileSystems.join(out_dir, "duplicates", "*.avro"))
        annotated_before = sum(_count_records(FileSystems.join(out_dir, "articles", f"{n}-*.avro"))
                               for n in names if f"annotate-{n}" in done)
        run_all("annotate", [(f"annotate-{n}", {**base, "phase": "annotate", "part": n}) for n in names],
                "articles", max(clean_articles - duplicates, 0), annotated_before)
        run_all("merge", [("merge", {**base, "phase": "merge"})], "units", 1, int("merge" in done),
                amount_of=lambda u: 1)
    finally:
        progress.close()
        if alone is not None:
            alone.shutdown(wait=False, cancel_futures=True)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        composition.progress_sink = None

    counters: dict[str, int] = {}
    stage_totals: dict[str, float] = {}
    for result in done.values():
        for k, v in result.get("counters", {}).items():
            counters[k] = counters.get(k, 0) + v
        for k, v in result.get("stage_seconds", {}).items():
            stage_totals[k] = stage_totals.get(k, 0.0) + v
    return (dict(sorted(counters.items())),
            {k: round(v, 3) for k, v in sorted(stage_totals.items(), key=lambda kv: -kv[1])},
            {"phase_seconds": timings, "parts": len(parts), "workers": workers,
             "units_done_earlier": resumed})


def execute(prep: Prepared, files: list, out_dir: str, final_output: str, started: float,
            state_in: str | None = None, state_out: str | None = None, extra: dict | None = None) -> dict:
    """Run the pipeline over ``files`` into ``out_dir`` (a staging folder) and
    write its summary.json there; raises when the pipeline fails.

    On a local runner the run goes in parts (``execute_in_parts``): memory
    stays flat whatever the input size. Elsewhere it is one pipeline."""
    import apache_beam as beam

    from pipelines.pipeline import SUMMARY_DIR, build_pipeline
    from pipelines.read import split_ranges, write_plan
    from pipelines.records import load_schemas
    from pipelines.state import _delete

    total_bytes = sum(max(f.size, 0) for f in files)
    ns = argparse.Namespace(**{**vars(prep.ns), "output": out_dir})
    options, nb = beam_options(prep.beam_args, ns, total_bytes)
    from pipelines.console import start_line

    pipeline_started = time.time()
    work = FileSystems.join(out_dir, WORK)
    if runs_in_parts(options):
        counters, stages, parts_info = execute_in_parts(prep, files, out_dir, final_output, state_in, state_out)
        summary_dir = FileSystems.join(work, SUMMARY_DIR)
    else:
        direct = options.get_all_options()
        workers = direct.get("direct_num_workers") if direct.get("direct_running_mode") == "multi_processing" else None
        _LOG.warning("%s", start_line(len(files), total_bytes, final_output, direct.get("runner"), workers))
        plan = FileSystems.join(work, PLAN_FILE)
        write_plan(split_ranges(files), plan)
        schemas = load_schemas()
        p = beam.Pipeline(runner=make_runner(options), options=options)
        build_pipeline(p, plan, nb, schemas, state_in=state_in, state_out=state_out)
        result = p.run()
        result.wait_until_finish()
        counters, stages, parts_info = user_counters(result), stage_seconds(result), None
        summary_dir = FileSystems.join(out_dir, SUMMARY_DIR)
    pipeline_seconds = time.time() - pipeline_started

    tallies, top = _read_summary_parts(summary_dir)
    summary = build_summary(tallies, top, len(files), prep.models)
    if prep.skipped:
        summary["inputs"]["skipped"] = prep.skipped
    warc_skipped = {k[len(WARC_SKIPPED):]: v for k, v in counters.items() if k.startswith(WARC_SKIPPED) and v}
    if warc_skipped:
        # WARC records that are no HTML page (requests, metadata, images...): not
        # articles, so not in inputs.records, but counted rather than lost.
        summary["inputs"]["warc_records_skipped"] = {"total": sum(warc_skipped.values()), **warc_skipped}
    timings = {"wall_seconds": round(time.time() - started, 3),
               "pipeline_seconds": round(pipeline_seconds, 3),
               "stage_seconds": stages}
    if parts_info:
        timings["phase_seconds"] = parts_info.pop("phase_seconds")
    summary.update({
        "output": final_output,
        "versions": _versions(prep.models),
        "options": {k: v for k, v in sorted({**options.get_all_options(drop_default=True),
                                             "output": prep.ns.output}.items())},
        "timings": timings,
        "execution": parts_info or {"parts": 1, "workers": None},
        "counters": counters,
    })
    summary.update(extra or {})
    _delete([FileSystems.join(out_dir, SUMMARY_DIR), work])
    with FileSystems.create(FileSystems.join(out_dir, "summary.json")) as f:
        f.write(json.dumps(summary, indent=2, sort_keys=False, default=str).encode("utf-8"))
    return summary


def run_standalone(prep: Prepared, started: float) -> dict:
    """No --state-dir: the run writes OUTPUT/.staging/<run-id>/ and swaps it into
    OUTPUT/ only when it succeeded, so a failed or killed run leaves the
    previous output whole. Returns the summary; raises RunFailed."""
    from pipelines.pipeline import SUMMARY_DIR
    from pipelines.state import STAGING, discard_staging, new_run_id, publish_flat

    output, run_id = prep.ns.output, new_run_id()
    staging = FileSystems.join(output, STAGING, run_id)
    try:
        summary = execute(prep, prep.files, staging, output, started)
    except BaseException as e:  # an interrupt too: its staging folder must go
        try:
            discard_staging(output, run_id)
        except Exception as cleanup:  # cleaning up must not hide the real outcome
            _LOG.warning("newsbeam: could not remove %s: %s", staging, cleanup)
        if not isinstance(e, Exception):
            raise
        raise RunFailed(failure_line(e, f"the previous output in {output} is intact")) from e
    publish_flat(staging, output, always_replace=(*RECORD_FOLDERS, SUMMARY_DIR, "summary.json"))
    discard_staging(output)  # what killed runs left behind
    return summary


def run_incremental(prep: Prepared, store, files: list, started: float, skip_empty: bool = False,
                    hasher=None) -> dict | None:
    """One run against the state dir (the caller holds its lock): new and changed
    files only, committed atomically. Returns the summary, or None when
    ``skip_empty`` and nothing is new; raises RunFailed or PublishFailed."""
    from pipelines.state import RUNS, STAGING, file_sha256, new_run_id, prune_runs, select_inputs

    output = prep.ns.output
    store.recover(abandon=False)
    manifest = store.load_manifest()
    selection = select_inputs(files, manifest, hasher or file_sha256)
    if skip_empty and not selection.process:
        store.recover()
        return None
    key = resume_key(selection.process, prep.ns)
    resumed = store.resumable(key)
    store.recover(keep=resumed)
    run_id = resumed or new_run_id()
    state_in = store.state_in()
    if resumed:
        _LOG.warning("newsbeam: carrying on with run %s, which stopped before it was done", run_id)
        pending = store.pending(run_id)
    else:
        pending = store.begin(run_id, output, key)
    extra = {"run_id": run_id, "incremental": {**selection.describe(), "state_dir": store.root}}
    try:
        summary = execute(prep, selection.process, FileSystems.join(output, STAGING, run_id),
                          FileSystems.join(output, RUNS, run_id), started, state_in, pending, extra)
        store.seal(run_id, manifest, selection)
        store.commit(run_id, output)
    except BaseException as e:  # an interrupt too
        # A run in parts keeps the parts it finished: the next attempt with the
        # same inputs and options carries on from there. Otherwise the pending
        # run is abandoned.
        keep = runs_in_parts(beam_options(prep.beam_args, prep.ns, 0)[0])
        if not keep:
            try:
                store.abandon(run_id)
            except Exception as cleanup:
                _LOG.warning("newsbeam: run %s left files the next run removes: %s", run_id, cleanup)
        if not isinstance(e, Exception):
            raise
        outcome = f"nothing was committed; the previous output in {output} is intact"
        if keep:
            outcome += "; the next run with the same inputs and options carries on from the parts already done"
        raise RunFailed(failure_line(e, outcome)) from e
    try:
        store.roll_forward(run_id, output)
        prune_runs(output, prep.ns.keep_runs)
    except Exception as e:
        raise PublishFailed(f"run {run_id} is committed but publishing it failed ({e}); "
                            "the next run finishes publishing it") from e
    return summary


def acquire_lock(prep: Prepared, run_id: str):
    from pipelines.plan import UsageError
    from pipelines.state import LockHeld, StateLock

    try:
        return StateLock(prep.ns.state_dir, run_id, stale_after=prep.ns.lock_stale_after).acquire()
    except LockHeld:
        raise
    except Exception as e:
        raise UsageError(f"state dir {prep.ns.state_dir!r} is not usable: {e}") from e




def default_exclude():
    from pipelines.options import DEFAULT_EXCLUDE

    return DEFAULT_EXCLUDE
