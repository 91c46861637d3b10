"""Run orchestration: the launcher-side helpers (no pipeline run here)."""

from __future__ import annotations

import os
import platform
import sys

import pytest

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


# ---------------------------------------------------------------- execution in parts

def _files(*sizes):
    from pipelines.read import InputFile

    return [InputFile(f"/in/{i:03d}.txt", f"{i:03d}.txt", f"{i:03d}.txt", size=s) for i, s in enumerate(sizes)]


def test_plan_parts_deals_the_inputs_out_evenly_within_the_size():
    from pipelines.orchestrate import plan_parts

    parts = plan_parts(list(reversed(_files(4, 4, 4, 10, 1, 1))), 8)
    # 24 bytes at 8 a part: three parts, each input to the emptiest; the 10 would take any over 8.
    assert [[f.size for f in part] for part in parts] == [[4, 1], [4, 1], [4], [10]]
    assert sorted(f.path for part in parts for f in part) == sorted(f.path for f in _files(4, 4, 4, 10, 1, 1))
    assert all([f.path for f in part] == sorted(f.path for f in part) for part in parts)
    assert plan_parts([], 8) == []
    with pytest.raises(ValueError):
        plan_parts(_files(1), 0)


def test_plan_parts_cuts_even_parts_with_no_small_remainder():
    from pipelines.orchestrate import plan_parts

    # Seven inputs of 3 bytes at 11 a part: two parts, not two full ones and a third of one input.
    assert [[f.size for f in part] for part in plan_parts(_files(*[3] * 7), 11, limit=16)] == [[3] * 4, [3] * 3]
    # The limit still holds: a part never grows past it.
    assert [len(part) for part in plan_parts(_files(*[3] * 7), 11)] == [3, 3, 1]


def test_every_part_holds_inputs_from_all_over_the_input():
    from pipelines.orchestrate import plan_parts

    # A folder by topic: 40 short business stories, then 20 long sport ones. Cut into runs of
    # consecutive files, one worker would get most of the business and the other most of the sport.
    files = _files(*[1000] * 40, *[3000] * 20)
    parts = plan_parts(files, 50_000)
    assert len(parts) == 2
    assert [sum(f.size for f in part) for part in parts] == [50_000, 50_000]
    assert [sum(f.size == 1000 for f in part) for part in parts] == [20, 20]


def test_resume_key_changes_with_inputs_and_options_not_with_launcher_flags():
    import argparse

    from pipelines.orchestrate import resume_key

    ns = argparse.Namespace(output="/out", min_words=20, verbose=False, inputs=["/in"], command="run")
    key = resume_key(_files(1, 2), ns)
    assert key == resume_key(list(reversed(_files(1, 2))), argparse.Namespace(**{**vars(ns), "verbose": True}))
    assert key != resume_key(_files(1, 3), ns)
    assert key != resume_key(_files(1, 2), argparse.Namespace(**{**vars(ns), "min_words": 5}))


def test_single_process_args_take_the_worker_count_out():
    from pipelines.orchestrate import _single_process_args

    assert _single_process_args(["--direct_num_workers=3", "--direct_running_mode", "multi_processing",
                                 "--runner=FnApiRunner"]) == (["--runner=FnApiRunner"], 3)
    assert _single_process_args([]) == ([], None)


def test_runs_in_parts_only_on_local_runners():
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.orchestrate import runs_in_parts

    assert runs_in_parts(PipelineOptions(["--runner=FnApiRunner"]))
    assert not runs_in_parts(PipelineOptions(["--runner=FnApiRunner", "--chunk-bytes=0"]))
    assert not runs_in_parts(PipelineOptions(["--runner=DataflowRunner"]))


def test_progress_line_says_share_rate_and_eta():
    """The line a run in parts prints (console.ProgressDisplay, as execute_in_parts drives it)."""
    import io

    from pipelines.console import ProgressDisplay

    now = [0.0]
    stream = io.StringIO()
    progress = ProgressDisplay(1000, "bytes", 5, stream=stream, clock=lambda: now[0], live=False, enabled=True)
    progress.update(100, phase="annotate", total=400, unit="articles")
    now[0] = 10.0
    progress.update(200)
    line = progress.line()
    assert line == "newsbeam: annotate: 200 of 400 articles (50%), 10.0 articles/s, ETA 0:20"
    assert stream.getvalue().splitlines() == [line]


def test_part_bytes_spreads_the_input_evenly_over_the_workers():
    from pipelines.orchestrate import MULTIPROCESS_MIN_BYTES, part_bytes

    mib = 1024 * 1024
    assert part_bytes(11 * mib, 8 * mib, 2) == 11 * mib // 2  # two even parts, not 8 + 3
    assert part_bytes(3 * mib, 8 * mib, 2) == 3 * mib // 2  # small enough for one part, but both cores work
    assert part_bytes(MULTIPROCESS_MIN_BYTES - 1, 8 * mib, 2) == MULTIPROCESS_MIN_BYTES - 1  # not worth a second
    assert part_bytes(100 * mib, 8 * mib, 2) == -(-100 * mib // 14)  # 13 parts rounded up to 14
    assert part_bytes(100 * mib, 8 * mib, 1) == -(-100 * mib // 13)
    assert part_bytes(0, 8 * mib, 2) == 1


def test_the_byte_ranges_of_one_big_jsonl_are_units_parts_are_made_of():
    from pipelines.read import InputFile, split_ranges

    big = InputFile("/in/big.jsonl", "big.jsonl", "big.jsonl", size=1000)
    small = InputFile("/in/small.txt", "small.txt", "small.txt", size=100)
    units = split_ranges([big, small], range_bytes=250)
    parts = orchestrate.plan_parts(units, 600)
    assert len(parts) == 2  # the one big file is shared by both workers
    assert [(u.path, u.start) for u in parts[0]] == [("/in/big.jsonl", 0), ("/in/big.jsonl", 500),
                                                     ("/in/small.txt", 0)]
    assert [(u.start, u.end) for u in parts[1]] == [(250, 500), (750, 1000)]
