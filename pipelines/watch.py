"""Watch mode: micro-batch incremental runs over a folder as files arrive.

The loop polls the folder every ``interval`` seconds and hands the files whose
size and modification time did not change since the previous poll to one
incremental run (which skips what the state dir already holds). A file that is
still being written changes between two polls and waits for the next one; a
writer that pauses longer than the interval should write under a hidden name
(``.name.tmp``; hidden files are never read) or elsewhere, and rename the file
into the folder when it is complete.

Signals: the first SIGINT/SIGTERM lets the current batch finish and commit and
then ends the loop; a second one raises KeyboardInterrupt at once (the batch in
progress is then not committed, and the next run redoes it).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable

from pipelines.read import InputFile
from pipelines.state import file_sha256

__all__ = ["CachedHasher", "StabilityFilter", "StopSignals", "watch_loop"]

EXIT_OK = 0
EXIT_FAILED = 1
# Longest uninterrupted sleep: keeps a stop request (or a test) responsive.
SLEEP_SLICE = 0.2

_LOG = logging.getLogger("newsbeam")


class StabilityFilter:
    """Files whose (size, mtime) equal what the previous poll saw."""

    def __init__(self):
        self._seen: dict[str, tuple[int, float]] = {}

    def stable(self, files: list[InputFile]) -> list[InputFile]:
        now = {f.path: (f.size, f.mtime) for f in files}
        ready = [f for f in files if self._seen.get(f.path) == now[f.path]]
        self._seen = now
        return ready


class CachedHasher:
    """Content hashes by (path, size, mtime): a touched but unchanged file is
    hashed once per watch session, not at every poll."""

    def __init__(self, hasher: Callable[[str], str] = file_sha256):
        self._hasher = hasher
        self._cache: dict[tuple[str, int, float], str] = {}

    def for_files(self, files: list[InputFile]) -> Callable[[str], str]:
        stamps = {f.path: (f.size, f.mtime) for f in files}

        def digest(path: str) -> str:
            key = (path, *stamps.get(path, (-1, -1.0)))
            if key not in self._cache:
                self._cache[key] = self._hasher(path)
            return self._cache[key]
        return digest


class StopSignals:
    """First SIGINT/SIGTERM: stop after the current batch. Second: stop now."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)):
        self._signals = signals
        self._event = threading.Event()
        self._previous: dict[int, object] = {}
        self.received = 0

    def install(self) -> StopSignals:
        for s in self._signals:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        self.received += 1
        if self.received > 1:
            raise KeyboardInterrupt
        _LOG.warning("newsbeam: %s received: stopping after the current batch (send it again to stop now)",
                     signal.Signals(signum).name)
        self._event.set()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True as soon as a stop was requested."""
        deadline = time.monotonic() + seconds
        while not self._event.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._event.wait(min(left, SLEEP_SLICE))
        return self._event.is_set()


def watch_loop(poll: Callable[[], list[InputFile]], run_batch: Callable[[list[InputFile]], int | None],
               interval: float, stop: StopSignals, stability: StabilityFilter, max_failures: int = 3) -> int:
    """Poll, run a batch over the stable files, sleep; until ``stop``.

    ``run_batch`` returns None when nothing was new, else an exit status.
    Returns 0 after a requested stop, 1 after ``max_failures`` failed batches
    in a row (a failed batch commits nothing, so the next one retries it).
    """
    if interval <= 0:
        raise ValueError("interval must be positive")
    if max_failures <= 0:
        raise ValueError("max_failures must be positive")
    failures = 0
    batches = 0
    while not stop.is_set():
        ready = stability.stable(poll())
        if ready:
            try:
                status = run_batch(ready)
            except KeyboardInterrupt:
                raise
            except Exception:
                _LOG.exception("newsbeam: batch failed")
                status = EXIT_FAILED
            if status is not None:
                batches += 1
                failures = failures + 1 if status != EXIT_OK else 0
                if failures >= max_failures:
                    _LOG.error("newsbeam: %d batches failed in a row; giving up", failures)
                    return EXIT_FAILED
        stop.wait(interval)
    _LOG.warning("newsbeam: watch stopped after %d batches", batches)
    return EXIT_OK
