"""Run orchestration: the launcher-side helpers (no pipeline run here)."""

from __future__ import annotations

import os
import platform
import sys

from pipelines import orchestrate


def test_limit_malloc_arenas_caps_this_process_and_the_workers_it_starts(monkeypatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    applied = orchestrate.limit_malloc_arenas(2)
    assert os.environ["MALLOC_ARENA_MAX"] == "2"  # inherited by local worker processes
    assert applied == (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc")


def test_limit_malloc_arenas_keeps_the_users_setting(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    orchestrate.limit_malloc_arenas(2)
    assert os.environ["MALLOC_ARENA_MAX"] == "4"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "lots")
    assert orchestrate.limit_malloc_arenas(2) is False  # an unusable value changes nothing
