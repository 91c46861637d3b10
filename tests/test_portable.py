"""Portability: the seed through PortableRunner (local job service + EXTERNAL
worker pool, as on Flink/Spark clusters) gives the same records as the default
local runner."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SEEDS
from helpers import read_output

from pipelines.cli import main

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listening on port {port}")


@pytest.fixture
def portable_services(tmp_path):
    env = dict(os.environ)
    # The pool starts workers with the first python on PATH: it must be ours.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    job_port, pool_port = _free_port(), _free_port()
    logs = open(tmp_path / "services.log", "w")
    procs = [
        subprocess.Popen([sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
                          "--port", str(job_port)], env=env, stdout=logs, stderr=subprocess.STDOUT),
        subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                          "--service_port", str(pool_port)], env=env, stdout=logs, stderr=subprocess.STDOUT),
    ]
    try:
        _wait_listening(job_port, procs[0])
        _wait_listening(pool_port, procs[1])
        yield job_port, pool_port
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        logs.close()


def _comparable(result):
    articles = sorted(result["articles"], key=lambda a: a["id"])
    counts = sorted(result["entity_counts"], key=lambda c: (c["entity"], c["label"], c["language"], c["period"]))
    return articles, counts, result["summary"]["inputs"]


def test_portable_runner_matches_direct(tmp_path, portable_services):
    job_port, pool_port = portable_services
    direct_out, portable_out = tmp_path / "direct", tmp_path / "portable"
    assert main(["run", str(SEEDS), "--output", str(direct_out)]) == 0
    assert main(["run", str(SEEDS), "--output", str(portable_out),
                 "--runner=PortableRunner", f"--job_endpoint=localhost:{job_port}",
                 "--environment_type=EXTERNAL", f"--environment_config=localhost:{pool_port}"]) == 0
    assert _comparable(read_output(portable_out)) == _comparable(read_output(direct_out))
