#!/usr/bin/env python
"""A real Flink session cluster on loopback for newsbeam, from cached downloads.

    scripts/engines/flink.py fetch        # download (once) and report what could be had
    scripts/engines/flink.py up           # start JobManager + TaskManager [+ job server]; Ctrl-C stops all

Pieces, each cached under ``$NEWSBEAM_ENGINES_CACHE`` (default
``~/.cache/newsbeam-engines``) so a second run fetches nothing:

* Flink 2.2.1 itself: PyPI's ``apache-flink`` (``pyflink/bin``, ``conf``) and
  ``apache-flink-libraries`` (``pyflink/lib/flink-dist-*.jar``, ``opt``,
  ``plugins``) wheels, pinned with hashes in ``requirements-engines.lock``,
  downloaded with ``pip download --no-deps --require-hashes`` and *unpacked*
  as a distribution, never installed (apache-flink requires apache-beam<=2.61).
* Beam's Flink job server, ``org.apache.beam:beam-runners-flink-2.2-job-server``
  at the Beam version of the running SDK, fetched with ``mvn dependency:copy``,
  or a jar named by ``$NEWSBEAM_FLINK_JOB_SERVER_JAR``.

The JobManager and the TaskManager are separate JVMs started in the foreground
(``bin/jobmanager.sh start-foreground``, ``bin/taskmanager.sh start-foreground``),
each in its own process group so stopping kills the whole group. Every wait has
a deadline: a piece that cannot be had or does not come up raises
``Unavailable`` with the reason instead of hanging.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from portable import Unavailable, free_port, listening, process_group, rss_mb, wait_until, worker_pool  # noqa: E402

__all__ = ["FLINK_VERSION", "JOB_SERVER_ARTIFACT", "cache_dir", "fetch_flink", "fetch_job_server", "flink_cluster",
           "job_server"]

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements-engines.lock"
FLINK_VERSION = "2.2.1"
FLINK_MINOR = "2.2"
JOB_SERVER_ARTIFACT = f"beam-runners-flink-{FLINK_MINOR}-job-server"


def cache_dir() -> Path:
    d = Path(os.environ.get("NEWSBEAM_ENGINES_CACHE", Path.home() / ".cache" / "newsbeam-engines"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _locked_hashes() -> dict[str, str]:
    """name -> sha256 from requirements-engines.lock."""
    text = LOCK.read_text(encoding="utf-8")
    return {m.group(1).lower(): m.group(2)
            for m in re.finditer(r"^([A-Za-z0-9_.-]+)==\S+\s*\\\s*--hash=sha256:([0-9a-f]{64})", text, re.M)}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_flink(timeout: float = 900) -> Path:
    """FLINK_HOME of an unpacked Flink distribution, downloading the wheels once."""
    home = cache_dir() / f"flink-{FLINK_VERSION}"
    if (home / ".complete").is_file():
        return home
    wheels = cache_dir() / "wheels"
    wheels.mkdir(exist_ok=True)
    hashes = _locked_hashes()

    def cached() -> list[Path]:
        found = []
        for name, digest in hashes.items():
            stem = name.replace("-", "_")
            hits = [w for w in wheels.glob(f"{stem}-{FLINK_VERSION}-*.whl") if _sha256(w) == digest]
            found += hits[:1]
        return found

    if len(cached()) < len(hashes):
        # --platform/--python-version: only the files are used, so the cp311
        # wheel serves any interpreter.
        cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input", "--no-deps",
               "--require-hashes", "--only-binary=:all:", "--platform", "manylinux2014_x86_64",
               "--python-version", "3.11", "-d", str(wheels), "-r", str(LOCK)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise Unavailable(f"downloading Flink {FLINK_VERSION} from PyPI took over {timeout:.0f}s") from e
        if proc.returncode != 0:
            raise Unavailable(f"cannot download Flink {FLINK_VERSION} wheels: {proc.stderr.strip()[-600:]}")
    have = cached()
    if len(have) < len(hashes):
        raise Unavailable(f"Flink wheels in {wheels} do not match requirements-engines.lock")
    staging = Path(tempfile.mkdtemp(prefix="flink-", dir=cache_dir()))
    try:
        for wheel in have:
            with zipfile.ZipFile(wheel) as z:
                for info in z.infolist():
                    if info.filename.startswith("pyflink/"):
                        z.extract(info, staging)
        root = staging / "pyflink"
        for script in (root / "bin").glob("*.sh"):
            script.chmod(0o755)
        if not list((root / "lib").glob("flink-dist-*.jar")) or not (root / "bin" / "jobmanager.sh").is_file():
            raise Unavailable("the Flink wheels did not hold lib/flink-dist-*.jar and bin/jobmanager.sh")
        (root / ".complete").write_text(FLINK_VERSION + "\n", encoding="utf-8")
        shutil.rmtree(home, ignore_errors=True)
        root.rename(home)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return home


def _beam_version() -> str:
    import apache_beam

    return apache_beam.__version__


def fetch_job_server(timeout: float = 600) -> Path:
    """Beam's Flink job server jar for this SDK's version: ``$NEWSBEAM_FLINK_JOB_SERVER_JAR``,
    else the cache, else ``mvn dependency:copy`` from Maven Central into the cache."""
    env = os.environ.get("NEWSBEAM_FLINK_JOB_SERVER_JAR")
    if env:
        if not Path(env).is_file():
            raise Unavailable(f"NEWSBEAM_FLINK_JOB_SERVER_JAR={env} is not a file")
        return Path(env)
    version = _beam_version()
    jars = cache_dir() / "jars"
    jar = jars / f"{JOB_SERVER_ARTIFACT}-{version}.jar"
    if jar.is_file():
        return jar
    mvn = shutil.which("mvn")
    if not mvn:
        raise Unavailable(f"mvn is not on PATH: cannot fetch Beam's Flink job server; put it at {jar} "
                          "or set NEWSBEAM_FLINK_JOB_SERVER_JAR")
    coord = f"org.apache.beam:{JOB_SERVER_ARTIFACT}:{version}"
    try:
        # -U: Maven caches a "not found" in ~/.m2; ask again each time (a refusal answers in seconds).
        proc = subprocess.run([mvn, "-q", "-B", "-U", "dependency:copy", "-Dtransitive=false", f"-Dartifact={coord}",
                               f"-DoutputDirectory={jars}"], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise Unavailable(f"mvn dependency:copy {coord} took over {timeout:.0f}s") from e
    if proc.returncode != 0 or not jar.is_file():
        why = re.search(r"\[ERROR\] Failed to execute goal .*?: (.*)", proc.stdout + proc.stderr)
        raise Unavailable(f"cannot fetch {coord} with mvn ({why.group(1)[:300] if why else proc.stdout[-400:]}); "
                          f"put the jar at {jar} or set NEWSBEAM_FLINK_JOB_SERVER_JAR")
    return jar


def _rest(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
        return json.loads(r.read())


# Small enough for a 2-core, shared machine; large enough for Beam's operators.
_CONF = """\
jobmanager:
  bind-host: 127.0.0.1
  rpc: {{address: 127.0.0.1, port: {rpc}}}
  memory: {{process: {{size: 1024m}}}}
