"""newsbeam submitted the way a cluster runs it: the launcher (this checkout's
venv) submits with ``--runner=PortableRunner`` to a job server, and an EXTERNAL
worker pool started from a venv that has only the wheel and the lock
(tests/wheelenv.py) runs every DoFn, from a folder outside the checkout. The
article, duplicate, rejected and entity-count records must equal the local
runner's on the same folder.

Job servers:

* Beam's Python job service: the portable API with the FnApiRunner behind it.
  No engine, but the same submission, pipeline translation, artifact staging
  and wheel-only workers as on a cluster. Always runs here.
* Flink 2.2.1: a standalone session cluster (JobManager and TaskManager, two
  JVMs, from PyPI's apache-flink wheels, scripts/engines/flink.py) with Beam's
  Flink job server in front, at parallelism 2. The job server jar comes from
  Maven Central or ``$NEWSBEAM_FLINK_JOB_SERVER_JAR``; where neither has it the
  test skips with the reason, and fails instead when
  ``NEWSBEAM_REQUIRE_ENGINES=1``. The cluster itself is always started.

Every process is started in its own process group and stopped with it, also
on failure; every wait and every run has a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import psutil
import pytest
from conftest import REPO, SEED
from helpers import read_output
from wheelenv import clean_env

sys.path.insert(0, str(REPO / "scripts" / "engines"))
import flink  # noqa: E402
import portable  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.engine]

RUN_TIMEOUT = 900  # s, for one newsbeam run on a few articles; a hang becomes a failure


def _unavailable(error: Exception) -> None:
    if os.environ.get("NEWSBEAM_REQUIRE_ENGINES") == "1":
        pytest.fail(str(error))
    pytest.skip(str(error))


@pytest.fixture(scope="module")
def articles(tmp_path_factory) -> Path:
    """A small folder with something for every output: the seed, a byte-identical
    copy of it (a duplicate), an empty file (rejected), and a few BBC articles
    when the shared data is there."""
    folder = tmp_path_factory.mktemp("engine-input")
    shutil.copy(SEED, folder / SEED.name)
    shutil.copy(SEED, folder / "copy_of_the_seed.txt")
    (folder / "empty.txt").write_bytes(b"")
    # Dated articles on three days (one with an offset): the aggregation's event-time windows get several periods.
    dated = [
        ("Merkel in Berlin", "2024-08-16T23:30:00+02:00",
         "Angela Merkel met officials of the European Commission in Berlin on Friday to discuss the budget of the "
         "European Union. She told reporters that the talks had gone well and that Germany would present its own "
         "proposal to the other member states before the summit in October."),
        ("Macron visits Toronto", "2024-08-17T08:00:00Z",
         "Emmanuel Macron arrived in Toronto on Saturday for a two-day visit, his first to Canada since 2018. The "
         "French president is expected to sign an agreement on nuclear energy with Justin Trudeau and to visit a "
         "car factory owned by Renault outside the city."),
        ("Strike at Heathrow", "2024-09-02",
         "Hundreds of flights were cancelled at Heathrow Airport in London after baggage handlers employed by "
         "British Airways began a strike over pay. The union Unite said the walkout would last until Thursday "
         "unless the airline improved its offer, and the Department for Transport urged both sides to talk."),
    ]
    (folder / "dated.jsonl").write_text("".join(json.dumps({"title": t, "published": when, "text": text}) + "\n"
                                                for t, when, text in dated), encoding="utf-8")
    # An undated article of its own (the BBC ones below are only there when ../shared is): the 'unknown' period.
    (folder / "undated.txt").write_text(
        "Flood warnings in York\n\nThe Environment Agency issued flood warnings for York and Leeds on Monday "
        "after two days of heavy rain across Yorkshire. The River Ouse was expected to peak overnight, and the "
        "city council opened a rest centre for residents who had to leave their homes near the river.\n",
        encoding="utf-8")
    bbc = Path(os.environ.get("NEWSBEAM_SHARED_DATA", REPO.parent / "shared" / "data")) / "bbc-news" / "articles"
    for topic in ("business", "politics", "tech"):
        for path in sorted((bbc / topic).glob("*.txt"))[:2]:
            shutil.copy(path, folder / f"bbc_{topic}_{path.name}")
    return folder


def _run(args: list, out: Path, cwd: Path) -> None:
    """newsbeam run in its own process group: on a timeout the whole group is stopped, not just the launcher."""
    cmd = [sys.executable, "-m", "pipelines", "run", *map(str, args), "--output", str(out), "--quiet"]
    log = out.parent / f"{out.name}.log"
    with portable.process_group(cmd, log, cwd=cwd) as proc:
        try:
            status = proc.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"newsbeam run did not finish within {RUN_TIMEOUT}s: {' '.join(cmd)}\n{portable.tail(log)}")
    assert status == 0, f"newsbeam run failed ({status}): {' '.join(cmd)}\n{portable.tail(log, 6000)}"


def _comparable(out: Path) -> dict:
    result = read_output(out)
    return {
        "articles": sorted(result["articles"], key=lambda a: a["id"]),
        "duplicates": sorted(result["duplicates"], key=lambda d: (d["id"], d["source"])),
        "rejected": sorted(result["rejected"], key=lambda r: (r["source"], r["stage"], r["reason"])),
        "entity_counts": sorted(result["entity_counts"],
                                key=lambda c: (c["entity"], c["label"], c["language"], c["period"])),
        "inputs": result["summary"]["inputs"],
    }


@pytest.fixture(scope="module")
def local_records(articles, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("engine-local") / "out"
    _run([articles, "--runner=FnApiRunner"], out, cwd=out.parent)
    records = _comparable(out)
    # The folder really exercises every output, or the comparisons prove less than they say.
    assert records["articles"] and records["duplicates"] and records["rejected"] and records["entity_counts"]
    periods = {c["period"] for c in records["entity_counts"]}
    assert {"2024-08-16", "2024-08-17", "2024-09-02", "all", "unknown"} <= periods, periods
    return records


def _still_running(pids: list[int]) -> list[int]:
    """The pids that are still running (not gone, not zombies)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_wheel_only_worker_pool_behind_beams_python_job_service(articles, local_records, wheel_venv, tmp_path):
    work = tmp_path / "services"
    work.mkdir()
    started = []
    with ExitStack() as stack:
        try:
            service = stack.enter_context(portable.python_job_service(Path(sys.executable), work))
            pool = stack.enter_context(portable.worker_pool(wheel_venv / "bin" / "python", work,
                                                            env=clean_env(wheel_venv)))
        except portable.Unavailable as e:
            pytest.fail(str(e))
        started = [service["pid"], pool["pid"]]
        _run([articles, "--runner=PortableRunner", f"--job_endpoint={service['endpoint']}",
              "--environment_type=EXTERNAL", f"--environment_config={pool['address']}"], tmp_path / "out", tmp_path)
    # The DoFns ran in SDK workers that the wheel venv's pool started, with the
    # first python on the pool's PATH: the wheel venv's.
    assert "Starting worker with command ['python'" in portable.tail(pool["log"], 100_000), portable.tail(pool["log"])
    assert shutil.which("python", path=clean_env(wheel_venv)["PATH"]) == str(wheel_venv / "bin" / "python")
    assert not _still_running(started)
    assert _comparable(tmp_path / "out") == local_records


