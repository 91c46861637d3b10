"""Cross-run state and atomic publication for recurring runs (``--state-dir``).

Layout (every path goes through Beam's ``FileSystems``, so ``STATE`` and
``OUT`` may be local or ``gs://``/``s3://``/``hdfs://``)::

    STATE/LOCK                      who is running now (host, pid, run id, heartbeat)
    STATE/HEAD                      {"run_id", "output", "committed_at"} of the last committed run
    STATE/committed/                what every run reads (``state_in`` of build_pipeline)
        manifest.jsonl              one line per processed input: path, size, mtime, sha256, run
        entity_counts_total.avro    cumulative entity counts (entity_count schema, ``period`` kept)
        dedupe/part-...-<run>.avro  dedupe history: every committed run's files, run id in the name
    STATE/pending/<run>/            a run in progress (``state_out``); run.json written first

    OUT/runs/<run>/                 one run's output contract (articles/, duplicates/, ..., summary.json)
    OUT/latest                      the id of the newest committed run, one line
    OUT/current -> runs/<run>       local filesystems only: a symlink, for people
    OUT/entity_counts_total/entity_counts_total.avro   copy of the cumulative counts
    OUT/.staging/<run>/             a run being written; never read

Commit protocol. A run (holding the lock) 1. rolls forward the run named by
HEAD if its pending folder still exists and deletes every other pending folder
and its staging folder (runs that died before committing); 2. writes
``pending/<run>/run.json``; 3. runs the pipeline into ``OUT/.staging/<run>/``
and ``pending/<run>/``; 4. writes the new manifest into ``pending/<run>/``;
5. replaces ``HEAD`` — the single atomic write that is the commit point;
6. rolls forward: moves the staging folder to ``OUT/runs/<run>/``, copies the
totals to ``OUT/entity_counts_total/``, replaces ``OUT/latest``, moves the
pending state files into ``committed/`` and deletes ``pending/<run>/``. Every
roll-forward step tolerates having been done already, so a run killed at any
moment leaves either the old state (before 5) or a commit the next run
finishes (after 5); readers that go through ``OUT/latest`` never see a partial
run. Small files are replaced atomically: on local disks by writing a
temporary file, fsync and rename; on object stores an object becomes visible
only when its upload completes.

Locking. On local (and NFS) paths the lock is an ``flock`` on ``STATE/LOCK``:
the kernel releases it when the holder dies, however it dies, so a lock left
by a dead process is taken over without any guessing. Beam's ``FileSystems``
has no exclusive create for object stores, so there the lock is a file with a
heartbeat the holder refreshes: a lock whose heartbeat is older than
``stale_after`` seconds is taken over, and a writer re-reads the lock after
writing it to catch a simultaneous start. Two runs starting within the same
second on an object-store state dir can still both proceed; schedule them so
they do not overlap (cron with ``flock``, a systemd timer) or keep the state on
a local or NFS path.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms import window

from pipelines.aggregate import sum_pairs as _sum_pairs
from pipelines.read import InputFile

__all__ = [
    "CumulativeCounts",
    "LockHeld",
    "RecordInputs",
    "Selection",
    "StateLock",
    "StateStore",
    "discard_staging",
    "file_sha256",
    "merge_counts",
    "move_tree",
    "new_run_id",
    "publish_flat",
    "prune_runs",
    "read_text",
    "select_inputs",
    "write_atomic",
]

STAGE = "state"
LOCK_NAME = "LOCK"
HEAD_NAME = "HEAD"
COMMITTED = "committed"
PENDING = "pending"
RUN_JSON = "run.json"
MANIFEST = "manifest.jsonl"
MANIFEST_PARTS = "manifest_parts"
TOTALS = "entity_counts_total"
TOTALS_FILE = TOTALS + ".avro"
STAGING = ".staging"
RUNS = "runs"
LATEST = "latest"
CURRENT = "current"
# Pending files that replace their committed version; every other pending file
# accumulates (history such as dedupe fingerprints), renamed with the run id.
REPLACED = (MANIFEST, TOTALS_FILE)
NOT_COMMITTED = (RUN_JSON, MANIFEST_PARTS)
DEFAULT_STALE_AFTER = 15 * 60
HASH_CHUNK = 1 << 20

_LOG = logging.getLogger("newsbeam")
_UNCOMPRESSED = CompressionTypes.UNCOMPRESSED


# ---------------------------------------------------------------- file helpers

def _is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) in (None, "file")


def _parent(path: str) -> str:
    if _is_local(path):
        return os.path.dirname(path.rstrip("/")) or "."
    return path.rstrip("/").rsplit("/", 1)[0]


def _base(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _files_under(folder: str) -> list[str]:
    """Every file below ``folder`` (recursively); empty when it does not exist."""
    prefix = folder.rstrip("/") + "/"
    if _is_local(folder):
        return sorted(os.path.join(d, name) for d, _, names in os.walk(folder) for name in names)
    try:
        found = FileSystems.match([prefix + "**"])[0].metadata_list
    except Exception:  # BeamIOError: nothing there
        return []
    return sorted(m.path for m in found if m.path.startswith(prefix) and not m.path.endswith("/"))


def _relative(path: str, folder: str) -> str:
    return path[len(folder.rstrip("/")) + 1:]


def _exists(path: str) -> bool:
    try:
        return FileSystems.exists(path)
    except Exception:
        return False


def _delete(paths: Iterable[str]) -> None:
    """Delete files or folders; a path already gone is not an error."""
    for path in paths:
        if _is_local(path) and not os.path.lexists(path):
            continue
        try:
            FileSystems.delete([path])
        except Exception:
            # Object stores have no folders: delete what lies under the prefix.
            inside = _files_under(path)
            if inside:
                FileSystems.delete(inside)


def _make_parent(path: str) -> None:
    if _is_local(path):
        os.makedirs(_parent(path), exist_ok=True)


def read_text(path: str) -> str | None:
    """The contents of a small file, or None when it does not exist."""
    try:
        with FileSystems.open(path, compression_type=_UNCOMPRESSED) as f:
            return f.read().decode("utf-8")
    except Exception:
        if _exists(path):
            raise
        return None


def write_atomic(path: str, data: bytes) -> None:
    """Replace ``path`` so that a reader sees the old or the new contents, never a mix."""
    if not _is_local(path):
        # An object becomes visible only when its upload completes.
        with FileSystems.create(path, compression_type=_UNCOMPRESSED) as f:
            f.write(data)
        return
    _make_parent(path)
    tmp = FileSystems.join(_parent(path), f".{_base(path)}.{secrets.token_hex(4)}.tmp")
    with FileSystems.create(tmp, compression_type=_UNCOMPRESSED) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())  # the rename must not become durable before the data
    FileSystems.rename([tmp], [path])


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with FileSystems.open(path, compression_type=_UNCOMPRESSED) as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def move_tree(src: str, dst: str) -> None:
    """Move every file under ``src`` to the same place under ``dst``.

    A local folder is renamed whole (one atomic step). Elsewhere files move one
    by one; a file already moved is skipped, so a move cut short can be redone.
    """
    if _is_local(src) and _is_local(dst):
        if not os.path.isdir(src):
            return
        if not os.path.lexists(dst):
            os.makedirs(_parent(dst), exist_ok=True)
            FileSystems.rename([src], [dst])
            return
    for path in _files_under(src):
        target = FileSystems.join(dst, _relative(path, src))
        _make_parent(target)
        FileSystems.rename([path], [target])
    _delete([src])


def _copy_atomic(src: str, dst: str) -> None:
    if _is_local(dst):
        _make_parent(dst)
        tmp = FileSystems.join(_parent(dst), f".{_base(dst)}.{secrets.token_hex(4)}.tmp")
        FileSystems.copy([src], [tmp])
        FileSystems.rename([tmp], [dst])
    else:
        FileSystems.copy([src], [dst])  # an object copy is atomic


def publish_flat(staging: str, output: str, always_replace: Iterable[str] = ()) -> None:
    """Stand-alone runs: swap what ``staging`` holds into ``output``.

    Each top-level entry of ``output`` that the new run writes (and each name in
    ``always_replace``) is deleted, then the new one is moved in: the previous
    output stays whole until the run has succeeded.
    """
    names = sorted({_relative(p, staging).split("/", 1)[0] for p in _files_under(staging)})
    _delete(FileSystems.join(output, name) for name in sorted(set(names) | set(always_replace)))
    for name in names:
        src, dst = FileSystems.join(staging, name), FileSystems.join(output, name)
        if _is_local(src) and os.path.isfile(src):
            FileSystems.rename([src], [dst])
        else:
            move_tree(src, dst)
    _delete([staging])
    _remove_empty_local_dir(_parent(staging))


def _remove_empty_local_dir(path: str) -> None:
    if _is_local(path):
        try:
            os.rmdir(path)
        except OSError:
            pass


def discard_staging(output: str, run_id: str | None = None) -> None:
    """Delete one run's staging folder (all of them when ``run_id`` is None)."""
    staging = FileSystems.join(output, STAGING)
    _delete([FileSystems.join(staging, run_id) if run_id else staging])
    _remove_empty_local_dir(staging)