taskmanager:
  bind-host: 127.0.0.1
  host: 127.0.0.1
  numberOfTaskSlots: {slots}
  rpc: {{port: {tm_rpc}}}
  data: {{port: {tm_data}}}
  memory: {{process: {{size: {tm_memory}}}}}
rest:
  address: 127.0.0.1
  bind-address: 127.0.0.1
  port: {rest}
blob: {{server: {{port: {blob}}}}}
parallelism: {{default: {slots}}}
io: {{tmp: {{dirs: {tmp}}}}}
env: {{log: {{dir: {logs}}}}}
"""


@contextmanager
def flink_cluster(work: Path, slots: int = 2, tm_memory: str = "2048m", timeout: float = 120):
    """A standalone session cluster on loopback: yields {'rest_port', 'master', 'pids', 'logs'}."""
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        raise Unavailable("no java on PATH (Flink needs Java 11 or 17)")
    home = fetch_flink()
    conf = work / "conf"
    logs = work / "log"
    tmp = work / "tmp"
    for d in (conf, logs, tmp):
        d.mkdir(parents=True, exist_ok=True)
    shutil.copy(home / "conf" / "log4j.properties", conf / "log4j-console.properties")
    ports = {name: free_port() for name in ("rest", "rpc", "tm_rpc", "tm_data", "blob")}
    (conf / "config.yaml").write_text(_CONF.format(slots=slots, tm_memory=tm_memory, tmp=tmp, logs=logs, **ports),
                                      encoding="utf-8")
    env = {**os.environ, "FLINK_HOME": str(home), "FLINK_CONF_DIR": str(conf), "FLINK_LOG_DIR": str(logs)}
    jm_log, tm_log = work / "jobmanager.out", work / "taskmanager.out"
    with ExitStack() as stack:
        jm = stack.enter_context(process_group([home / "bin" / "jobmanager.sh", "start-foreground"], jm_log, env))
        wait_until(lambda: listening(ports["rest"]), "Flink JobManager", [jm], [jm_log], timeout)
        tm = stack.enter_context(process_group([home / "bin" / "taskmanager.sh", "start-foreground"], tm_log, env))

        def registered() -> bool:
            return sum(t.get("slotsNumber", 0) for t in _rest(ports["rest"], "/taskmanagers")["taskmanagers"]) >= slots

        wait_until(registered, "Flink TaskManager registration", [jm, tm], [jm_log, tm_log], timeout)
        yield {"rest_port": ports["rest"], "master": f"127.0.0.1:{ports['rest']}", "pids": [jm.pid, tm.pid],
               "logs": [jm_log, tm_log], "home": home}


@contextmanager
def job_server(jar: Path, flink_master: str, work: Path, timeout: float = 120):
    """Beam's Flink job server (its own JVM) pointed at the cluster: yields its job endpoint."""
    ports = {name: free_port() for name in ("job", "artifact", "expansion")}
    log = work / "jobserver.out"
    cmd = ["java", "-jar", jar, "--flink-master", flink_master, "--job-host", "127.0.0.1",
           "--job-port", ports["job"], "--artifact-port", ports["artifact"],
           "--expansion-port", ports["expansion"], "--artifacts-dir", work / "artifacts"]
    with process_group(cmd, log) as proc:
        wait_until(lambda: listening(ports["job"]), "Beam Flink job server", [proc], [log], timeout)
        yield {"endpoint": f"127.0.0.1:{ports['job']}", "pid": proc.pid, "log": log}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["fetch", "up"])
    ap.add_argument("--work", type=Path, help="folder for conf, logs, tmp (default: a new temp folder)")
    args = ap.parse_args(argv)
    # Stop everything on SIGTERM as on Ctrl-C, and on SIGINT even when started in
    # the background (a non-interactive shell starts background jobs with SIGINT
    # ignored): the JVMs run in their own sessions and would outlive this process.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.stdout.reconfigure(line_buffering=True)  # the ports are read while it runs
    try:
        home = fetch_flink()
        print(f"Flink {FLINK_VERSION}: {home}")
        try:
            jar = fetch_job_server()
            print(f"Beam Flink job server: {jar}")
        except Unavailable as e:
            jar = None
            print(f"Beam Flink job server: unavailable: {e}")
        if args.command == "fetch":
            return 0 if jar else 1
        work = args.work or Path(tempfile.mkdtemp(prefix="newsbeam-flink-"))
        with ExitStack() as stack:
            cluster = stack.enter_context(flink_cluster(work))
            jm, tm = cluster["pids"]
            print(f"Flink cluster: REST/UI http://{cluster['master']}  (JobManager pid {jm}, {rss_mb(jm):.0f} MB RSS; "
                  f"TaskManager pid {tm}, {rss_mb(tm):.0f} MB RSS); logs in {work}")
            if jar:
                js = stack.enter_context(job_server(jar, cluster["master"], work))
                print(f"job endpoint: {js['endpoint']}  (--runner=PortableRunner --job_endpoint={js['endpoint']})")
            pool = stack.enter_context(worker_pool(Path(sys.executable), work))
            print(f"worker pool: --environment_type=EXTERNAL --environment_config={pool['address']}")
            print("Ctrl-C (or SIGTERM) stops everything.")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        return 0
    except Unavailable as e:
        print(f"flink: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
