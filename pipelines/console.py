"""What a run prints to the terminal, and what it keeps off it.

Local worker processes share the launcher's stderr (file descriptor 2), so
their harness chatter, and the tracebacks each prints when Ctrl-C reaches the
whole process group, would land on the user's terminal. ``StderrGate`` puts a
pipe behind descriptor 2 for the length of a run and forwards what comes
through it, minus known Beam/worker noise, until the run is interrupted; then
it forwards nothing, so the user sees newsbeam's one closing line.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections import deque

__all__ = ["StderrGate", "human_bytes", "is_noise", "plural"]

# How long a line is held before it is shown (see StderrGate._drain).
HOLD_SECONDS = 0.5
# Lines Beam's local workers and SDK print on every run; none concerns the user's data.
_NOISE = re.compile(
    r"apitools not found|Logging handler created|semi_persistent_directory|Worker: severity:|"
    r"Discarding unparseable args|Status HTTP server|Creating insecure (control|state) channel|"
    r"Control channel established|Initializing SDKHarness|Python sdk harness|Pipeline_options:|"
    r"No session file found|Statesampler|Waiting for grpc channel|Running \('|Starting the python|"
    r"worker_id"
)


def is_noise(line: str) -> bool:
    return bool(_NOISE.search(line))


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

    def __init__(self, verbose: bool = False):
        self._verbose = verbose
        self._real: int | None = None
        self._thread: threading.Thread | None = None
        self._open = True
        self._held: deque = deque()
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self._real is not None

    def __enter__(self):
        try:
            if self._verbose or sys.stderr.fileno() != 2:
                return self
        except (AttributeError, OSError, ValueError):  # replaced stderr without a descriptor
            return self
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

    def _queue(self, line: bytes) -> None:
        if is_noise(line.decode("utf-8", "replace")):
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
                os.write(self._real, self._held.popleft()[1])

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
        if self._real is None:
            return False
        sys.stderr.flush()
        os.dup2(self._real, 2)  # closes the pipe's last write end we hold
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._drain(everything=True)
        os.close(self._real)
        self._real = None
        return False