def _run_ids(output: str) -> list[str]:
    runs = FileSystems.join(output, RUNS)
    if _is_local(runs):
        return sorted(os.listdir(runs)) if os.path.isdir(runs) else []
    return sorted({_relative(p, runs).split("/", 1)[0] for p in _files_under(runs)})


def prune_runs(output: str, keep: int) -> list[str]:
    """Delete the oldest run folders so that ``keep`` remain (0: keep all); never the latest."""
    if keep <= 0:
        return []
    latest = (read_text(FileSystems.join(output, LATEST)) or "").strip()
    doomed = [r for r in _run_ids(output)[:-keep] if r != latest]
    _delete(FileSystems.join(output, RUNS, r) for r in doomed)
    return doomed


def new_run_id(now: _dt.datetime | None = None) -> str:
    """Sortable by start time, unique across hosts: 20240816T093000123Z-1a2b3c."""
    now = now or _dt.datetime.now(_dt.UTC)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


# ---------------------------------------------------------------- lock

class LockHeld(Exception):
    """Another live run holds the state lock."""

    def __init__(self, path: str, holder: dict | None):
        self.path = path
        self.holder = holder or {}
        who = ", ".join(f"{k} {self.holder[k]}" for k in ("run_id", "host", "pid", "started") if k in self.holder)
        super().__init__(f"another newsbeam run holds {path}" + (f" ({who})" if who else ""))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parse_lock(text: str | None) -> dict | None:
    if not text or not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        return {"unreadable": text[:200]}


