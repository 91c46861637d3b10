"""End to end: recurring runs with --state-dir (incremental input, cross-run
duplicates, cumulative counts, a killed run, a refused concurrent run)."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import fastavro
import pytest
from conftest import REPO, SEED
from helpers import read_output

from pipelines.cli import EXIT_LOCKED, main
from pipelines.state import StateLock, merge_counts

pytestmark = pytest.mark.slow

BODY_B = ("The European Central Bank kept interest rates unchanged on Thursday, said Christine Lagarde in Frankfurt. "
          "Economists at Deutsche Bank had expected the decision after inflation slowed across the euro area. "
          "Lagarde told reporters in Frankfurt that the bank would watch wages closely over the coming months.")
BODY_NEW = ("Heavy rain flooded streets across Lisbon on Sunday, and the mayor Carlos Moedas asked residents to stay "
            "at home. Firefighters in Portugal rescued dozens of people from cars trapped in the water near the Tagus, "
            "and trains between Lisbon and Porto were cancelled until the evening.")


def write_inputs(folder: Path) -> None:
    folder.mkdir(parents=True)
    shutil.copyfile(SEED, folder / "a.txt")
    (folder / "b.txt").write_text("Central bank holds rates\n\n" + BODY_B + "\n")


def read_avro(path: Path) -> list[dict]:
    with open(path, "rb") as f:
        return list(fastavro.reader(f))


def snapshot(out: Path) -> dict:
    """What a reader sees: the run OUT/latest names, and the cumulative counts."""
    run_id = (out / "latest").read_text().strip()
    result = read_output(out / "runs" / run_id)
    result["run_id"] = run_id
    result["totals"] = sorted(read_avro(out / "entity_counts_total" / "entity_counts_total.avro"),
                              key=lambda c: (c["entity"], c["label"], c["language"], c["period"]))
    return result


def listing(*roots: Path) -> dict[str, tuple]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for root in roots for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("incremental")
    inp, out, state = root / "in", root / "out", root / "state"
    write_inputs(inp)
    argv = ["run", str(inp), "--output", str(out), "--state-dir", str(state)]
    assert main(argv) == 0
    first = snapshot(out)
    assert main(argv) == 0
    unchanged = snapshot(out)
    (inp / "new.txt").write_text("Floods in Lisbon\n\n" + BODY_NEW + "\n")
    shutil.copyfile(SEED, inp / "copy.txt")  # the same story again, under another name
    stat = (inp / "b.txt").stat()
    os.utime(inp / "b.txt", (stat.st_atime + 100, stat.st_mtime + 100))  # touched, not changed
    assert main(argv) == 0
    more = snapshot(out)
    return {"root": root, "argv": argv, "in": inp, "out": out, "state": state,
            "first": first, "unchanged": unchanged, "more": more}


def test_first_run_is_published_as_a_run_folder_with_totals(runs):
    first, out = runs["first"], runs["out"]
    assert sorted(a["source"].rsplit("/", 1)[-1] for a in first["articles"]) == ["a.txt", "b.txt"]
    assert first["summary"]["inputs"]["files"] == 2 and first["summary"]["run_id"] == first["run_id"]
    assert first["totals"] == merge_counts(first["entity_counts"])
    assert os.readlink(out / "current") == f"runs/{runs['more']['run_id']}"
    assert not (out / ".staging").exists() and not (runs["state"] / "pending").exists()


def test_unchanged_folder_gives_an_empty_valid_run(runs):
    unchanged, first = runs["unchanged"], runs["first"]
    assert unchanged["run_id"] != first["run_id"]
    assert unchanged["summary"]["inputs"] == {"files": 0, "records": 0}
    assert unchanged["summary"]["incremental"]["files_unchanged"] == 2
    assert [unchanged[k] for k in ("articles", "duplicates", "rejected", "entity_counts")] == [[], [], [], []]
    assert unchanged["totals"] == first["totals"]


def test_only_new_and_changed_files_are_read(runs):
    s = runs["more"]["summary"]
    assert s["incremental"] == {**s["incremental"], "files_new": 2, "files_changed": 0, "files_unchanged": 2}
    assert s["inputs"]["files"] == 2
    assert [a["source"].rsplit("/", 1)[-1] for a in runs["more"]["articles"]] == ["new.txt"]
    runs_on_disk = sorted(p.name for p in (runs["out"] / "runs").iterdir())
    assert runs_on_disk == sorted(runs[k]["run_id"] for k in ("first", "unchanged", "more"))


def test_cross_run_duplicate_is_folded_into_the_earlier_article(runs):
    [earlier] = [a for a in runs["first"]["articles"] if a["source"].endswith("a.txt")]
    [dup] = runs["more"]["duplicates"]
    assert dup["source"].endswith("copy.txt") and dup["duplicate_of"] == earlier["id"] and dup["method"] == "exact"
    # Cumulative counts add up kept articles only: the copy counts nothing.
    assert runs["more"]["totals"] == merge_counts(runs["first"]["totals"], runs["more"]["entity_counts"])
    assert runs["more"]["summary"]["inputs"]["records"] == 2


def test_concurrent_run_is_refused_and_touches_nothing(runs, capsys):
    with StateLock(str(runs["state"]), "someone-else"):
        before = listing(runs["out"], runs["state"])
        assert main(runs["argv"]) == EXIT_LOCKED
        assert listing(runs["out"], runs["state"]) == before
    assert "someone-else" in capsys.readouterr().err


def test_run_killed_mid_way_leaves_nothing_and_the_rerun_equals_an_uninterrupted_run(runs):
    root = runs["root"] / "killed"
    inp, out, state = root / "in", root / "out", root / "state"
    write_inputs(inp)  # same files under the same names as the first run: same article ids
    argv = ["run", str(inp), "--output", str(out), "--state-dir", str(state)]
    proc = subprocess.Popen([sys.executable, "-m", "pipelines", *argv], cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None and not any((out / ".staging").rglob("*.*")):
            time.sleep(0.05)  # until the pipeline has begun writing
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "latest").exists() and not (out / "runs").exists(), "nothing visible"
    assert not (state / "HEAD").exists() and not (state / "committed").exists(), "no state change"
    assert main(argv) == 0
    rerun, first = snapshot(out), runs["first"]
    assert sorted(a["id"] for a in rerun["articles"]) == sorted(a["id"] for a in first["articles"])
    assert rerun["totals"] == first["totals"]
    assert not (out / ".staging").exists() and not (state / "pending").exists(), "leftovers discarded"
