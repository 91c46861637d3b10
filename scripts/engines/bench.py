#!/usr/bin/env python
"""Wall time and memory of one newsbeam run on the local runner and through the
portable API, for comparing engines.

    .venv/bin/python scripts/engines/bench.py INPUT... [--engine local python flink] [--worker-python PY]

Engines:

* ``local``: ``--runner=FnApiRunner`` with newsbeam's defaults (runs in parts,
  two worker processes above 512 KB of input).
* ``python``: ``--runner=PortableRunner`` to Beam's Python job service
  (FnApiRunner behind the portable API) with an EXTERNAL worker pool.
* ``flink``: ``--runner=PortableRunner --parallelism=2`` to Beam's Flink job
  server in front of a Flink 2.2.1 session cluster on loopback
  (scripts/engines/flink.py); needs the job server jar.

For each engine it prints the time to start its services, the run's wall time
(the launcher's whole life, submission included), and the peak resident memory,
sampled every 0.5 s, of each service process (JobManager, TaskManager, job
server, worker pool with its SDK workers) and of the launcher with its children.
``--worker-python`` is the interpreter of the worker pool (default: this one), e.g.
a venv with only the wheel and the lock.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import flink  # noqa: E402
import portable  # noqa: E402


class PeakRss:
    """Peak RSS (MB) of each named process tree, sampled in a thread."""

    def __init__(self, pids: dict[str, int], every: float = 0.5):
        self.pids = dict(pids)
        self.peak = dict.fromkeys(pids, 0.0)
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def add(self, name: str, pid: int) -> None:
        self.pids[name] = pid
        self.peak.setdefault(name, 0.0)

    def _sample(self) -> None:
        while not self._stop.is_set():
            for name, pid in list(self.pids.items()):
                self.peak[name] = max(self.peak[name], portable.rss_mb(pid))
            self._stop.wait(self._every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _newsbeam(inputs: list[str], out: Path, extra: list[str], rss: PeakRss) -> float:
    cmd = [sys.executable, "-m", "pipelines", "run", *inputs, "--output", str(out), "--quiet", *extra]
    log = out.parent / f"{out.name}.log"
    start = time.monotonic()
    with portable.process_group(cmd, log) as proc:
        rss.add("launcher (+children)", proc.pid)
        status = proc.wait(timeout=3600)
    wall = time.monotonic() - start
    if status != 0:
        raise SystemExit(f"newsbeam run failed ({status}):\n{portable.tail(log, 4000)}")
    return wall


def run_engine(engine: str, inputs: list[str], worker_python: Path, work: Path) -> dict:
    work.mkdir(parents=True)
    with ExitStack() as stack:
        started = time.monotonic()
        pids: dict[str, int] = {}
        if engine == "local":
            extra = ["--runner=FnApiRunner"]
        else:
            # The pool starts SDK workers with the first python on PATH: the worker venv's.
            env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
            env["PATH"] = f"{worker_python.parent}{os.pathsep}{env.get('PATH', '')}"
            if engine == "python":
                server = stack.enter_context(portable.python_job_service(Path(sys.executable), work))
                pids["job service"] = server["pid"]
                extra = []
            else:
                jar = flink.fetch_job_server()
                cluster = stack.enter_context(flink.flink_cluster(work))
                pids["JobManager"], pids["TaskManager"] = cluster["pids"]
                server = stack.enter_context(flink.job_server(jar, cluster["master"], work))
                pids["job server"] = server["pid"]
                extra = ["--parallelism=2"]
            pool = stack.enter_context(portable.worker_pool(worker_python, work, env=env))
            pids["worker pool (+SDK workers)"] = pool["pid"]
            extra = ["--runner=PortableRunner", f"--job_endpoint={server['endpoint']}", *extra,
                     "--environment_type=EXTERNAL", f"--environment_config={pool['address']}"]
        startup = time.monotonic() - started
        idle = {name: portable.rss_mb(pid) for name, pid in pids.items()}
        with PeakRss(pids) as rss:
            wall = _newsbeam(inputs, work / "out", extra, rss)
    return {"engine": engine, "startup_s": startup, "wall_s": wall, "idle_mb": idle, "peak_mb": rss.peak}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--engine", nargs="+", choices=["local", "python", "flink"], default=["local", "python"])
    ap.add_argument("--worker-python", type=Path, default=Path(sys.executable))
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="newsbeam-engines-bench-"))
    try:
        for engine in args.engine:
            try:
                r = run_engine(engine, args.inputs, args.worker_python, root / engine)
            except portable.Unavailable as e:
                print(f"{engine}: unavailable: {e}")
                continue
            print(f"{engine}: services up in {r['startup_s']:.1f} s, newsbeam run {r['wall_s']:.1f} s wall")
            for name, peak in r["peak_mb"].items():
                idle = r["idle_mb"].get(name)
                print(f"  {name}: peak {peak:.0f} MB RSS" + (f" (idle {idle:.0f} MB)" if idle is not None else ""))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