def lock_is_stale(holder: dict | None, now: float, stale_after: float, host: str) -> bool:
    """Whether a heartbeat lock may be taken over: nobody, a dead local pid, or a silent holder."""
    if not holder:
        return True
    if holder.get("host") == host and isinstance(holder.get("pid"), int) and not _process_alive(holder["pid"]):
        return True
    return now - float(holder.get("heartbeat", 0)) > stale_after


@dataclass
class StateLock:
    """The lock of one state dir; use as a context manager or acquire()/release()."""

    state_dir: str
    run_id: str
    stale_after: float = DEFAULT_STALE_AFTER
    heartbeat: bool | None = None  # None: heartbeat lock on object stores, flock on local paths
    _fd: int | None = field(default=None, init=False, repr=False)
    _token: str = field(default_factory=lambda: secrets.token_hex(8), init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    @property
    def path(self) -> str:
        return FileSystems.join(self.state_dir, LOCK_NAME)

    def _info(self) -> dict:
        now = time.time()
        return {"run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(),
                "started": _dt.datetime.fromtimestamp(now, _dt.UTC).isoformat(timespec="seconds"),
                "heartbeat": now, "token": self._token}

    def acquire(self) -> StateLock:
        use_heartbeat = self.heartbeat if self.heartbeat is not None else not _is_local(self.state_dir)
        if use_heartbeat:
            self._acquire_heartbeat()
        else:
            self._acquire_flock()
        return self

    def _acquire_flock(self) -> None:
        import fcntl

        os.makedirs(self.state_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _parse_lock(os.pread(fd, 65536, 0).decode("utf-8", "replace"))
            os.close(fd)
            raise LockHeld(self.path, holder) from None
        previous = _parse_lock(os.pread(fd, 65536, 0).decode("utf-8", "replace"))
        if previous:
            _LOG.warning("newsbeam: taking over the lock left by a run that is gone (%s)", previous)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self._info()).encode("utf-8"), 0)
        self._fd = fd

    def _acquire_heartbeat(self) -> None:
        holder = _parse_lock(read_text(self.path))
        if not lock_is_stale(holder, time.time(), self.stale_after, socket.gethostname()):
            raise LockHeld(self.path, holder)
        if holder:
            _LOG.warning("newsbeam: taking over a stale lock (%s)", holder)
        write_atomic(self.path, json.dumps(self._info()).encode("utf-8"))
        # No compare-and-swap through FileSystems: read back to catch a run that
        # wrote its lock at the same moment (the later writer wins).
        time.sleep(min(1.0, self.stale_after / 10))
        now_held = _parse_lock(read_text(self.path))
        if not now_held or now_held.get("token") != self._token:
            raise LockHeld(self.path, now_held)
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="newsbeam-lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(max(self.stale_after / 4, 0.05)):
            held = _parse_lock(read_text(self.path))
            if not held or held.get("token") != self._token:
                _LOG.error("newsbeam: lost the state lock %s to %s", self.path, held)
                return
            write_atomic(self.path, json.dumps({**held, "heartbeat": time.time()}).encode("utf-8"))

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            # The file stays (deleting it would race with a run opening it);
            # empty means nobody holds it.
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            held = _parse_lock(read_text(self.path))
            if held and held.get("token") == self._token:
                _delete([self.path])

    def __enter__(self) -> StateLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ---------------------------------------------------------------- manifest

