"""Watch mode (pipelines/watch.py): stability, the poll loop, signals, and one
end-to-end watch that picks up a file added while it runs and stops on SIGTERM."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, SEED
from helpers import read_output

from pipelines.read import InputFile
from pipelines.watch import CachedHasher, StabilityFilter, StopSignals, watch_loop


def f(path, size=10, mtime=1.0):
    return InputFile(path=path, source=path, key=path, size=size, mtime=mtime)


def test_a_file_is_ready_once_size_and_mtime_held_across_two_polls():
    stability = StabilityFilter()
    assert stability.stable([f("a"), f("b")]) == []  # first sight: maybe still being written
    assert stability.stable([f("a"), f("b", size=20), f("c")]) == [f("a")]  # b grew, c is new
    assert stability.stable([f("a"), f("b", size=20), f("c")]) == [f("a"), f("b", size=20), f("c")]
    assert stability.stable([f("a", mtime=2.0), f("c")]) == [f("c")]  # a rewritten


def test_cached_hasher_reads_a_file_again_only_when_it_changed():
    calls = []

    def hasher(path):
        calls.append(path)
        return f"h{len(calls)}"

    cache = CachedHasher(hasher)
    assert cache.for_files([f("a")])("a") == "h1"
    assert cache.for_files([f("a")])("a") == "h1"
    assert cache.for_files([f("a", mtime=2.0)])("a") == "h2"
    assert calls == ["a", "a"]


class Script:
    """A fake folder and batch runner: polls return the next listing, batches are recorded."""

    def __init__(self, listings, statuses=None, stop_after_polls=None, stop=None):
        self.listings, self.statuses = list(listings), list(statuses or [])
        self.batches, self.polls = [], 0
        self.stop_after_polls, self.stop = stop_after_polls, stop

    def poll(self):
        self.polls += 1
        if self.stop_after_polls and self.polls >= self.stop_after_polls:
            self.stop.set()
        return self.listings[min(self.polls - 1, len(self.listings) - 1)]

    def run_batch(self, files):
        self.batches.append([x.path for x in files])
        return self.statuses.pop(0) if self.statuses else 0


def test_watch_loop_runs_stable_files_and_stops_when_asked():
    stop = StopSignals(signals=())
    script = Script([[f("a")], [f("a")], [f("a"), f("b")], [f("a"), f("b")]], stop_after_polls=4, stop=stop)
    assert watch_loop(script.poll, script.run_batch, 0.01, stop, StabilityFilter()) == 0
    assert script.batches == [["a"], ["a"], ["a", "b"]]


def test_watch_loop_gives_up_after_failed_batches_in_a_row():
    stop = StopSignals(signals=())
    script = Script([[f("a")]], statuses=[1, None, 1, 0, 1, 1, 1])
    assert watch_loop(script.poll, script.run_batch, 0.01, stop, StabilityFilter(), max_failures=3) == 1
    assert len(script.batches) == 7, "a success or an empty batch does not end the streak; a success resets it"


def test_first_signal_stops_after_the_batch_second_stops_now():
    stop = StopSignals(signals=(signal.SIGUSR1,)).install()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.wait(5) and stop.is_set()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(5)
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def wait_for(condition, proc, timeout=600):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"watch exited early with status {proc.returncode}"
        assert time.monotonic() < deadline, "timed out waiting for the watch"
        time.sleep(0.1)


@pytest.mark.slow
def test_watch_picks_up_a_file_added_while_it_runs_and_stops_after_the_batch_on_sigterm(tmp_path):
    inp, out, state = tmp_path / "in", tmp_path / "out", tmp_path / "state"
    inp.mkdir()
    shutil.copyfile(SEED, inp / "a.txt")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "watch", str(inp), "--output", str(out), "--state-dir", str(state),
         "--interval", "0.5"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (out / "latest").exists(), proc)
        first = (out / "latest").read_text().strip()
        # Written under a hidden name and moved in: never seen half-written.
        (inp / ".b.txt.part").write_text("Floods in Lisbon\n\n" + " ".join(
            ["Heavy rain flooded streets across Lisbon on Sunday and trains to Porto were cancelled."] * 4))
        (inp / ".b.txt.part").rename(inp / "b.txt")
        wait_for(lambda: any((out / ".staging").rglob("*.*")), proc)  # the second batch is running
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=600)
        second = (out / "latest").read_text().strip()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    assert "SIGTERM received" in output and "watch stopped after 2 batches" in output
    assert second != first, "the batch running when SIGTERM came was finished and committed"
    assert [a["source"].rsplit("/", 1)[-1] for a in read_output(out / "runs" / first)["articles"]] == ["a.txt"]
    assert [a["source"].rsplit("/", 1)[-1] for a in read_output(out / "runs" / second)["articles"]] == ["b.txt"]
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted([first, second]), "no empty batches"
    assert (state / "LOCK").read_text() == "", "the lock is released"


def test_watch_needs_a_state_dir(tmp_path, capsys):
    from pipelines.cli import main

    assert main(["watch", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    assert "--state-dir" in capsys.readouterr().err
    assert main(["watch", str(tmp_path / "missing"), "--output", str(tmp_path / "o"),
                 "--state-dir", str(tmp_path / "s")]) == 2
    assert not Path(tmp_path / "s").exists() and not Path(tmp_path / "o").exists()


def _stories(folder, first, last):
    import random

    rng = random.Random(first)
    words = ("market council river station winter harbour budget minister league trial energy "
             "school museum railway festival report season village contract storm").split()
    for i in range(first, last):
        body = " ".join(rng.choice(words) for _ in range(350))
        (folder / f"s{i:04d}.txt").write_text(f"Story number {i}\n\n{body}.\n")


def _start_watch(inp, out, state, log):
    # Small parts: each batch goes to the pool of two worker processes. A new
    # session, so a signal can go to the whole group as a terminal's Ctrl-C does.
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines", "watch", str(inp), "--output", str(out), "--state-dir", str(state),
         "--interval", "0.5", "--chunk-bytes", "10000"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _workers_started(proc):
    import psutil

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"watch exited early with status {proc.returncode}"
        if len([c for c in psutil.Process(proc.pid).children(recursive=True)
                if "spawn_main" in " ".join(c.cmdline())]) >= 2:
            return psutil.Process(proc.pid).children(recursive=True)
        time.sleep(0.2)
    raise AssertionError("the batch never started its worker processes")


@pytest.mark.slow
def test_ctrl_c_to_the_process_group_lets_the_batch_finish_and_a_second_one_stops_at_once(tmp_path):
    import psutil

    inp, out, state = tmp_path / "in", tmp_path / "out", tmp_path / "state"
    inp.mkdir()
    _stories(inp, 0, 24)
    with open(tmp_path / "first.log", "w+") as log:
        proc = _start_watch(inp, out, state, log)
        try:
            _workers_started(proc)
            os.killpg(proc.pid, signal.SIGINT)  # the workers get it too, as from a terminal
            proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        log.seek(0)
        first_log = log.read()
    assert proc.returncode == 0, first_log
    assert "Traceback" not in first_log and "SIGINT received" in first_log, first_log
    first = (out / "latest").read_text().strip()
    assert len(read_output(out / "runs" / first)["articles"]) == 24, "the batch under way was finished"

    _stories(inp, 24, 48)
    with open(tmp_path / "second.log", "w+") as log:
        proc = _start_watch(inp, out, state, log)
        try:
            everyone = _workers_started(proc)
            os.killpg(proc.pid, signal.SIGTERM)
            time.sleep(0.5)
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        log.seek(0)
        second_log = log.read()
    lines = [line for line in second_log.splitlines() if line.strip() and "apitools" not in line]
    assert proc.returncode == 143, second_log
    assert "Traceback" not in second_log and len(lines) <= 5, lines
    assert "stopped at once (SIGTERM)" in lines[-1] and "previous output is kept" in lines[-1], lines
    time.sleep(0.5)
    assert not [c for c in everyone if c.is_running() and c.status() != psutil.STATUS_ZOMBIE], "no orphans"
    assert (out / "latest").read_text().strip() == first, "the previous output is still the latest"
    assert len(read_output(out / "runs" / first)["articles"]) == 24
    assert (state / "LOCK").read_text() == "", "the lock is released"
