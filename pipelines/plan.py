"""Launcher-side planning: which files a run reads, and where they go.

This runs in the launching process only; it uses ``FileSystems`` so the same
planning works for local folders and object stores.
"""

from __future__ import annotations

import fnmatch
import os
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


def plan_inputs(inputs: list[str], exclude: tuple[str, ...] = ()) -> list[InputFile]:
    """Expand files, directories (recursively) and globs into input files.

    Files whose name matches an ``exclude`` pattern are left out. Raises
    UsageError for an input that matches nothing. Hidden files and
    folders (``.git``, editor swap files) are skipped when a directory is
    expanded, since nobody keeps articles there.
    """
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
            planned.setdefault(m.path, InputFile(path=m.path, source=m.path, key=key, size=m.size, mtime=m.mtime))
    return sorted(planned.values(), key=lambda f: f.path)