def test_flink_session_cluster_from_pypi_comes_up_and_stops(tmp_path):
    try:
        cluster_cm = flink.flink_cluster(tmp_path)
        with cluster_cm as cluster:
            overview = flink._rest(cluster["rest_port"], "/overview")
            jvms = [psutil.Process(pid) for pid in cluster["pids"]]
            assert overview["flink-version"] == flink.FLINK_VERSION
            assert (overview["taskmanagers"], overview["slots-total"]) == (1, 2)
            # Two separate JVMs: the JobManager and the TaskManager.
            assert [p.name() for p in jvms] == ["java", "java"] and jvms[0].pid != jvms[1].pid
    except portable.Unavailable as e:
        pytest.fail(str(e))
    assert not _still_running(cluster["pids"])


def test_newsbeam_on_flink_matches_the_local_runner(articles, local_records, wheel_venv, tmp_path):
    try:
        jar = flink.fetch_job_server()
    except portable.Unavailable as e:
        _unavailable(e)
    work = tmp_path / "flink"
    work.mkdir()
    with ExitStack() as stack:
        try:
            cluster = stack.enter_context(flink.flink_cluster(work))
            server = stack.enter_context(flink.job_server(jar, cluster["master"], work))
            pool = stack.enter_context(portable.worker_pool(wheel_venv / "bin" / "python", work,
                                                            env=clean_env(wheel_venv)))
        except portable.Unavailable as e:
            pytest.fail(str(e))
        started = [*cluster["pids"], server["pid"], pool["pid"]]
        _run([articles, "--runner=PortableRunner", f"--job_endpoint={server['endpoint']}", "--parallelism=2",
              "--environment_type=EXTERNAL", f"--environment_config={pool['address']}"], tmp_path / "out", tmp_path)
        jobs = flink._rest(cluster["rest_port"], "/jobs/overview")["jobs"]
        assert [j["state"] for j in jobs] == ["FINISHED"], jobs
    assert not _still_running(started)
    assert _comparable(tmp_path / "out") == local_records


def test_streaming_counts_equal_the_batch_counts(articles, local_records, tmp_path):
    """The aggregation's event-time windows in streaming mode: the local run's
    articles as an unbounded TestStream on the BundleBasedDirectRunner (the one
    local runner that streams) give the batch run's entity counts. Flink would
    run the same windows; that needs the job server (above)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.testing.test_stream import TestStream as EventStream
    from apache_beam.testing.util import assert_that

    from pipelines.aggregate import BEYOND_LATENESS, COUNTS, AggregateEntities

    kept = local_records["articles"]
    stream = EventStream().add_elements(kept[: len(kept) // 2]).add_elements(kept[len(kept) // 2:])
    stream = stream.advance_watermark_to_infinity()
    options = PipelineOptions(runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = True
    key = ("entity", "label", "language", "period")

    def final_panes(records):
        # Accumulating panes: a key's last (largest) pane holds its totals; the running
        # totals of 'all' and 'unknown' may fire early, the dated windows once.
        last = {}
        for r in records:
            k = tuple(r[f] for f in key)
            if k not in last or (r["mentions"], r["documents"]) > (last[k]["mentions"], last[k]["documents"]):
                last[k] = r
        got = sorted(last.values(), key=lambda r: tuple(r[f] for f in key))
        assert got == local_records["entity_counts"]

    with beam.Pipeline(options=options) as p:
        result = p | stream | AggregateEntities("day")
        assert_that(result[COUNTS], final_panes, label="Counts")
        assert_that(result[BEYOND_LATENESS], lambda late: late == [] or pytest.fail(f"late: {late}"), label="Late")
