"""State dir, commit protocol, locking and cumulative counts (pipelines/state.py)."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import fastavro
import pytest
from apache_beam.testing.util import assert_that, equal_to
from conftest import REPO

from pipelines.read import InputFile
from pipelines.records import load_schema
from pipelines.state import (
    CumulativeCounts,
    LockHeld,
    RecordInputs,
    Selection,
    StateLock,
    StateStore,
    _accumulated_name,
    dump_manifest,
    lock_is_stale,
    merge_counts,
    move_tree,
    new_run_id,
    parse_manifest,
    prune_runs,
    publish_flat,
    read_text,
    select_inputs,
    updated_manifest,
    write_atomic,
)

SCHEMA = load_schema("entity_count")


def count(entity, mentions, documents, period="all", label="PERSON", language="en"):
    return {"entity": entity, "label": label, "language": language, "period": period,
            "mentions": mentions, "documents": documents}


def write_avro(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        fastavro.writer(f, fastavro.parse_schema(SCHEMA), records, codec="deflate")


def read_avro(path: Path) -> list[dict]:
    with open(path, "rb") as f:
        return list(fastavro.reader(f))


def tree(root: Path) -> dict:
    """Every file under root -> contents (Avro: its records, since each writer
    picks a random sync marker; symlinks: their target)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("-> " + os.readlink(p)).encode()
        elif p.is_file():
            out[rel] = read_avro(p) if p.suffix == ".avro" and p.read_bytes()[:3] == b"Obj" else p.read_bytes()
    return out


# ---------------------------------------------------------------- manifest and selection

def f(path, size=10, mtime=100.0):
    return InputFile(path=path, source=path, key=path.rsplit("/", 1)[-1], size=size, mtime=mtime)


def entry(path, size=10, mtime=100.0, sha="h-old"):
    return {"path": path, "size": size, "mtime": mtime, "sha256": sha, "run": "r0"}


@pytest.mark.parametrize("planned, known, content_hash, expect", [
    (f("/in/a.txt"), None, None, "new"),
    (f("/in/a.txt"), entry("/in/a.txt"), None, "unchanged"),
    (f("/in/a.txt", mtime=200.0), entry("/in/a.txt"), "h-old", "touched"),
    (f("/in/a.txt", size=11, mtime=200.0), entry("/in/a.txt"), "h-new", "changed"),
    (f("/in/a.txt", mtime=200.0), entry("/in/a.txt", sha=None), "h-new", "changed"),
])
def test_select_inputs_reads_only_new_and_changed_files(planned, known, content_hash, expect):
    hashed = []

    def hasher(path):
        hashed.append(path)
        return content_hash

    manifest = {known["path"]: known} if known else {}
    sel = select_inputs([planned], manifest, hasher)
    assert [x.path for x in sel.process] == ([] if expect in ("unchanged", "touched") else [planned.path])
    assert (sel.new, sel.changed, sel.unchanged) == {
        "new": (1, 0, 0), "unchanged": (0, 0, 1), "touched": (0, 0, 1), "changed": (0, 1, 0)}[expect]
    # Size and mtime decide without reading when they match; the hash only otherwise.
    assert hashed == ([] if expect in ("new", "unchanged") or known.get("sha256") is None else [planned.path])
    assert sel.refreshed == ({planned.path: {**known, "mtime": 200.0}} if expect == "touched" else {})


def test_manifest_update_round_trips():
    old = {"/in/a.txt": entry("/in/a.txt"), "/in/b.txt": entry("/in/b.txt")}
    sel = Selection(process=[f("/in/c.txt", 5, 3.5)], new=1, unchanged=2,
                    refreshed={"/in/b.txt": {**entry("/in/b.txt"), "mtime": 9.25}})
    merged = updated_manifest(old, sel, {"/in/c.txt": "h-c"}, "r1")
    assert merged["/in/c.txt"] == {"path": "/in/c.txt", "size": 5, "mtime": 3.5, "sha256": "h-c", "run": "r1"}
    assert merged["/in/b.txt"]["mtime"] == 9.25 and merged["/in/a.txt"] == old["/in/a.txt"]
    assert parse_manifest(dump_manifest(merged).decode()) == merged
    assert sel.describe() == {"files_seen": 3, "files_new": 1, "files_changed": 0, "files_unchanged": 2}