@dataclass
class Selection:
    """Which planned inputs a run reads, and why."""

    process: list[InputFile]
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    refreshed: dict[str, dict] = field(default_factory=dict)  # same content, new size/mtime: manifest updates

    def describe(self) -> dict:
        return {"files_seen": len(self.process) + self.unchanged, "files_new": self.new,
                "files_changed": self.changed, "files_unchanged": self.unchanged}


def select_inputs(files: Iterable[InputFile], manifest: dict[str, dict],
                  hasher: Callable[[str], str] = file_sha256) -> Selection:
    """New and changed inputs. Size and mtime decide when they match the
    manifest; otherwise the content hash does, so a file copied or touched
    without changing is not read again."""
    selection = Selection(process=[])
    for f in files:
        seen = manifest.get(f.path)
        if seen is None:
            selection.new += 1
            selection.process.append(f)
            continue
        if seen.get("size") == f.size and seen.get("mtime") == f.mtime:
            selection.unchanged += 1
            continue
        if seen.get("sha256") and hasher(f.path) == seen["sha256"]:
            selection.unchanged += 1
            selection.refreshed[f.path] = {**seen, "size": f.size, "mtime": f.mtime}
            continue
        selection.changed += 1
        selection.process.append(f)
    return selection


def updated_manifest(manifest: dict[str, dict], selection: Selection, hashes: dict[str, str | None],
                     run_id: str) -> dict[str, dict]:
    merged = {**manifest, **selection.refreshed}
    for f in selection.process:
        merged[f.path] = {"path": f.path, "size": f.size, "mtime": f.mtime, "sha256": hashes.get(f.path),
                          "run": run_id}
    return merged


def dump_manifest(manifest: dict[str, dict]) -> bytes:
    return "".join(json.dumps(manifest[p], sort_keys=True) + "\n" for p in sorted(manifest)).encode("utf-8")


