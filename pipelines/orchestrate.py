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
    "RECORD_FOLDERS", "LAUNCHER_ARGS", "failure_line", "root_cause",
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


def _read_summary_parts(output: str) -> tuple[list[dict], list[dict]]:
    from pipelines.pipeline import SUMMARY_DIR

    tallies, top = [], []
    pattern = FileSystems.join(output, SUMMARY_DIR, "part*")
    for match in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(match.path) as f:
            for line in f.read().decode("utf-8").splitlines():
                if not line.strip():
                    continue
                obj = json.loads(line)
                if "top_entities" in obj:
                    top = obj["top_entities"]
                else:
                    tallies.append(obj)
    return tallies, top


def build_summary(tallies: list[dict], top: list[dict], files: int) -> dict:
    articles = sum(t["count"] for t in tallies if t["kind"] == "articles")
    duplicates = {t["key"]: t["count"] for t in tallies if t["kind"] == "duplicates"}
    rejected = {t["key"]: t["count"] for t in tallies if t["kind"] == "rejected"}
    languages = {t["key"]: t["count"] for t in tallies if t["kind"] == "articles"}
    no_model = {t["key"].split(":", 1)[1]: t["count"] for t in tallies
                if t["kind"] == "entities" and t["key"].startswith("no_model:")}
    return {
        "inputs": {"files": files, "records": articles + sum(duplicates.values()) + sum(rejected.values())},
        "articles": articles,
        "duplicates": {"total": sum(duplicates.values()), **dict(sorted(duplicates.items()))},
        "rejected": {"total": sum(rejected.values()), **dict(sorted(rejected.items()))},
        "languages": dict(sorted(languages.items(), key=lambda kv: (-kv[1], kv[0]))),
        "entities": {"articles_without_model": sum(no_model.values()),
                     "without_model_by_language": dict(sorted(no_model.items()))},
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


def execute(prep: Prepared, files: list, out_dir: str, final_output: str, started: float,
            state_in: str | None = None, state_out: str | None = None, extra: dict | None = None) -> dict:
    """Run the pipeline over ``files`` into ``out_dir`` (a staging folder) and
    write its summary.json there; raises when the pipeline fails."""
    import apache_beam as beam

    from pipelines.pipeline import SUMMARY_DIR, build_pipeline
    from pipelines.records import load_schemas

    total_bytes = sum(max(f.size, 0) for f in files)
    ns = argparse.Namespace(**{**vars(prep.ns), "output": out_dir})
    options, nb = beam_options(prep.beam_args, ns, total_bytes)
    schemas = load_schemas()
    from pipelines.console import human_bytes, plural

    _LOG.warning("newsbeam: %s (%s) -> %s", plural(len(files), "input file"), human_bytes(total_bytes), final_output)
    pipeline_started = time.time()
    p = beam.Pipeline(runner=make_runner(options), options=options)
    build_pipeline(p, files, nb, schemas, state_in=state_in, state_out=state_out)
    result = p.run()
    result.wait_until_finish()
    pipeline_seconds = time.time() - pipeline_started

    tallies, top = _read_summary_parts(out_dir)
    summary = build_summary(tallies, top, len(files))
    if prep.skipped:
        summary["inputs"]["skipped"] = prep.skipped
    summary.update({
        "output": final_output,
        "versions": _versions(prep.models),
        "options": {k: v for k, v in sorted({**options.get_all_options(drop_default=True),
                                             "output": prep.ns.output}.items())},
        "timings": {"wall_seconds": round(time.time() - started, 3),
                    "pipeline_seconds": round(pipeline_seconds, 3),
                    "stage_seconds": stage_seconds(result)},
        "counters": user_counters(result),
    })
    summary.update(extra or {})
    FileSystems.delete([FileSystems.join(out_dir, SUMMARY_DIR)])
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
    store.recover()
    manifest = store.load_manifest()
    selection = select_inputs(files, manifest, hasher or file_sha256)
    if skip_empty and not selection.process:
        return None
    run_id = new_run_id()
    state_in = store.state_in()
    pending = store.begin(run_id, output)
    extra = {"run_id": run_id, "incremental": {**selection.describe(), "state_dir": store.root}}
    try:
        summary = execute(prep, selection.process, FileSystems.join(output, STAGING, run_id),
                          FileSystems.join(output, RUNS, run_id), started, state_in, pending, extra)
        store.seal(run_id, manifest, selection)
        store.commit(run_id, output)
    except BaseException as e:  # an interrupt too: the pending run must be abandoned
        try:
            store.abandon(run_id)
        except Exception as cleanup:
            _LOG.warning("newsbeam: run %s left files the next run removes: %s", run_id, cleanup)
        if not isinstance(e, Exception):
            raise
        raise RunFailed(failure_line(e, f"nothing was committed; the previous output in {output} is intact")) from e
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
