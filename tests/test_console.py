"""The console: what reaches the user's terminal, the progress display, the one-line forms."""

import io
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

from pipelines import console
from pipelines.console import (
    ProgressDisplay,
    WarningTally,
    classify,
    human_bytes,
    plural,
    start_line,
    summary_line,
)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def tick(self, seconds):
        self.now += seconds


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


class FakePipe(io.StringIO):
    def isatty(self):
        return False


@pytest.fixture(autouse=True)
def _fresh_console_state(monkeypatch):
    monkeypatch.setattr(console, "_settings", {"quiet": False, "verbose": False})
    monkeypatch.setattr(console, "_displays_opened", False)
    monkeypatch.setattr(console, "_live_display", None)
    monkeypatch.delenv("TERM", raising=False)


def test_plural_and_units():
    assert plural(1, "article") == "1 article"
    assert plural(1034, "article") == "1,034 articles"
    assert plural(2, "worker process", "worker processes") == "2 worker processes"
    assert human_bytes(1) == "1 byte"
    assert human_bytes(999) == "999 bytes"
    assert human_bytes(3_700) == "3.7 KB"
    assert human_bytes(2_600_000) == "2.6 MB"
    assert human_bytes(4_200_000_000) == "4.2 GB"


def test_start_line_names_inputs_size_output_runner_workers():
    assert start_line(1118, 2_600_000, "/tmp/x", "FnApiRunner", 2) == \
        "newsbeam: 1,118 input files (2.6 MB) -> /tmp/x on FnApiRunner, 2 worker processes"
    assert start_line(1, 3_700, "out", "apache_beam.runners.dataflow.DataflowRunner", None) == \
        "newsbeam: 1 input file (3.7 KB) -> out on DataflowRunner"
    assert start_line(1, 10, "out", "FnApiRunner", 1).endswith("1 worker process")


def test_summary_line_is_one_line_with_the_totals():
    summary = {"inputs": {"records": 1118, "files": 1118}, "timings": {"wall_seconds": 78.08},
               "articles": 1034, "duplicates": {"total": 82}, "rejected": {"total": 2}, "output": "/tmp/x"}
    line = summary_line(summary)
    assert "\n" not in line
    assert line == ("newsbeam: 1,118 input records from 1,118 files in 78.1s: 1,034 articles, "
                    "82 duplicates, 2 rejected -> /tmp/x")
    summary.update(articles=1, duplicates={"total": 1}, inputs={"records": 1, "files": 1})
    assert "1 input record from 1 file" in summary_line(summary)
    assert "1 article, 1 duplicate," in summary_line(summary)


@pytest.mark.parametrize("line", [
    "WARNING:root:apitools not found, and bigquery client libraries are not available",
    "Logging handler created.",
    "No semi_persistent_directory found: Defaulting to None",
    "Worker: severity: WARN timestamp {...}",
])
def test_beam_noise_is_dropped(line):
    assert classify(line) == ("noise", None)


def test_user_data_warnings_are_counted_per_problem_class():
    assert classify("WARNING:trafilatura.core:discarding data: None") == ("warning", "no_main_content")
    assert classify("ERROR:trafilatura.core:empty HTML tree: None") == ("warning", "no_main_content")
    assert classify("ERROR:trafilatura.core:no metadata: None") == ("warning", "no_metadata")
    assert classify("newsbeam: warning: something about the run") == ("line", None)
    tally = WarningTally()
    for _ in range(3):
        tally.add("no_main_content")
    tally.add("no_metadata")
    assert tally.lines() == [
        "newsbeam: warning: 3 pages had no main content trafilatura could extract "
        "(each is in rejected/ or was kept by the plain-text fallback)",
        "newsbeam: warning: 1 page had no metadata trafilatura could read "
        "(each is in rejected/ or was kept by the plain-text fallback)",
    ]


def test_quiet_lets_only_errors_through():
    assert classify("newsbeam: 3 input files (1.0 KB) -> out", quiet=True) == ("noise", None)
    assert classify("newsbeam: annotate: 3 of 9 articles (33%)", quiet=True) == ("noise", None)
    assert classify("newsbeam: error: input 'x' does not exist", quiet=True) == ("line", None)
    assert classify("Traceback (most recent call last):", quiet=True) == ("line", None)
    assert classify("RuntimeError: boom", quiet=True) == ("line", None)


def test_worker_progress_lines_go_once_a_display_shows_progress():
    line = "newsbeam progress: 565 articles annotated by worker 26331 (18.8/s)"
    assert classify(line) == ("line", None)
    assert classify(line, progress_shown=True) == ("noise", None)


def test_plain_progress_prints_at_most_every_interval():
    clock, out = FakeClock(), FakePipe()
    p = ProgressDisplay(1000, "articles", interval=10, stream=out, phase="annotate", clock=clock)
    assert not p.live
    clock.tick(4)
    p.update(200)
    assert out.getvalue() == "", "nothing before the first interval has passed"
    clock.tick(6)
    p.update(500)  # 500 articles in 10 s: 50/s, 500 left: 10 s
    assert out.getvalue() == "newsbeam: annotate: 500 of 1,000 articles (50%), 50.0 articles/s, ETA 0:10\n"
    clock.tick(1)
    p.update(600)
    assert out.getvalue().count("\n") == 1, "the next line waits for another interval"
    clock.tick(9)
    p.update(1000)
    assert out.getvalue().splitlines()[-1].endswith("(100%), 50.0 articles/s, ETA 0:00")
    p.close()
    p.close()
    assert out.getvalue().count("\n") == 2, "close adds nothing to a log"


