"""Launcher-side planning: which files a run reads, and where they go.

This runs in the launching process only; it uses ``FileSystems`` so the same
planning works for local folders and object stores.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections import Counter
from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems

from pipelines.read import InputFile

__all__ = ["UsageError", "plan_inputs"]

_GLOB_CHARS = set("*?[")


class UsageError(Exception):
    """A problem with how newsbeam was called (exit status 2)."""


@dataclass(frozen=True)
class _Match:
    path: str
    size: int
    mtime: float


def _match(pattern: str) -> list[_Match]:
    try:
        result = FileSystems.match([pattern])[0]
    except Exception:  # BeamIOError: nothing matched, or the scheme is unknown
        return []
    return [_Match(m.path, m.size_in_bytes, m.last_updated_in_seconds) for m in result.metadata_list]


def _is_hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split("/") if part)


def _not_regular(path: str) -> bool:
    """A local FIFO, socket or device: opening one can block forever or read
    without end, so it is never opened. Object-store paths are always files."""
    if FileSystems.get_scheme(path) not in (None, "file"):
        return False
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False  # vanished since the match: reading it will say so


def _normalise(folder: str) -> str:
    folder = folder.rstrip("/")
    return os.path.abspath(folder) if FileSystems.get_scheme(folder) in (None, "file") else folder


def _inside(path: str, folders: tuple[str, ...]) -> bool:
    path = _normalise(path)
    return any(path == f or path.startswith(f + "/") for f in folders)


def plan_inputs(inputs: list[str], exclude: tuple[str, ...] = (), never_read: tuple[str, ...] = (),
                skipped: Counter | None = None) -> list[InputFile]:
    """Expand files, directories (recursively) and globs into input files.

    Files whose name matches an ``exclude`` pattern are left out. Raises
    UsageError for an input that matches nothing. Hidden files and
    folders (``.git``, editor swap files) are skipped when a directory is
    expanded, since nobody keeps articles there. Files inside a
    ``never_read`` folder (newsbeam's own output, state and staging, wherever
    they sit) and files that are not regular files (FIFOs, sockets, devices)
    are skipped and counted in ``skipped`` by reason.
    """
    never_read = tuple(_normalise(f) for f in never_read if f)
    skipped = Counter() if skipped is None else skipped
    if not inputs:
        raise UsageError("no input given: pass files, directories or globs")
    planned: dict[str, InputFile] = {}
    for given in inputs:
        matches: list[tuple[_Match, str]] = []
        if _GLOB_CHARS & set(given):
            root = given[: min(given.index(c) for c in _GLOB_CHARS if c in given)]
            root = root[: root.rfind("/") + 1]
            matches = [(m, m.path[len(root):] if m.path.startswith(root) else m.path) for m in _match(given)]
        else:
            base = given.rstrip("/")
            inside = [m for m in _match(base + "/**") if m.path != base and not m.path.endswith("/")]
            if inside:
                prefix = base + "/"
                matches = [(m, m.path[len(prefix):]) for m in inside if not _is_hidden(m.path[len(prefix):])]
            else:
                exact = [m for m in _match(base) if m.path.rstrip("/") == base]
                if exact and not os.path.isdir(base):
                    matches = [(exact[0], base.rsplit("/", 1)[-1])]
                elif exact:
                    matches = []  # an empty local folder: nothing to read, not an error
                    continue
        if not matches:
            raise UsageError(f"input {given!r} matches no file")
        for m, key in matches:
            name = key.rsplit("/", 1)[-1]
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude):
                continue
            if never_read and _inside(m.path, never_read):
                skipped["newsbeam_output"] += 1
                continue
            if _not_regular(m.path):
                skipped["not_a_regular_file"] += 1
                continue
            planned.setdefault(m.path, InputFile(path=m.path, source=m.path, key=key, size=m.size, mtime=m.mtime))
    return sorted(planned.values(), key=lambda f: f.path)
