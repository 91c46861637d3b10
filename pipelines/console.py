"""What a run prints to the terminal, and what it keeps off it.

Local worker processes share the launcher's stderr (file descriptor 2), so
their harness chatter, and the tracebacks each prints when Ctrl-C reaches the
whole process group, would land on the user's terminal. ``StderrGate`` puts a
pipe behind descriptor 2 for the length of a run and forwards what comes
through it, minus known Beam/worker noise, until the run is interrupted; then
it forwards nothing, so the user sees newsbeam's one closing line.

What the gate lets through it also sorts: library warnings about the user's
data (trafilatura finding no main content in a page, once per page and per
process) are counted per problem class and shown as one line each when the
run ends; with ``quiet`` only errors pass. ``ProgressDisplay`` draws the
progress of a run: a live one-line bar (rich) on a terminal, a plain line
every ``interval`` seconds otherwise (cron, CI logs).
"""

from __future__ import annotations

import os
import re
import select
import sys
import threading
import time
from collections import Counter, deque

__all__ = [
    "ProgressDisplay", "StderrGate", "WarningTally", "classify", "configure", "human_bytes", "is_noise",
    "is_quiet", "plural", "start_line", "summary_line", "user_stream",
]

# How long a line is held before it is shown (see StderrGate._drain).
HOLD_SECONDS = 0.5
# How often the stderr forwarder looks whether the gate is closing while the pipe is quiet.
FORWARD_POLL_SECONDS = 0.05
# Lines Beam's local workers and SDK print on every run; none concerns the user's data.
_NOISE = re.compile(
    r"apitools not found|Logging handler created|semi_persistent_directory|Worker: severity:|"
    r"Discarding unparseable args|Status HTTP server|Creating insecure (control|state) channel|"
    r"Control channel established|Initializing SDKHarness|Python sdk harness|Pipeline_options:|"
    r"No session file found|Statesampler|Waiting for grpc channel|Running \('|Starting the python|"
    r"worker_id"
)


# Per-article progress lines of the annotate step (pipeline.ProgressFn): the
# ProgressDisplay shows the same, for the whole run, once one is open.
_WORKER_PROGRESS = re.compile(r"^newsbeam progress: .* annotated by worker")
# Library warnings about the user's data: (pattern, problem class, what one
# line per class says). The rejected records carry the per-input detail.
USER_DATA_WARNINGS = (
    (re.compile(r"trafilatura\S*:(discarding data|empty HTML tree|not enough text)"), "no_main_content",
     ("page had no main content trafilatura could extract",
      "pages had no main content trafilatura could extract")),
    (re.compile(r"trafilatura\S*:no metadata"), "no_metadata",
     ("page had no metadata trafilatura could read", "pages had no metadata trafilatura could read")),
    (re.compile(r"trafilatura\S*:wrong HTML meta language"), "wrong_meta_language",
     ("page declared another language in its HTML meta", "pages declared another language in their HTML meta")),
)
_ERROR = re.compile(r"^(newsbeam: (error|interrupted)|Traceback|\S*Error\b|ERROR\b|CRITICAL\b)")

_settings = {"quiet": False, "verbose": False}
_active_gate: StderrGate | None = None
_live_display: ProgressDisplay | None = None
_displays_opened = False


def configure(quiet: bool = False, verbose: bool = False) -> None:
    """How much the run prints: set once by the command line."""
    _settings.update(quiet=bool(quiet), verbose=bool(verbose))


def is_quiet() -> bool:
    return _settings["quiet"]


def is_noise(line: str) -> bool:
    return bool(_NOISE.search(line))


def classify(line: str, quiet: bool = False, progress_shown: bool = False) -> tuple[str, str | None]:
    """What the gate does with one stderr line: ('noise', None) drop it,
    ('warning', problem_class) count it, ('line', None) show it. With
    ``quiet`` only errors are shown."""
    if is_noise(line) or (progress_shown and _WORKER_PROGRESS.search(line)):
        return "noise", None
    for pattern, problem, _ in USER_DATA_WARNINGS:
        if pattern.search(line):
            return "warning", problem
    if quiet and not _ERROR.search(line.lstrip()):
        return "noise", None
    return "line", None