def test_run_ids_sort_by_start_time_and_differ():
    import datetime as dt

    t = dt.datetime(2024, 8, 16, 9, 30, 0, 123456, tzinfo=dt.UTC)
    a, b = new_run_id(t), new_run_id(t + dt.timedelta(milliseconds=1))
    assert re.fullmatch(r"20240816T093000123Z-[0-9a-f]{6}", a)
    assert a < b and new_run_id(t) != a


@pytest.mark.parametrize("rel, expected", [
    ("dedupe/part-00000-of-00001.avro", "dedupe/part-00000-of-00001-R.avro"),
    ("dedupe/x/part.jsonl.gz", "dedupe/x/part-R.jsonl.gz"),
    ("notes", "notes-R"),
])
def test_accumulated_history_names_keep_the_suffix(rel, expected):
    assert _accumulated_name(rel, "R") == expected


def test_merge_counts_sums_per_entity_label_language_period():
    merged = merge_counts([count("A", 2, 1), count("A", 1, 1, "2024-08-16")],
                          [count("A", 3, 2), count("A", 3, 2, label="ORG"), count("A", 1, 1, language="fr")])
    assert merged == [count("A", 3, 2, label="ORG"), count("A", 1, 1, "2024-08-16"), count("A", 5, 3),
                      count("A", 1, 1, language="fr")]


# ---------------------------------------------------------------- files

def test_write_atomic_replaces_and_read_text(tmp_path):
    target = tmp_path / "sub" / "HEAD"
    assert read_text(str(target)) is None
    write_atomic(str(target), b"one")
    write_atomic(str(target), b"two")
    assert read_text(str(target)) == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["HEAD"], "no temporary file left"


def test_move_tree_whole_folder_and_resumed_per_file(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "x.avro").write_text("x")
    (src / "summary.json").write_text("{}")
    move_tree(str(src), str(tmp_path / "dst"))
    assert tree(tmp_path / "dst") == {"a/x.avro": b"x", "summary.json": b"{}"} and not src.exists()
    # A move cut short (some files already there) finishes the rest.
    (src / "a").mkdir(parents=True)
    (src / "a" / "y.avro").write_text("y")
    move_tree(str(src), str(tmp_path / "dst"))
    assert tree(tmp_path / "dst") == {"a/x.avro": b"x", "a/y.avro": b"y", "summary.json": b"{}"}
    assert not src.exists()
    move_tree(str(src), str(tmp_path / "dst"))  # nothing left to move: a no-op


def test_publish_flat_swaps_only_what_the_run_writes(tmp_path):
    out = tmp_path / "out"
    (out / "articles").mkdir(parents=True)
    (out / "articles" / "part-00000-of-00002.avro").write_text("old")
    (out / "articles" / "part-00001-of-00002.avro").write_text("old")
    (out / "rejected").mkdir()
    (out / "rejected" / "part-00000-of-00001.avro").write_text("old")
    (out / "notes.txt").write_text("mine")
    staging = out / ".staging" / "r1"
    (staging / "articles").mkdir(parents=True)
    (staging / "articles" / "part-00000-of-00001.avro").write_text("new")
    (staging / "summary.json").write_text("{}")
    publish_flat(str(staging), str(out), always_replace=("rejected", "summary.json"))
    assert tree(out) == {"articles/part-00000-of-00001.avro": b"new", "notes.txt": b"mine", "summary.json": b"{}"}


