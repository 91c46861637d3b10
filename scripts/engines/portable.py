"""Processes a portable Beam run needs besides the launcher, each started in
its own process group and stopped as a whole, with a deadline on every wait.

* ``worker_pool``: Beam's Python SDK worker pool (``worker_pool_main``), the
  EXTERNAL environment that job servers hand the Python DoFns to. Started from
  any venv, e.g. one that has only the newsbeam wheel and the lock.
* ``python_job_service``: Beam's own Python job service
  (``local_job_service_main``), which runs the submitted pipeline on the
  FnApiRunner: the portable API without a Java engine behind it.

Used by scripts/engines/flink.py and tests/test_engines.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

__all__ = ["Unavailable", "free_port", "process_group", "python_job_service", "rss_mb", "wait_until", "worker_pool"]


class Unavailable(RuntimeError):
    """A piece of the engine cannot be had here (download refused, not served, no java, did not come up)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def process_group(cmd: list, log: Path, env: dict | None = None, cwd: Path | None = None):
    """Popen in a new session; on exit SIGTERM the whole group, SIGKILL what is left after 15 s.

    The group, not the leader: the Flink scripts exec a JVM, the worker pool
    forks SDK workers, and either would outlive a killed leader."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)
    try:
        yield proc
    finally:
        _stop_group(proc)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _stop_group(proc: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader so the group can empty
            if not _group_alive(proc.pid):
                break
            time.sleep(0.2)
        else:
            continue
        break
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-n:]
    except OSError:
        return ""


def wait_until(check, what: str, procs: list, logs: list[Path], timeout: float) -> None:
    """Poll ``check`` until true; Unavailable with the logs' tails if a process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p, log in zip(procs, logs):
            if p.poll() is not None:
                raise Unavailable(f"{what}: a process exited ({p.returncode}) before it was ready:\n{tail(log)}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise Unavailable(f"{what}: not ready within {timeout:.0f}s:\n" + "\n".join(tail(log, 1000) for log in logs))


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def worker_pool(python: Path, work: Path, env: dict | None = None, timeout: float = 60):
    """Beam's Python SDK worker pool (EXTERNAL environment) from ``python``'s venv.

    The pool starts each SDK worker with the first ``python`` on PATH, so
    ``env`` must put that venv's bin first. Runs in ``work`` (outside any
    checkout), so only the installed newsbeam can be imported."""
    port = free_port()
    log = work / "worker_pool.out"
    cmd = [python, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"]
    with process_group(cmd, log, env=env, cwd=work) as proc:
        wait_until(lambda: listening(port), "Beam worker pool", [proc], [log], timeout)
        yield {"address": f"localhost:{port}", "pid": proc.pid, "log": log}


@contextmanager
def python_job_service(python: Path, work: Path, env: dict | None = None, timeout: float = 60):
    """Beam's Python job service: the portable API in front of the FnApiRunner."""
    port = free_port()
    log = work / "job_service.out"
    cmd = [python, "-m", "apache_beam.runners.portability.local_job_service_main", "--port", port]
    with process_group(cmd, log, env=env, cwd=work) as proc:
        wait_until(lambda: listening(port), "Beam Python job service", [proc], [log], timeout)
        yield {"endpoint": f"localhost:{port}", "pid": proc.pid, "log": log}


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants, in MB."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 1e6