class WarningTally:
    """Counts of user-data warnings per problem class, said as one line each."""

    def __init__(self):
        self.counts: Counter = Counter()
        self._lock = threading.Lock()

    def add(self, problem: str) -> None:
        with self._lock:
            self.counts[problem] += 1

    def lines(self) -> list[str]:
        words = {problem: texts for _, problem, texts in USER_DATA_WARNINGS}
        out = []
        for problem, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])):
            one, many = words[problem]
            out.append(f"newsbeam: warning: {n:,} {one if n == 1 else many} "
                       "(each is in rejected/ or was kept by the plain-text fallback)")
        return out


def user_stream():
    """A text stream to the user's stderr: past the gate while one is active
    (descriptor 2 is then a pipe, and what goes through it is delayed)."""
    if _active_gate is not None and _active_gate.active:
        return _active_gate.stream()
    return sys.stderr


def start_line(files: int, total_bytes: int, output: str, runner: str, workers: int | None) -> str:
    """'newsbeam: 1,118 input files (2.6 MB) -> out/ on FnApiRunner, 2 workers'."""
    runner = (runner or "FnApiRunner").split(".")[-1]
    where = f" on {runner}" + (f", {plural(workers, 'worker process', 'worker processes')}" if workers else "")
    return f"newsbeam: {plural(files, 'input file')} ({human_bytes(total_bytes)}) -> {output}{where}"


def summary_line(summary: dict) -> str:
    """The run in one line (--quiet)."""
    return (f"newsbeam: {plural(summary['inputs']['records'], 'input record')} from "
            f"{plural(summary['inputs']['files'], 'file')} in {summary['timings']['wall_seconds']:.1f}s: "
            f"{plural(summary['articles'], 'article')}, {plural(summary['duplicates']['total'], 'duplicate')}, "
            f"{summary['rejected']['total']:,} rejected -> {summary['output']}")


def plural(n: int, word: str, words: str | None = None) -> str:
    """'1 article', '2 articles'."""
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def human_bytes(n: int) -> str:
    """'812 bytes', '4.2 KB', '1.3 MB', '2.0 GB' (powers of 1,000)."""
    if n < 1000:
        return plural(n, "byte")
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