def test_plain_progress_in_bytes_and_a_new_phase_restarts_the_rate():
    clock, out = FakeClock(), FakePipe()
    p = ProgressDisplay(10_000_000, "bytes", interval=1, stream=out, phase="read+clean", clock=clock)
    clock.tick(2)
    p.update(4_000_000)
    assert out.getvalue() == "newsbeam: read+clean: 4.0 MB of 10.0 MB (40%), 2.0 MB/s, ETA 0:03\n"
    clock.tick(1)
    p.update(0, phase="annotate", total=90, unit="articles")
    assert p.rate() == 0.0 and p.eta() is None
    assert out.getvalue().splitlines()[-1] == "newsbeam: annotate: 0 of 90 articles (0%), 0.0 articles/s, ETA unknown"
    clock.tick(3)
    p.update(30)
    assert p.rate() == pytest.approx(10.0) and p.eta() == pytest.approx(6.0)


def test_progress_disabled_or_quiet_prints_nothing(monkeypatch):
    clock, out = FakeClock(), FakeTerminal()
    p = ProgressDisplay(10, "articles", interval=1, stream=out, clock=clock, enabled=False)
    clock.tick(5)
    p.update(5)
    p.close()
    console.configure(quiet=True)
    q = ProgressDisplay(10, "articles", interval=1, stream=out, clock=clock)
    clock.tick(5)
    q.update(5)
    q.close()
    assert out.getvalue() == ""


def test_progress_rejects_bad_arguments():
    with pytest.raises(ValueError):
        ProgressDisplay(-1, "articles", stream=FakePipe())
    with pytest.raises(ValueError):
        ProgressDisplay(1, "", stream=FakePipe())


def test_terminal_progress_is_a_live_bar_removed_on_close():
    clock, out = FakeClock(), FakeTerminal()
    with ProgressDisplay(1000, "articles", interval=30, stream=out, phase="annotate", clock=clock) as p:
        assert p.live
        for done in (100, 200):
            clock.tick(1)
            p.update(done)
        drawn = out.getvalue()
        assert "\r" in drawn and "\n" not in drawn.rstrip("\n"), "one line, redrawn in place"
        assert "annotate" in drawn and "200/1,000 articles" in drawn and "20%" in drawn
        assert "100.0 articles/s" in drawn and "ETA 0:08" in drawn
        assert p.print_above("newsbeam: warning: something")
        assert "newsbeam: warning: something" in out.getvalue()
    tail = out.getvalue()[len(drawn):]
    assert "\x1b[2K" in tail, "the bar is cleared when closed"
    assert not p.print_above("after close")


def test_terminal_progress_in_bytes_shows_units():
    clock, out = FakeClock(), FakeTerminal()
    p = ProgressDisplay(3_000_000, "bytes", stream=out, phase="read+clean", clock=clock)
    clock.tick(1)
    p.update(1_500_000)
    p.close()
    assert "1.5 MB/3.0 MB" in out.getvalue() and "1.5 MB/s" in out.getvalue()


GATE_SCRIPT = textwrap.dedent("""
    import os, sys
    from pipelines.console import StderrGate
    quiet = sys.argv[1] == "quiet"
    with StderrGate(quiet=quiet) as gate:
        assert gate.active
        for line in [b"WARNING:root:apitools not found, and bigquery client libraries are not available\\n",
                     b"WARNING:trafilatura.core:discarding data: None\\n",
                     b"newsbeam: 2 input files (1.0 KB) -> out\\n",
                     b"WARNING:trafilatura.core:discarding data: None\\n",
                     b"newsbeam: error: something failed\\n"]:
            os.write(2, line)
    print("done", flush=True)
""")


@pytest.mark.parametrize("mode", ["normal", "quiet"])
def test_gate_filters_counts_and_says_warnings_once(mode):
    proc = subprocess.run([sys.executable, "-c", GATE_SCRIPT, mode], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert not any("apitools" in x or "trafilatura.core" in x for x in lines)
    assert "newsbeam: error: something failed" in lines
    counted = "newsbeam: warning: 2 pages had no main content trafilatura could extract " \
              "(each is in rejected/ or was kept by the plain-text fallback)"
    if mode == "normal":
        assert lines == ["newsbeam: 2 input files (1.0 KB) -> out", "newsbeam: error: something failed", counted]
    else:
        assert lines == ["newsbeam: error: something failed"]


LINGERING_SCRIPT = textwrap.dedent("""
    import os, subprocess, sys, time
    from pipelines.console import StderrGate
    with StderrGate() as gate:
        # A process that outlives the run and holds stderr, as multiprocessing's resource tracker does.
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
        os.write(2, b"newsbeam: 2 input files (1.0 KB) -> out\\n")
        started = time.monotonic()
    print(f"{time.monotonic() - started:.3f}", flush=True)
""")


def test_gate_closes_at_once_while_another_process_holds_stderr():
    proc = subprocess.run([sys.executable, "-c", LINGERING_SCRIPT], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "newsbeam: 2 input files (1.0 KB) -> out" in proc.stderr  # what came before is forwarded
    assert float(proc.stdout) < 1.0  # it used to wait 2 s for an end of file that never came


def test_no_dofn_makes_beam_warn_about_yield_and_return():
    # Beam checks each process method's source when a ParDo is built and warns on
    # every worker; the warning reaches the console around the filter, as raw logging.
    import importlib
    import inspect
    import pkgutil

    import apache_beam as beam
    from apache_beam.transforms.core import _check_fn_use_yield_and_return

    import pipelines

    checked, offenders = 0, []
    for info in pkgutil.iter_modules(pipelines.__path__):
        module = importlib.import_module(f"pipelines.{info.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, beam.DoFn) and cls.__module__ == module.__name__:
                checked += 1
                if _check_fn_use_yield_and_return(cls.__new__(cls).process):
                    offenders.append(f"{module.__name__}.{name}")
    assert checked >= 10 and not offenders, offenders