def parse_manifest(text: str | None) -> dict[str, dict]:
    entries = (json.loads(line) for line in (text or "").splitlines() if line.strip())
    return {e["path"]: e for e in entries}


# ---------------------------------------------------------------- Beam branches

class HashFileFn(beam.DoFn):
    """Input file -> JSON line {path, sha256} for the manifest (sha256 null when unreadable)."""

    def __init__(self):
        self._hashed = Metrics.counter(STAGE, "files_hashed")
        self._unreadable = Metrics.counter(STAGE, "files_unhashable")

    def process(self, item: InputFile):
        # A later byte range of a split file emits nothing: the range at 0 hashes
        # the whole file once. (No early ``return <comment>`` here: Beam warns on
        # every worker about a process method that mixes return and yield.)
        if item.start == 0:
            try:
                digest = file_sha256(item.path)
                self._hashed.inc()
            except Exception:  # the read stage reports why; the manifest only notes it was seen
                digest = None
                self._unreadable.inc()
            yield json.dumps({"path": item.path, "sha256": digest})


class RecordInputs(beam.PTransform):
    """PBegin -> ``<state_out>/manifest_parts/<prefix>-*.jsonl`` (and the same JSON
    lines as a PCollection): the content hash of every input in the plan file
    ``plan``, computed on the workers (no serial pass over the input in the
    launcher)."""

    def __init__(self, plan: str, state_out: str, prefix: str = "part"):
        super().__init__()
        if not plan:
            raise ValueError("plan is required")
        if not state_out:
            raise ValueError("state_out is required")
        self._plan = plan
        self._prefix = FileSystems.join(state_out, MANIFEST_PARTS, prefix)

    def expand(self, pbegin):
        from pipelines.read import PlannedInputs

        lines = (
            pbegin
            | "Files" >> PlannedInputs(self._plan)
            | "Hash" >> beam.ParDo(HashFileFn())
        )
        lines | "WriteParts" >> beam.io.WriteToText(self._prefix, file_name_suffix=".jsonl")
        return lines


COUNT_KEY = ("entity", "label", "language", "period")


def _count_pair(record: dict):
    return tuple(record[k] for k in COUNT_KEY), (int(record["mentions"]), int(record["documents"]))


def _count_record(element) -> dict:
    key, (mentions, documents) = element
    return {**dict(zip(COUNT_KEY, key)), "mentions": mentions, "documents": documents}


def merge_counts(*count_lists: Iterable[dict]) -> list[dict]:
    """Sum entity count records per (entity, label, language, period)."""
    sums: dict[tuple, list[tuple[int, int]]] = {}
    for records in count_lists:
        for r in records:
            key, pair = _count_pair(r)
            sums.setdefault(key, []).append(pair)
    return [_count_record((k, _sum_pairs(v))) for k, v in sorted(sums.items())]


class CumulativeCounts(beam.PTransform):
    """This run's entity counts + ``<state_in>/entity_counts_total.avro`` ->
    ``<state_out>/entity_counts_total.avro``, one file of new totals (also
    returned as a PCollection).

    Duplicates never reach the counts, including duplicates of articles from
    earlier runs, so adding runs up never counts a story twice. A changed input
    file's new articles count as new; nothing is ever subtracted.
    """

    def __init__(self, state_in: str | None, state_out: str, schema: dict):
        super().__init__()
        if not state_out:
            raise ValueError("state_out is required")
        previous = FileSystems.join(state_in, TOTALS_FILE) if state_in else None
        self._previous = previous if previous and _exists(previous) else None
        self._prefix = FileSystems.join(state_out, TOTALS)
        self._schema = schema
        self._fields = tuple(f["name"] for f in schema["fields"])

    def expand(self, counts):
        fields = self._fields
        # Counts may come windowed by period (streaming-ready aggregation): the
        # totals span all time.
        current = (
            counts
            | "GlobalWindow" >> beam.WindowInto(window.GlobalWindows())
            | "Project" >> beam.Map(lambda r: {k: r.get(k) for k in fields})
        )
        if self._previous:
            previous = counts.pipeline | "ReadPreviousTotals" >> beam.io.ReadFromAvro(self._previous)
        else:
            previous = counts.pipeline | "NoPreviousTotals" >> beam.Create([])
        totals = (
            (previous, current)
            | "Both" >> beam.Flatten()
            | "Key" >> beam.Map(_count_pair)
            | "Sum" >> beam.CombinePerKey(_sum_pairs)
            | "ToRecords" >> beam.Map(_count_record)
        )
        totals | "WriteTotals" >> beam.io.WriteToAvro(
            self._prefix, schema=self._schema, codec="deflate", file_name_suffix=".avro",
            num_shards=1, shard_name_template="")
        return totals