class StderrGate:
    """Context manager: filter what reaches the real stderr during a run.

    Inactive (a no-op) when stderr is not descriptor 2, as under pytest's
    capture, or when ``verbose`` (the user asked for everything).
    """

    def __init__(self, verbose: bool = False, quiet: bool = False):
        self._verbose = verbose
        self._quiet = quiet
        self.tally = WarningTally()
        self._stream = None
        self._real: int | None = None
        self._thread: threading.Thread | None = None
        self._open = True
        self._closing = False
        self._held: deque = deque()
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self._real is not None

    def __enter__(self):
        global _active_gate
        try:
            if self._verbose or sys.stderr.fileno() != 2:
                return self
        except (AttributeError, OSError, ValueError):  # replaced stderr without a descriptor
            return self
        _active_gate = self
        sys.stderr.flush()
        self._real = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self._thread = threading.Thread(target=self._forward, args=(read_end,), daemon=True,
                                        name="newsbeam-stderr")
        self._thread.start()
        threading.Thread(target=self._tick, daemon=True, name="newsbeam-stderr-tick").start()
        return self

    def _forward(self, read_end: int) -> None:
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            pending = b""
            while True:
                # Not a blocking read: a process that outlives the run (multiprocessing's
                # resource tracker) holds the pipe's write end, so the end of the run
                # never comes as end-of-file; it is a closing gate and an empty pipe.
                if not select.select([read_end], [], [], FORWARD_POLL_SECONDS)[0]:
                    if self._closing:
                        break
                    continue
                chunk = pipe.read(65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._queue(line + b"\n")
            if pending:
                self._queue(pending)
        self._drain(everything=True)

    def stream(self):
        """A text stream writing straight to the real stderr (a terminal's
        ``isatty()`` is then true), e.g. for a ProgressDisplay."""
        if self._real is None:
            return sys.stderr
        if self._stream is None:
            self._stream = os.fdopen(os.dup(self._real), "w", encoding="utf-8", errors="replace",
                                     buffering=1)
        return self._stream

    def _queue(self, line: bytes) -> None:
        what, problem = classify(line.decode("utf-8", "replace"), self._quiet, _displays_opened)
        if what == "noise":
            return
        if what == "warning":
            self.tally.add(problem)
            return
        with self._lock:
            self._held.append((time.monotonic(), line))
        self._drain()

    def _drain(self, everything: bool = False) -> None:
        """Write the lines held longer than HOLD_SECONDS. Holding them that
        long is what lets an interrupt, whose handler runs in the main thread
        a moment after the workers and runner threads start printing their
        own tracebacks, discard those tracebacks."""
        now = time.monotonic()
        with self._lock:
            while self._held and self._open and (everything or now - self._held[0][0] >= HOLD_SECONDS):
                line = self._held.popleft()[1]
                live = _live_display
                if live is None or not live.print_above(line.decode("utf-8", "replace")):
                    os.write(self._real, line)

    def _tick(self) -> None:
        while self._real is not None and self._open:
            time.sleep(HOLD_SECONDS / 2)
            self._drain()

    def shut(self) -> None:
        """Forward nothing more: what the processes print while dying is not for the user."""
        self._open = False
        with self._lock:
            self._held.clear()

    def say(self, message: str) -> None:
        """Write straight to the real stderr, past the gate."""
        data = (message.rstrip("\n") + "\n").encode("utf-8", "replace")
        if self._real is not None:
            os.write(self._real, data)
        else:
            sys.stderr.write(data.decode("utf-8"))
            sys.stderr.flush()

    def __exit__(self, *exc):
        global _active_gate
        if self._real is None:
            return False
        sys.stderr.flush()
        os.dup2(self._real, 2)  # closes the pipe's last write end we hold
        self._closing = True
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._drain(everything=True)
        if self._open and not self._quiet:
            for line in self.tally.lines():
                os.write(self._real, (line + "\n").encode("utf-8"))
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        os.close(self._real)
        self._real = None
        if _active_gate is self:
            _active_gate = None
        return False


def clock(seconds: float) -> str:
    """'0:42', '12:05', '1:02:03'."""
    seconds = int(round(max(seconds, 0)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _amount(n: float, unit: str) -> str:
    return human_bytes(int(n)) if unit == "bytes" else f"{int(n):,}"


def _rate(per_second: float, unit: str) -> str:
    if unit == "bytes":
        return f"{human_bytes(int(per_second))}/s"
    return f"{per_second:,.1f} {unit}/s"


class ProgressDisplay:
    """How far a run is: ``done`` of ``total`` ``unit`` (bytes are shown as
    KB/MB/GB), the rate and an ETA, for the current phase.

    On a terminal: a live one-line bar (rich), redrawn as ``update`` is
    called and ten times a second, removed by ``close``; lines the gate
    forwards meanwhile are printed above it. Elsewhere (``stream`` is not a
    terminal): a plain line ``newsbeam: PHASE: DONE of TOTAL UNIT (P%), RATE,
    ETA M:SS`` at most every ``interval`` seconds, the first one ``interval``
    seconds after the display was opened, so a short run prints none. With
    ``enabled=False`` (default: not ``--quiet``) it prints nothing.

    ``stream`` defaults to the user's stderr past the gate (``user_stream``);
    ``clock`` (monotonic seconds) and ``live`` (force the bar on or off) are
    for tests. A change of phase, total or unit starts the rate and ETA anew.
    Usable as a context manager (``close`` on exit).
    """

    def __init__(self, total: int, unit: str = "articles", interval: float = 30.0, stream=None,
                 phase: str | None = None, clock=time.monotonic, live: bool | None = None,
                 enabled: bool | None = None):
        if total is None or total < 0:
            raise ValueError("total must be zero or more")
        if not unit:
            raise ValueError("unit must be a non-empty word such as 'articles' or 'bytes'")
        self._clock = clock
        self._interval = interval if interval and interval > 0 else 30.0
        self._stream = stream if stream is not None else user_stream()
        self._enabled = (not is_quiet()) if enabled is None else enabled
        self._total, self._unit, self._phase = int(total), unit, phase
        self._done = 0
        self._phase_started = self._last_line = clock()
        self._done_at_phase_start = 0
        self._closed = False
        self._progress = None
        global _displays_opened
        _displays_opened = True
        if live is None:
            live = _isatty(self._stream)
        if self._enabled and live:
            self._open_bar()

    # -- the numbers ---------------------------------------------------
    @property
    def live(self) -> bool:
        return self._progress is not None

    def rate(self) -> float:
        """Units per second in the current phase, 0.0 before any progress."""
        elapsed = self._clock() - self._phase_started
        return max(self._done - self._done_at_phase_start, 0) / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float | None:
        """Seconds left in the current phase; None while the rate is unknown."""
        rate = self.rate()
        return max(self._total - self._done, 0) / rate if rate > 0 else None

    def line(self) -> str:
        share = 100.0 * self._done / self._total if self._total else 100.0
        eta = self.eta()
        amount = (f"{_amount(self._done, self._unit)} of {_amount(self._total, self._unit)}"
                  + ("" if self._unit == "bytes" else f" {self._unit}"))
        phase = f"{self._phase}: " if self._phase else ""
        return (f"newsbeam: {phase}{amount} ({share:.0f}%), {_rate(self.rate(), self._unit)}, "
                f"ETA {clock(eta) if eta is not None else 'unknown'}")

    # -- the interface -------------------------------------------------
    def update(self, done: int, phase: str | None = None, total: int | None = None,
               unit: str | None = None) -> None:
        """Report ``done`` units so far (of ``total``, when it changed) in
        ``phase`` (when it changed)."""
        if self._closed:
            return
        changed = ((phase is not None and phase != self._phase) or (total is not None and total != self._total)
                   or (unit is not None and unit != self._unit))
        if changed:
            self._phase = phase if phase is not None else self._phase
            self._total = int(total) if total is not None else self._total
            self._unit = unit or self._unit
            self._phase_started = self._clock()
            self._done_at_phase_start = int(done)
        self._done = int(done)
        if not self._enabled:
            return
        if self._progress is not None:
            self._draw(changed)
        elif self._clock() - self._last_line >= self._interval:
            self._last_line = self._clock()
            self._write(self.line() + "\n")

    def close(self) -> None:
        """Remove the bar (the summary follows on a clean line); idempotent."""
        global _live_display
        if self._closed:
            return
        self._closed = True
        if self._progress is not None:
            if _live_display is self:
                _live_display = None
            self._progress.stop()
            self._progress = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def print_above(self, text: str) -> bool:
        """Print a line above the bar; False when there is no bar."""
        progress = self._progress
        if progress is None:
            return False
        from rich.text import Text

        progress.console.print(Text(text.rstrip("\n")), highlight=False, soft_wrap=True)
        return True

    # -- the bar ---------------------------------------------------------
    def _open_bar(self) -> None:
        global _live_display
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        display = self

        class _Numbers(TextColumn):
            def render(self, task):
                from rich.text import Text

                return Text(display._bar_numbers())

        console = Console(file=self._stream, force_terminal=True, highlight=False, soft_wrap=False)
        self._progress = Progress(
            TextColumn("newsbeam: [bold]{task.description}"), BarColumn(bar_width=None), _Numbers(""),
            console=console, transient=True, get_time=self._clock, redirect_stdout=False,
            redirect_stderr=False, expand=True)
        self._task = self._progress.add_task(self._phase or "running", total=max(self._total, 1), completed=0)
        self._progress.start()
        _live_display = self

    def _bar_numbers(self) -> str:
        share = 100.0 * self._done / self._total if self._total else 100.0
        eta = self.eta()
        amount = (f"{_amount(self._done, self._unit)}/{_amount(self._total, self._unit)}"
                  + ("" if self._unit == "bytes" else f" {self._unit}"))
        return (f"{amount} {share:3.0f}%  {_rate(self.rate(), self._unit)}  "
                f"ETA {clock(eta) if eta is not None else '-:--'}")

    def _draw(self, changed: bool) -> None:
        self._progress.update(self._task, completed=min(self._done, max(self._total, 1)),
                              total=max(self._total, 1), description=self._phase or "running")
        self._progress.refresh()

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # the terminal went away: progress is not worth failing the run
            self._enabled = False


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty()) and os.environ.get("TERM") != "dumb"
    except (AttributeError, OSError, ValueError):
        return False
