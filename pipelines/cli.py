"""Command line: ``newsbeam run INPUT... --output DIR [options] [Beam options]``,
``newsbeam watch INPUT_DIR --output DIR --state-dir STATE [--interval SECONDS]`` and
``newsbeam report OUT [--output FILE]``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

__all__ = ["main", "format_summary"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3

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
2 usage error (bad option, missing input, unwritable output), 3 another run
holds the --state-dir lock (nothing was done).
"""

WATCH_DESCRIPTION = """\
Keep processing INPUT_DIR incrementally: every --interval seconds, files that
are new or changed since the last committed run and whose size and
modification time did not change since the previous check are processed as one
run (OUTPUT/runs/<run-id>/, OUTPUT/latest). Write files elsewhere and move them
in, or give them a name starting with '.' until they are complete, to be sure a
half-written file is never read. SIGINT (Ctrl-C) or SIGTERM stops after the
current batch, which is committed (exit status 0); a second one stops at once
(exit status 130 or 143; the batch is then not committed, the previous output
is kept).
"""


def _build_parser():
    from pipelines.options import NewsbeamOptions
    from pipelines.orchestrate import version

    parser = argparse.ArgumentParser(
        prog="newsbeam",
        description="Turn folders of scraped news articles into clean, deduplicated, language-tagged, "
                    "entity-annotated Avro records plus per-entity mention counts.")
    parser.add_argument("--version", action="version", version=f"newsbeam {version('newsbeam')}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run", help="process input files once and write the output folder",
        description="Read articles from files, folders (recursively) and globs; write "
                    "OUTPUT/{articles,duplicates,rejected,entity_counts}/*.avro and OUTPUT/summary.json. "
                    "With --state-dir, read only new and changed files and write OUTPUT/runs/<run-id>/ "
                    "(OUTPUT/latest names the newest).",
        epilog=BEAM_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("inputs", nargs="+", metavar="INPUT",
                     help="article file (.txt .md .json .jsonl .ndjson .html .htm .csv .tsv .warc .arc, "
                          "each optionally .gz .bz2 .zst; .parquet), folder, or glob; local or any Beam "
                          "FileSystems URL")
    _add_console_flags(run)
    run.add_argument("--report", action="store_true",
                     help="after a successful run, write OUTPUT/report.html (see 'newsbeam report')")
    NewsbeamOptions._add_argparse_args(run)
    watch = sub.add_parser(
        "watch", help="process a folder incrementally as files arrive, until SIGINT/SIGTERM",
        description=WATCH_DESCRIPTION, epilog=BEAM_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    watch.add_argument("inputs", nargs=1, metavar="INPUT_DIR", help="folder to watch (local or FileSystems URL)")
    watch.add_argument("--interval", type=float, default=60.0,
                       help="seconds between checks of INPUT_DIR (default: 60)")
    watch.add_argument("--max-failures", dest="max_failures", type=int, default=3,
                       help="exit with status 1 after this many failed batches in a row (default: 3)")
    _add_console_flags(watch)
    NewsbeamOptions._add_argparse_args(watch)
    rep = sub.add_parser(
        "report", help="write one self-contained HTML page with charts about an output folder",
        description="Write OUT/report.html (or --output FILE): one HTML file with its scripts, styles and "
                    "data inline, which opens from disk in any browser with no network. It shows the top "
                    "entities over time, languages, duplicates, rejected inputs with examples, timings and "
                    "versions, and for a --state-dir output the trend across runs (OUT/runs/*).")
    rep.add_argument("inputs", nargs=1, metavar="OUT", help="a newsbeam output folder (local or FileSystems URL)")
    rep.add_argument("--output", default=None, metavar="FILE", help="where to write the page "
                     "(default: OUT/report.html)")
    return parser


def _add_console_flags(parser) -> None:
    loud = parser.add_mutually_exclusive_group()
    loud.add_argument("--verbose", action="store_true",
                      help="show Beam's and the workers' logs, and the traceback of a failure")
    loud.add_argument("--quiet", action="store_true",
                      help="print only the one-line summary and errors (no start line, progress or warnings)")


def format_summary(summary: dict) -> str:
    from pipelines.console import plural

    lines = [
        f"newsbeam: {plural(summary['inputs']['records'], 'input record')} from "
        f"{plural(summary['inputs']['files'], 'file')} "
        f"in {summary['timings']['wall_seconds']:.1f}s",
        f"  articles kept: {summary['articles']:,}",
        f"  duplicates:    {summary['duplicates']['total']:,}" + (" (" + ", ".join(
            f"{v:,} {k}" for k, v in summary["duplicates"].items() if k != "total") + ")"
            if summary["duplicates"]["total"] else ""),
        f"  rejected:      {summary['rejected']['total']:,}",
    ]
    for reason, n in summary["inputs"].get("skipped", {}).items():
        what = {"not_a_regular_file": "not regular files (FIFOs, sockets, devices), never opened",
                "newsbeam_output": "inside newsbeam's own output or state folder"}.get(reason, reason)
        lines.insert(1, f"  skipped:       {n} {'path' if n == 1 else 'paths'} {what}")
    for reason, n in summary["rejected"].items():
        if reason != "total":
            lines.append(f"    {reason}: {n:,}")
    langs = ", ".join(f"{k} {v:,}" for k, v in summary["languages"].items()) or "-"
    lines.append(f"  languages:     {langs}")
    coverage = summary.get("entities", {})
    with_model = coverage.get("with_model_by_language")
    if with_model:
        found = coverage.get("with_entities_by_language", {})
        lines.append("  with entities: " + ", ".join(
            f"{k} {found.get(k, 0):,} of {v:,}" for k, v in with_model.items())
            + (" (models: " + ", ".join(f"{k} {v}" for k, v in coverage["models"].items()) + ")"
               if coverage.get("models") else ""))
    no_model = coverage.get("without_model_by_language")
    if no_model:
        lines.append("  no NER model:  " + ", ".join(f"{k} {v}" for k, v in no_model.items())
                     + " (articles kept without entities; see --spacy-model)")
    lines.append("  top entities:")
    for e in summary["top_entities"]:
        lines.append(f"    {e['mentions']:>6,}  {e['entity']} ({e['label']}, {plural(e['documents'], 'article')})")
    if not summary["top_entities"]:
        lines.append("    -")
    if "incremental" in summary:
        inc = summary["incremental"]
        lines.append(f"  incremental:   {inc['files_new']} new, {inc['files_changed']} changed, "
                     f"{inc['files_unchanged']} unchanged files (run {summary['run_id']})")
    lines.append(f"  output:        {summary['output']}")
    return "\n".join(lines)


EXIT_SIGINT = 128 + 2
EXIT_SIGTERM = 128 + 15


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like KeyboardInterrupt is for SIGINT."""


def _stop_children(grace: float = 3.0) -> None:
    """End the local worker processes an interrupted run started: none is left
    behind (SIGTERM, then SIGKILL for those still there after ``grace`` seconds)."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        try:
            child.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass


def run(argv_ns: argparse.Namespace, beam_args: list[str]) -> int:
    import signal

    from pipelines.console import StderrGate

    gate = StderrGate(verbose=getattr(argv_ns, "verbose", False), quiet=_console.get("quiet", False))

    def on_signal(signum, frame):
        # Close the gate before anything unwinds: the workers got the same
        # signal and are printing their tracebacks right now.
        gate.shut()
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    # A SIGINT the caller ignores (a background job of a script) stays ignored.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        with gate:
            return _run(argv_ns, beam_args)
    except (KeyboardInterrupt, Terminated) as e:
        gate.shut()
        code = EXIT_SIGTERM if isinstance(e, Terminated) else EXIT_SIGINT
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not break the clean-up
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_children()
        gate.say(f"newsbeam: interrupted ({'SIGTERM' if code == EXIT_SIGTERM else 'SIGINT'}); nothing was written, "
                 f"the previous output is kept (exit status {code})")
        # Beam's runner threads may still wait on the workers just ended;
        # leave at once rather than hang in interpreter shutdown.
        os._exit(code)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(argv_ns: argparse.Namespace, beam_args: list[str]) -> int:
    from pipelines.orchestrate import (
        PublishFailed,
        RunFailed,
        acquire_lock,
        check_output_writable,
        prepare,
        run_incremental,
        run_standalone,
    )
    from pipelines.plan import UsageError
    from pipelines.state import LockHeld, StateStore, new_run_id

    started = time.time()
    try:
        prep = prepare(argv_ns, beam_args)
        if not prep.ns.state_dir:
            check_output_writable(prep.ns.output)
            return _finish(run_standalone(prep, started), prep.ns.output)
        lock = acquire_lock(prep, new_run_id())
    except UsageError as e:
        print(f"newsbeam: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except LockHeld as e:
        print(f"newsbeam: {e}; not running (exit status {EXIT_LOCKED})", file=sys.stderr)
        return EXIT_LOCKED
    except RunFailed as e:
        print(f"newsbeam: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    try:
        check_output_writable(prep.ns.output)
        return _finish(run_incremental(prep, StateStore(prep.ns.state_dir), prep.files, started), prep.ns.output)
    except UsageError as e:
        print(f"newsbeam: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (RunFailed, PublishFailed) as e:
        print(f"newsbeam: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        lock.release()


# Launcher flags that are no pipeline option: taken out of the namespace
# before it reaches the orchestration (nor its resume key).
_console: dict = {}


def _summary_text(summary: dict) -> str:
    from pipelines.console import summary_line

    return summary_line(summary) if _console.get("quiet") else format_summary(summary)


def _say(text: str) -> None:
    """Print to stdout; a reader that went away (``newsbeam run ... | head``)
    loses the rest of the text, not the work still to do (the report) nor
    the exit status, and gets no traceback."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Point stdout at /dev/null so later prints and the flush at exit do not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _finish(summary: dict, output: str) -> int:
    """Print the summary; with --report write the report of ``output``."""
    _say(_summary_text(summary))
    if not _console.get("report"):
        return EXIT_OK
    return _write_report(output, None, after_run=True)


def _write_report(out: str, target: str | None, after_run: bool = False) -> int:
    from pipelines.console import human_bytes
    from pipelines.report import ReportError, write_report

    try:
        path, size = write_report(out, target)
    except ReportError as e:
        print(f"newsbeam: error: {e}", file=sys.stderr)
        return EXIT_FAILED if after_run else EXIT_USAGE
    except Exception as e:  # a report is not worth a traceback: say what failed
        done = "; the run's output is complete" if after_run else ""
        print(f"newsbeam: error: the report could not be written: {type(e).__name__}: {e}{done}", file=sys.stderr)
        return EXIT_FAILED
    if not _console.get("quiet"):
        _say(f"newsbeam: report: {path} ({human_bytes(size)})")
    return EXIT_OK


def report(argv_ns: argparse.Namespace) -> int:
    return _write_report(argv_ns.inputs[0], argv_ns.output)


class _WatchSignals:
    """SIGINT and SIGTERM while watching: the first asks ``stop`` to end the
    loop after the batch under way, a second ends the workers and the process
    at once (``on_stop_now`` with 130 or 143; the batch is then not committed).

    A Ctrl-C goes to the terminal's whole process group, so the worker
    processes of a batch got it too and died with ~70 lines of tracebacks,
    failing the batch the first Ctrl-C was meant to let finish. The signals
    are therefore blocked in the launcher's main thread, and so in every
    worker process and thread it starts (a signal mask is inherited). The
    launcher still gets them in a thread of its own: through the wakeup fd
    of its handlers when a thread started before (the BLAS pool's) takes the
    signal, or with ``sigtimedwait`` when every thread blocks it. Python runs
    handlers only in the main thread, which may be waiting on the workers
    until the batch ends: a second signal must not wait for that. multiprocessing's
    resource tracker unblocks both after it starts (CPython's
    ``ensure_running`` sets SIG_UNBLOCK rather than the mask it found), so it
    is started first, and every batch blocks them again (``block``).
    """

    def __init__(self, stop, on_stop_now):
        import signal
        import threading

        self._signal = signal
        self._signals = {signal.SIGINT, signal.SIGTERM}
        self._stop = stop
        self._on_stop_now = on_stop_now
        self._received = 0
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._wait, name="newsbeam-watch-signals", daemon=True)
        self._previous: dict = {}
        self._wakeup = None
        self._previous_wakeup = -1

    def __enter__(self):
        import os
        from multiprocessing import resource_tracker

        self._wakeup = os.pipe()
        for fd in self._wakeup:
            os.set_blocking(fd, False)
        for sig in self._signals:
            # The handler proper is the thread's: it reads the wakeup fd.
            self._previous[sig] = self._signal.signal(sig, lambda signum, frame: None)
        self._previous_wakeup = self._signal.set_wakeup_fd(self._wakeup[1], warn_on_full_buffer=False)
        resource_tracker.ensure_running()
        self.block()
        self._thread.start()
        return self

    def block(self) -> None:
        self._signal.pthread_sigmask(self._signal.SIG_BLOCK, self._signals)

    def __exit__(self, *exc):
        import os

        self._done.set()
        self._thread.join()
        self._signal.set_wakeup_fd(self._previous_wakeup)
        for sig, handler in self._previous.items():
            self._signal.signal(sig, handler)
        self._signal.pthread_sigmask(self._signal.SIG_UNBLOCK, self._signals)
        for fd in self._wakeup:
            os.close(fd)
        return False

    def _wait(self) -> None:
        import os
        import select

        while not self._done.is_set():
            if select.select([self._wakeup[0]], [], [], 0.2)[0]:
                for signum in os.read(self._wakeup[0], 64):
                    self._on(signum)
            info = self._signal.sigtimedwait(self._signals, 0)
            if info is not None:
                self._on(info.si_signo)

    def _on(self, signum: int) -> None:
        with self._lock:
            self._received += 1
            first = self._received == 1
        if first:
            _LOG.warning("newsbeam: %s received: stopping after the current batch (send it again to stop now)",
                         self._signal.Signals(signum).name)
            self._stop.set()
        else:
            self._on_stop_now(EXIT_SIGTERM if signum == self._signal.SIGTERM else EXIT_SIGINT)


def watch(argv_ns: argparse.Namespace, beam_args: list[str]) -> int:
    from pipelines.orchestrate import (
        PublishFailed,
        RunFailed,
        acquire_lock,
        check_output_writable,
        default_exclude,
        prepare,
        run_incremental,
    )
    from pipelines.plan import UsageError, plan_inputs
    from pipelines.state import LockHeld, StateStore, new_run_id
    from pipelines.watch import CachedHasher, StabilityFilter, StopSignals, watch_loop

    try:
        if not argv_ns.state_dir:
            raise UsageError("watch needs --state-dir: it is what tells new files from processed ones")
        if argv_ns.interval <= 0:
            raise UsageError("--interval must be positive")
        if argv_ns.max_failures <= 0:
            raise UsageError("--max-failures must be positive")
        prep = prepare(argv_ns, beam_args, empty_folder_ok=True)
        lock = acquire_lock(prep, "watch-" + new_run_id())
    except UsageError as e:
        print(f"newsbeam: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except LockHeld as e:
        print(f"newsbeam: {e}; not watching (exit status {EXIT_LOCKED})", file=sys.stderr)
        return EXIT_LOCKED

    exclude = tuple(prep.ns.exclude) if prep.ns.exclude else default_exclude()

    def poll() -> list:
        try:
            return plan_inputs(prep.ns.inputs, exclude, never_read=prep.never_read())
        except UsageError:
            return []  # nothing there (yet)

    store = StateStore(prep.ns.state_dir)
    hasher = CachedHasher()

    def batch(files: list) -> int | None:
        signals.block()
        try:
            summary = run_incremental(prep, store, files, time.time(), skip_empty=True,
                                      hasher=hasher.for_files(files))
        except (RunFailed, PublishFailed) as e:
            print(f"newsbeam: error: {e}", file=sys.stderr)
            return EXIT_FAILED
        if summary is None:
            return None
        _say(_summary_text(summary))
        return EXIT_OK

    stop = StopSignals(signals=())  # the stop request only: _WatchSignals takes the signals

    def stop_now(code: int) -> None:
        # From the signal thread: the main thread may be anywhere in a batch
        # (in Beam, in a worker pool), so end everything from here.
        _stop_children(grace=0.5)
        lock.release()
        print(f"newsbeam: stopped at once ({'SIGTERM' if code == EXIT_SIGTERM else 'SIGINT'}); the batch in "
              f"progress was not committed, the previous output is kept (exit status {code})",
              file=sys.stderr, flush=True)
        os._exit(code)

    signals = _WatchSignals(stop, stop_now)
    try:
        with signals:
            check_output_writable(prep.ns.output)
            _LOG.warning("newsbeam: watching %s every %gs (state %s); stop with SIGINT or SIGTERM",
                         prep.ns.inputs[0], prep.ns.interval, prep.ns.state_dir)
            return watch_loop(poll, batch, prep.ns.interval, stop, StabilityFilter(), prep.ns.max_failures)
    except UsageError as e:
        print(f"newsbeam: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        lock.release()


def _beam_option_names() -> set[str]:
    """Every --flag that some Beam PipelineOptions class defines."""
    from apache_beam.options.pipeline_options import PipelineOptions

    names: set[str] = set()
    pending = list(PipelineOptions.__subclasses__())
    seen = set()
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        pending.extend(cls.__subclasses__())
        parser = argparse.ArgumentParser(add_help=False)
        try:
            cls._add_argparse_args(parser)
        except Exception:  # an options class that cannot register here is no option we can check
            continue
        for action in parser._actions:
            names.update(o for o in action.option_strings if o.startswith("--"))
    return names


def check_unknown_options(extra: list[str], known: list[str]) -> str | None:
    """A usage message for the first --option in ``extra`` that neither
    newsbeam nor Beam defines (None when all are real), naming the closest."""
    import difflib

    beam_names = _beam_option_names()
    for arg in extra:
        if not arg.startswith("--"):
            if arg.startswith("-") and len(arg) > 1 and not arg[1:].replace(".", "").isdigit():
                return f"unknown option {arg!r}"
            continue
        name = arg.split("=", 1)[0]
        if name in beam_names:
            continue
        close = difflib.get_close_matches(name, sorted(set(known) | beam_names), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else "; see 'newsbeam run --help'"
        return f"unknown option {name!r}{hint}"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    verbose = "--verbose" in argv
    quiet = "--quiet" in argv and not verbose
    # Beam logs at import (apitools, bigquery) and per bundle; those are for
    # --verbose. newsbeam's own warnings stay.
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if verbose else "%(message)s")
    if not verbose:
        logging.getLogger().setLevel(logging.ERROR)
        _LOG.setLevel(logging.ERROR if quiet else logging.WARNING)
    parser = _build_parser()
    ns, extra = parser.parse_known_args(argv)
    if ns.command is None:
        parser.print_help()
        return EXIT_USAGE
    sub = parser._subparsers._group_actions[0].choices[ns.command]
    problem = check_unknown_options(extra, [o for a in sub._actions for o in a.option_strings])
    if problem:
        print(f"newsbeam: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    from pipelines import console

    _console.clear()
    _console.update(quiet=vars(ns).pop("quiet", False), report=vars(ns).pop("report", False))
    console.configure(quiet=_console["quiet"], verbose=getattr(ns, "verbose", False))
    if ns.command == "report":
        if extra:
            print(f"newsbeam: error: unexpected argument {extra[0]!r}; see 'newsbeam report --help'", file=sys.stderr)
            return EXIT_USAGE
        return report(ns)
    if ns.command == "run":
        return run(ns, extra)
    if ns.command == "watch":
        return watch(ns, extra)
    parser.error(f"unknown command {ns.command}")
    return EXIT_USAGE