# ---------------------------------------------------------------- state store

def _avro_is_empty(path: str) -> bool:
    import fastavro

    with FileSystems.open(path, compression_type=_UNCOMPRESSED) as f:
        return next(iter(fastavro.reader(f)), None) is None


def _accumulated_name(rel: str, run_id: str) -> str:
    """dedupe/part-00000-of-00001.avro -> dedupe/part-00000-of-00001-<run>.avro (globs on the suffix still match)."""
    folder, _, name = rel.rpartition("/")
    stem, dot, ext = name.partition(".")
    renamed = f"{stem}-{run_id}{dot}{ext}"
    return f"{folder}/{renamed}" if folder else renamed


class StateStore:
    """The state folder of recurring runs; see the module docstring for the protocol."""

    def __init__(self, root: str):
        if not root:
            raise ValueError("root is required")
        self.root = root.rstrip("/") or "/"
        self.committed = FileSystems.join(self.root, COMMITTED)
        self.head_path = FileSystems.join(self.root, HEAD_NAME)

    def pending(self, run_id: str) -> str:
        return FileSystems.join(self.root, PENDING, run_id)

    def head(self) -> dict | None:
        text = read_text(self.head_path)
        return json.loads(text) if text and text.strip() else None

    def state_in(self) -> str | None:
        """The committed folder, or None before the first commit."""
        return self.committed if self.head() else None

    def previous_totals(self) -> str | None:
        path = FileSystems.join(self.committed, TOTALS_FILE)
        return path if self.head() and _exists(path) else None

    def load_manifest(self) -> dict[str, dict]:
        return parse_manifest(read_text(FileSystems.join(self.committed, MANIFEST)))

    def begin(self, run_id: str, output: str, resume_key: str | None = None) -> str:
        pending = self.pending(run_id)
        write_atomic(FileSystems.join(pending, RUN_JSON), json.dumps(
            {"run_id": run_id, "output": output, "started": time.time(), "resume_key": resume_key}).encode("utf-8"))
        return pending

    def resumable(self, resume_key: str) -> str | None:
        """The newest uncommitted run started with ``resume_key`` (the same
        inputs and options) whose output is still there: a later attempt
        carries on with it instead of starting over."""
        head = self.head()
        for run_id in reversed(self._pending_ids()):
            if head and run_id == head["run_id"]:
                continue
            info = read_text(FileSystems.join(self.pending(run_id), RUN_JSON))
            if not info:
                continue
            info = json.loads(info)
            if info.get("resume_key") == resume_key and _exists(FileSystems.join(info["output"], STAGING, run_id)):
                return run_id
        return None

    def seal(self, run_id: str, manifest: dict[str, dict], selection: Selection) -> dict[str, dict]:
        """Make the pending state ready to commit: merge the hashes the pipeline
        recorded into a new manifest, and drop history files without records
        (every run, even an empty one, writes at least one shard)."""
        pending = self.pending(run_id)
        for path in _files_under(pending):
            rel = _relative(path, pending)
            if rel.endswith(".avro") and rel not in REPLACED and _avro_is_empty(path):
                _delete([path])
        parts = FileSystems.join(pending, MANIFEST_PARTS)
        hashes: dict[str, str | None] = {}
        for path in _files_under(parts):
            for entry in parse_manifest(read_text(path)).values():
                hashes[entry["path"]] = entry["sha256"]
        merged = updated_manifest(manifest, selection, hashes, run_id)
        write_atomic(FileSystems.join(self.pending(run_id), MANIFEST), dump_manifest(merged))
        return merged

    def commit(self, run_id: str, output: str) -> None:
        """The commit point: one atomic replace of HEAD."""
        when = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        write_atomic(self.head_path, json.dumps(
            {"run_id": run_id, "output": output, "committed_at": when}).encode("utf-8"))

    def roll_forward_steps(self, run_id: str, output: str) -> list[tuple[str, Callable[[], None]]]:
        """The post-commit steps, in order; each may be repeated after being cut short."""
        pending = self.pending(run_id)

        def publish_run():
            move_tree(FileSystems.join(output, STAGING, run_id), FileSystems.join(output, RUNS, run_id))
            _remove_empty_local_dir(FileSystems.join(output, STAGING))

        def publish_totals():
            source = FileSystems.join(pending, TOTALS_FILE)
            if not _exists(source):
                source = FileSystems.join(self.committed, TOTALS_FILE)
            if _exists(source):
                _copy_atomic(source, FileSystems.join(output, TOTALS, TOTALS_FILE))

        def point_latest():
            write_atomic(FileSystems.join(output, LATEST), (run_id + "\n").encode("utf-8"))
            if _is_local(output):
                link = os.path.join(output, CURRENT)
                tmp = os.path.join(output, f".{CURRENT}.{secrets.token_hex(4)}")
                os.symlink(os.path.join(RUNS, run_id), tmp)
                os.replace(tmp, link)

        def commit_state():
            for path in _files_under(pending):
                rel = _relative(path, pending)
                if rel.split("/", 1)[0] in NOT_COMMITTED or "beam-temp-" in rel:
                    continue
                target = rel if rel in REPLACED else _accumulated_name(rel, run_id)
                target = FileSystems.join(self.committed, target)
                _make_parent(target)
                FileSystems.rename([path], [target])

        def drop_pending():
            _delete([pending])
            _remove_empty_local_dir(FileSystems.join(self.root, PENDING))

        return [("publish_run", publish_run), ("publish_totals", publish_totals), ("point_latest", point_latest),
                ("commit_state", commit_state), ("drop_pending", drop_pending)]

    def roll_forward(self, run_id: str, output: str) -> None:
        for _, step in self.roll_forward_steps(run_id, output):
            step()

    def _pending_ids(self) -> list[str]:
        root = FileSystems.join(self.root, PENDING)
        if _is_local(root):
            return sorted(os.listdir(root)) if os.path.isdir(root) else []
        return sorted({_relative(p, root).split("/", 1)[0] for p in _files_under(root)})

    def abandon(self, run_id: str) -> None:
        """Forget an uncommitted run: its pending state and its staging output."""
        info = read_text(FileSystems.join(self.pending(run_id), RUN_JSON))
        if info:
            discard_staging(json.loads(info)["output"], run_id)
        _delete([self.pending(run_id)])
        _remove_empty_local_dir(FileSystems.join(self.root, PENDING))

    def recover(self, keep: str | None = None, abandon: bool = True) -> dict:
        """Finish a committed run that was cut short; drop runs that never
        committed, except ``keep`` (a run to resume), or none when not ``abandon``."""
        head = self.head()
        finished = abandoned = None
        for run_id in self._pending_ids():
            if head and run_id == head["run_id"]:
                _LOG.warning("newsbeam: finishing the publication of committed run %s", run_id)
                self.roll_forward(run_id, head["output"])
                finished = run_id
            elif run_id == keep or not abandon:
                continue
            else:
                _LOG.warning("newsbeam: discarding run %s, which stopped before committing", run_id)
                self.abandon(run_id)
                abandoned = (abandoned or []) + [run_id]
        return {"finished": finished, "abandoned": abandoned or []}
