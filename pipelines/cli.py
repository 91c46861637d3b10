"""Command line: ``newsbeam run INPUT... --output DIR [options] [Beam options]``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from importlib import metadata

from apache_beam.io.filesystems import FileSystems

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

RECORD_FOLDERS = ("articles", "duplicates", "rejected", "entity_counts")
# Below this much input the cost of starting worker processes (each loads the
# spaCy model) is more than a second core saves.
MULTIPROCESS_MIN_BYTES = 512 * 1024
LOCAL_RUNNERS = ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")

_LOG = logging.getLogger("newsbeam")

BEAM_EPILOG = """\
Any other option is passed to Apache Beam as a pipeline option; write Beam
options as --name=value. Examples: --runner=DataflowRunner --project=P
--region=R --temp_location=gs://B/tmp, --runner=PortableRunner
--job_endpoint=localhost:8099 --environment_type=EXTERNAL
--environment_config=localhost:50000, --direct_num_workers=2.
Default runner: Beam's local FnApiRunner (the engine behind the DirectRunner,
chosen explicitly so nothing is ever downloaded), on two worker processes when
the input is large enough to pay for them.

Exit status: 0 the run completed (rejected inputs included), 1 the run failed,
2 usage error (bad option, missing input, unwritable output).
"""


def _build_parser():
    from pipelines.options import NewsbeamOptions

    parser = argparse.ArgumentParser(
        prog="newsbeam",
        description="Turn folders of scraped news articles into clean, deduplicated, language-tagged, "
                    "entity-annotated Avro records plus per-entity mention counts.")
    parser.add_argument("--version", action="version", version=f"newsbeam {_version('newsbeam')}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run", help="process input files once and write the output folder",
        description="Read articles from files, folders (recursively) and globs; write "
                    "OUTPUT/{articles,duplicates,rejected,entity_counts}/*.avro and OUTPUT/summary.json.",
        epilog=BEAM_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("inputs", nargs="+", metavar="INPUT",
                     help="article file (.txt .md .json .jsonl .ndjson .html .htm, optionally .gz), "
                          "folder, or glob; local or any Beam FileSystems URL")
    NewsbeamOptions._add_argparse_args(run)
    return parser


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _check_output_writable(output: str) -> None:
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


def _clear_previous_output(output: str) -> None:
    """Old part files would mix with new ones (shard counts differ between runs)."""
    from pipelines.pipeline import SUMMARY_DIR

    stale = [FileSystems.join(output, name) for name in (*RECORD_FOLDERS, SUMMARY_DIR, "summary.json")]
    stale = [path for path in stale if FileSystems.exists(path)]
    if stale:
        FileSystems.delete(stale)


def _beam_options(beam_args: list[str], ns: argparse.Namespace, total_bytes: int):
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.options import DEFAULT_EXCLUDE, NewsbeamOptions

    ours = {k: v for k, v in vars(ns).items() if k not in ("command", "inputs")}
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
    return {
        "inputs": {"files": files, "records": articles + sum(duplicates.values()) + sum(rejected.values())},
        "articles": articles,
        "duplicates": {"total": sum(duplicates.values()), **dict(sorted(duplicates.items()))},
        "rejected": {"total": sum(rejected.values()), **dict(sorted(rejected.items()))},
        "languages": dict(sorted(languages.items(), key=lambda kv: (-kv[1], kv[0]))),
        "top_entities": top,
    }


def format_summary(summary: dict) -> str:
    lines = [
        f"newsbeam: {summary['inputs']['records']} input records from {summary['inputs']['files']} files "
        f"in {summary['timings']['wall_seconds']:.1f}s",
        f"  articles kept: {summary['articles']}",
        "  duplicates:    {total}".format(**summary["duplicates"]) + "".join(
            f" ({k} {v})" for k, v in summary["duplicates"].items() if k != "total"),
        f"  rejected:      {summary['rejected']['total']}",
    ]
    for reason, n in summary["rejected"].items():
        if reason != "total":
            lines.append(f"    {reason}: {n}")
    langs = ", ".join(f"{k} {v}" for k, v in summary["languages"].items()) or "-"
    lines.append(f"  languages:     {langs}")
    lines.append("  top entities:")
    for e in summary["top_entities"][:10]:
        lines.append(f"    {e['mentions']:>6}  {e['entity']} ({e['label']}, {e['documents']} articles)")
    if not summary["top_entities"]:
        lines.append("    -")
    lines.append(f"  output:        {summary['output']}")
    return "\n".join(lines)


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


def _versions(models: dict[str, str]) -> dict:
    return {
        "newsbeam": _version("newsbeam"),
        "apache-beam": _version("apache-beam"),
        "spacy": _version("spacy"),
        "models": {lang: {"package": pkg, "version": _version(pkg.replace("_", "-"))}
                   for lang, pkg in sorted(models.items())},
    }


def run(argv_ns: argparse.Namespace, beam_args: list[str]) -> int:
    import apache_beam as beam

    from pipelines.entities import check_models_installed
    from pipelines.options import parse_model_map
    from pipelines.pipeline import SUMMARY_DIR, build_pipeline
    from pipelines.plan import UsageError, plan_inputs
    from pipelines.records import load_schemas

    started = time.time()
    try:
        ns = argv_ns
        files = plan_inputs(ns.inputs, tuple(ns.exclude) if ns.exclude else _default_exclude())
        total_bytes = sum(max(f.size, 0) for f in files)
        options, nb = _beam_options(beam_args, ns, total_bytes)
        problems = nb.validate_newsbeam()
        if problems:
            raise UsageError("; ".join(problems))
        models = parse_model_map(nb.spacy_model)
        problems = check_models_installed(models)
        if problems:
            raise UsageError("; ".join(problems))
        _check_output_writable(nb.output)
    except UsageError as e:
        print(f"newsbeam: error: {e}", file=sys.stderr)
        return EXIT_USAGE

    _clear_previous_output(nb.output)
    schemas = load_schemas()
    _LOG.warning("newsbeam: %d input files (%.1f MB) -> %s", len(files), total_bytes / 1e6, nb.output)
    pipeline_started = time.time()
    try:
        p = beam.Pipeline(options=options)
        build_pipeline(p, files, nb, schemas)
        result = p.run()
        result.wait_until_finish()
    except Exception as e:
        _LOG.exception("pipeline failed")
        print(f"newsbeam: error: the run failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    pipeline_seconds = time.time() - pipeline_started

    tallies, top = _read_summary_parts(nb.output)
    summary = build_summary(tallies, top, len(files))
    summary.update({
        "output": nb.output,
        "versions": _versions(models),
        "options": {k: v for k, v in sorted(options.get_all_options(drop_default=True).items())},
        "timings": {"wall_seconds": round(time.time() - started, 3),
                    "pipeline_seconds": round(pipeline_seconds, 3),
                    "stage_seconds": stage_seconds(result)},
    })
    FileSystems.delete([FileSystems.join(nb.output, SUMMARY_DIR)])
    with FileSystems.create(FileSystems.join(nb.output, "summary.json")) as f:
        f.write(json.dumps(summary, indent=2, sort_keys=False, default=str).encode("utf-8"))
    print(format_summary(summary))
    return EXIT_OK


def _default_exclude():
    from pipelines.options import DEFAULT_EXCLUDE

    return DEFAULT_EXCLUDE


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    parser = _build_parser()
    argv = sys.argv[1:] if argv is None else argv
    ns, extra = parser.parse_known_args(argv)
    if ns.command is None:
        parser.print_help()
        return EXIT_USAGE
    if ns.command == "run":
        return run(ns, extra)
    parser.error(f"unknown command {ns.command}")
    return EXIT_USAGE