def test_prune_runs_keeps_the_newest_and_the_latest(tmp_path):
    for r in ("r1", "r2", "r3", "r4"):
        (tmp_path / "runs" / r).mkdir(parents=True)
    (tmp_path / "latest").write_text("r1\n")
    assert prune_runs(str(tmp_path), 0) == []
    assert prune_runs(str(tmp_path), 2) == ["r2"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["r1", "r3", "r4"]


# ---------------------------------------------------------------- commit protocol

def prepare_run(state: StateStore, out: Path, run_id: str, article: str, totals: list[dict]) -> None:
    """What a run leaves before its commit: pending state and staged output."""
    state.begin(run_id, str(out))
    pending = Path(state.pending(run_id))
    (pending / "dedupe").mkdir(parents=True)
    write_avro(pending / "dedupe" / "part-00000-of-00001.avro", totals)  # any Avro with records
    write_avro(pending / "entity_counts_total.avro", totals)
    (pending / "manifest_parts").mkdir()
    (pending / "manifest_parts" / "part-00000-of-00001.jsonl").write_text(
        json.dumps({"path": f"/in/{article}", "sha256": "h"}) + "\n")
    staged = out / ".staging" / run_id
    (staged / "articles").mkdir(parents=True)
    (staged / "articles" / "part-00000-of-00001.avro").write_text(article)
    (staged / "summary.json").write_text(json.dumps({"run_id": run_id}))


def commit(state: StateStore, out: Path, run_id: str, article: str, totals: list[dict]) -> None:
    prepare_run(state, out, run_id, article, totals)
    sel = Selection(process=[f(f"/in/{article}")], new=1)
    state.seal(run_id, state.load_manifest(), sel)
    state.commit(run_id, str(out))


def expected_after_two_runs(tmp_path: Path) -> tuple[dict, dict]:
    state, out = StateStore(str(tmp_path / "ref-state")), tmp_path / "ref-out"
    commit(state, out, "r1", "a", [count("A", 1, 1)])
    state.roll_forward("r1", str(out))
    commit(state, out, "r2", "b", [count("A", 2, 2)])
    state.roll_forward("r2", str(out))
    return tree(tmp_path / "ref-state"), tree(out)


def test_committed_runs_publish_output_and_state(tmp_path):
    state_files, out_files = expected_after_two_runs(tmp_path)
    assert out_files["latest"] == b"r2\n" and out_files["current"] == b"-> runs/r2"
    assert out_files["runs/r1/articles/part-00000-of-00001.avro"] == b"a"
    assert out_files["runs/r2/summary.json"] == b'{"run_id": "r2"}'
    assert read_avro(Path(tmp_path / "ref-out/entity_counts_total/entity_counts_total.avro")) == [count("A", 2, 2)]
    assert sorted(state_files) == [
        "HEAD", "committed/dedupe/part-00000-of-00001-r1.avro", "committed/dedupe/part-00000-of-00001-r2.avro",
        "committed/entity_counts_total.avro", "committed/manifest.jsonl"]
    manifest = parse_manifest(state_files["committed/manifest.jsonl"].decode())
    assert {p: e["run"] for p, e in manifest.items()} == {"/in/a": "r1", "/in/b": "r2"}
    assert json.loads(state_files["HEAD"])["run_id"] == "r2"


@pytest.mark.parametrize("cut_after", range(5))
def test_a_run_killed_during_publication_is_finished_by_the_next(tmp_path, cut_after):
    expected_state, expected_out = expected_after_two_runs(tmp_path)
    state, out = StateStore(str(tmp_path / "state")), tmp_path / "out"
    commit(state, out, "r1", "a", [count("A", 1, 1)])
    state.roll_forward("r1", str(out))
    commit(state, out, "r2", "b", [count("A", 2, 2)])
    steps = state.roll_forward_steps("r2", str(out))
    assert len(steps) == 5
    for _, step in steps[:cut_after]:
        step()
    assert state.recover() == {"finished": "r2", "abandoned": []}
    assert tree(tmp_path / "state") == {**expected_state, "HEAD": tree(tmp_path / "state")["HEAD"]}
    assert tree(out) == expected_out


def test_a_run_killed_before_its_commit_changes_nothing(tmp_path):
    state, out = StateStore(str(tmp_path / "state")), tmp_path / "out"
    commit(state, out, "r1", "a", [count("A", 1, 1)])
    state.roll_forward("r1", str(out))
    before_state, before_out = tree(tmp_path / "state"), tree(out)
    prepare_run(state, out, "r2", "b", [count("A", 2, 2)])  # ... and the process dies here
    assert state.head()["run_id"] == "r1"
    assert state.load_manifest().keys() == {"/in/a"}
    assert state.recover() == {"finished": None, "abandoned": ["r2"]}
    assert tree(tmp_path / "state") == before_state and tree(out) == before_out


def test_seal_drops_history_files_without_records(tmp_path):
    state, out = StateStore(str(tmp_path / "state")), tmp_path / "out"
    prepare_run(state, out, "r1", "a", [])
    state.seal("r1", {}, Selection(process=[f("/in/a")], new=1))
    pending = Path(state.pending("r1"))
    assert not (pending / "dedupe" / "part-00000-of-00001.avro").exists()
    assert (pending / "entity_counts_total.avro").exists(), "the totals are kept even when empty"


# ---------------------------------------------------------------- locking

def test_second_lock_is_refused_with_the_holder_named(tmp_path):
    with StateLock(str(tmp_path), "run-1"):
        with pytest.raises(LockHeld) as refused:
            StateLock(str(tmp_path), "run-2").acquire()
        assert refused.value.holder["run_id"] == "run-1"
        assert refused.value.holder["pid"] == os.getpid()
        assert "run-1" in str(refused.value)
    with StateLock(str(tmp_path), "run-3"):
        assert json.loads((tmp_path / "LOCK").read_text())["run_id"] == "run-3"
    assert (tmp_path / "LOCK").read_text() == "", "a released lock names nobody"


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pipelines.state import StateLock; "
                               "StateLock(sys.argv[1], 'doomed').acquire(); print('held', flush=True); "
                               "time.sleep(600)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld):
            StateLock(str(tmp_path), "early").acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert json.loads((tmp_path / "LOCK").read_text())["run_id"] == "doomed", "a dead holder's note remains"
    with StateLock(str(tmp_path), "next"):
        assert json.loads((tmp_path / "LOCK").read_text())["run_id"] == "next"


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.parametrize("holder, stale", [
    (None, True),
    ({"host": "me", "pid": "self", "heartbeat": "now"}, False),
    ({"host": "me", "pid": "dead", "heartbeat": "now"}, True),
    ({"host": "other", "pid": 1, "heartbeat": "now"}, False),
    ({"host": "other", "pid": 1, "heartbeat": "old"}, True),
])
def test_lock_staleness(holder, stale):
    now = time.time()
    if holder:
        holder = {**holder, "pid": {"self": os.getpid(), "dead": dead_pid()}.get(holder["pid"], holder["pid"]),
                  "heartbeat": now - (0 if holder["heartbeat"] == "now" else 1000)}
    assert lock_is_stale(holder, now, stale_after=600, host="me") is stale


def test_heartbeat_lock_for_object_stores(tmp_path):
    """The FileSystems-only lock (used for gs:// and s3://), exercised on a local path."""
    lock = StateLock(str(tmp_path), "run-1", stale_after=0.5, heartbeat=True).acquire()
    try:
        with pytest.raises(LockHeld):
            StateLock(str(tmp_path), "run-2", stale_after=600, heartbeat=True).acquire()
        first = json.loads((tmp_path / "LOCK").read_text())["heartbeat"]
        time.sleep(0.6)  # the holder's heartbeat keeps it fresh
        assert json.loads((tmp_path / "LOCK").read_text())["heartbeat"] > first
        with pytest.raises(LockHeld):
            StateLock(str(tmp_path), "run-2", stale_after=0.5, heartbeat=True).acquire()
    finally:
        lock.release()
    assert not (tmp_path / "LOCK").exists()
    write_atomic(str(tmp_path / "LOCK"), json.dumps(
        {"run_id": "gone", "host": "elsewhere", "pid": 1, "heartbeat": time.time() - 3600}).encode())
    with StateLock(str(tmp_path), "run-3", stale_after=600, heartbeat=True):
        assert json.loads((tmp_path / "LOCK").read_text())["run_id"] == "run-3"


# ---------------------------------------------------------------- Beam branches

def test_cumulative_counts_adds_this_run_to_the_committed_totals(tmp_path, test_pipeline):
    import apache_beam as beam

    previous = [count("A", 2, 1), count("B", 1, 1)]
    current = [count("A", 3, 2), count("C", 1, 1, "2024-08-16")]
    write_avro(tmp_path / "in" / "entity_counts_total.avro", previous)
    expected = [count("A", 5, 3), count("B", 1, 1), count("C", 1, 1, "2024-08-16")]
    assert merge_counts(previous, current) == expected
    with test_pipeline() as p:
        totals = p | beam.Create(current) | CumulativeCounts(str(tmp_path / "in"), str(tmp_path / "out"), SCHEMA)
        assert_that(totals, equal_to(expected))
    assert sorted(read_avro(tmp_path / "out" / "entity_counts_total.avro"), key=lambda r: r["entity"]) == expected


def test_cumulative_counts_without_history_is_this_run(tmp_path, test_pipeline):
    import apache_beam as beam

    with test_pipeline() as p:
        totals = p | beam.Create([count("A", 1, 1)]) | CumulativeCounts(None, str(tmp_path / "out"), SCHEMA)
        assert_that(totals, equal_to([count("A", 1, 1)]))
    assert read_avro(tmp_path / "out" / "entity_counts_total.avro") == [count("A", 1, 1)]


def test_record_inputs_hashes_every_file(tmp_path, test_pipeline):
    import hashlib

    import apache_beam as beam

    (tmp_path / "a.txt").write_bytes(b"alpha")
    files = [InputFile(str(tmp_path / "a.txt"), "a.txt", "a.txt"), InputFile(str(tmp_path / "gone.txt"), "g", "g")]
    expected = [{"path": str(tmp_path / "a.txt"), "sha256": hashlib.sha256(b"alpha").hexdigest()},
                {"path": str(tmp_path / "gone.txt"), "sha256": None}]
    from pipelines.read import write_plan

    plan = str(tmp_path / "plan.jsonl")
    write_plan(files, plan)
    with test_pipeline() as p:
        lines = p | RecordInputs(plan, str(tmp_path / "state"))
        assert_that(lines | "Parse" >> beam.Map(json.loads), equal_to(expected))
    written = [json.loads(line) for part in (tmp_path / "state" / "manifest_parts").iterdir()
               for line in part.read_text().splitlines()]
    assert sorted(written, key=lambda e: e["path"]) == expected


def test_record_inputs_hashes_a_file_cut_in_ranges_once(tmp_path, test_pipeline):
    import hashlib

    import apache_beam as beam

    from pipelines.read import split_ranges, write_plan

    data = b"".join(b'{"text": "line %d"}\n' % i for i in range(100))
    (tmp_path / "a.jsonl").write_bytes(data)
    units = split_ranges([InputFile(str(tmp_path / "a.jsonl"), "a.jsonl", "a.jsonl", size=len(data))],
                         range_bytes=300)
    assert len(units) > 3
    plan = str(tmp_path / "plan.jsonl")
    write_plan(units, plan)
    with test_pipeline() as p:
        lines = p | RecordInputs(plan, str(tmp_path / "state"))
        assert_that(lines | "Parse" >> beam.Map(json.loads),
                    equal_to([{"path": str(tmp_path / "a.jsonl"), "sha256": hashlib.sha256(data).hexdigest()}]))


# ---------------------------------------------------------------- scheduling examples

def example_commands() -> list[list[str]]:
    """The newsbeam command lines in the scheduling examples under scripts/."""
    commands = []
    for name in ("newsbeam.cron", "newsbeam.service"):
        text = (REPO / "scripts" / name).read_text().replace("\\\n", " ")
        for line in text.splitlines():
            if line.lstrip().startswith("#") or "newsbeam run" not in line and "newsbeam watch" not in line:
                continue
            words = shlex.split(line.split("=", 1)[1] if line.startswith("ExecStart") else line)
            start = next(i for i, w in enumerate(words) if w.endswith("newsbeam"))
            end = next((i for i, w in enumerate(words) if w in (">>", ">", "2>&1", ";", "&&", "||")), len(words))
            commands.append(words[start + 1:end])
    return commands


def test_scheduling_examples_are_valid_incremental_commands():
    from pipelines.cli import _build_parser

    commands = example_commands()
    assert commands, "the examples contain newsbeam command lines"
    timer = (REPO / "scripts" / "newsbeam.timer").read_text()
    assert re.search(r"^OnCalendar=\S+", timer, re.M) and "Unit=newsbeam.service" in timer
    for argv in commands:
        ns, extra = _build_parser().parse_known_args(argv)
        assert ns.command in ("run", "watch") and ns.state_dir and ns.output and not extra, argv
