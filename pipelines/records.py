"""Record types shared by the stages, and the Avro schemas that define them.

Records travel through the pipeline as plain dicts (Beam's default coder for
dicts is deterministic enough for values, and no record is used as a grouping
key). The schemas in ``schemas/`` are the single source of truth for the
output fields; they are loaded once in the launching process and travel to the
workers inside the transforms that need them. A wheel or sdist carries them as
the package ``pipelines.schemas`` (pyproject.toml maps the folder in), so an
installed newsbeam reads them with ``importlib.resources`` wherever it runs.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importlib.abc's alias is deprecated from 3.12, importlib.resources.abc is 3.11+
    from importlib.abc import Traversable

__all__ = [
    "SCHEMA_NAMES",
    "read_avro_files",
    "read_avro_matched",
    "load_schema",
    "load_schemas",
    "rejected",
    "schema_files",
    "sha256_hex",
    "tag_rejected",
]

SCHEMA_NAMES = ("article", "duplicate", "rejected", "entity_count", "fingerprint")

# Longest excerpt of an offending input kept in a rejected record: enough to
# identify and replay a JSONL line, bounded so a huge bad file cannot bloat
# the quarantine.
RAW_EXCERPT_CHARS = 20_000


def schema_files() -> Traversable:
    """The folder of ``*.avsc`` files: the installed package's data, or the
    checkout's ``schemas/`` when newsbeam runs from its source tree."""
    try:
        return resources.files("pipelines.schemas")
    except ModuleNotFoundError:
        # An editable install (scripts/_env.sh) or a bare checkout: setuptools'
        # editable finder maps only packages with an __init__.py, so the
        # mapped data folder is not importable there; it is the same folder.
        return Path(__file__).resolve().parent.parent / "schemas"


def load_schema(name: str) -> dict:
    return json.loads(schema_files().joinpath(f"{name}.avsc").read_text(encoding="utf-8"))


def load_schemas() -> dict[str, dict]:
    return {name: load_schema(name) for name in SCHEMA_NAMES}


def sha256_hex(data: str | bytes) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def rejected(source: str, stage: str, reason: str, detail: str, raw: str | None = None) -> dict:
    """A quarantine record: why an input did not become an article."""
    if raw is not None and len(raw) > RAW_EXCERPT_CHARS:
        raw = raw[:RAW_EXCERPT_CHARS]
    if raw is not None:
        # A lone surrogate (JSON allows "\ud9b3") cannot be written as Avro's UTF-8.
        raw = raw.encode("utf-8", "replace").decode("utf-8")
    return {"source": source, "stage": stage, "reason": reason, "detail": detail, "raw": raw}


def tag_rejected(stage: str, record: dict):
    """Count a rejection under a named counter (``<stage>:rejected_<reason>``) and
    route it to the 'rejected' output of a multi-output ParDo."""
    import apache_beam as beam
    from apache_beam.metrics import Metrics

    Metrics.counter(stage, f"rejected_{record['reason']}").inc()
    return beam.pvalue.TaggedOutput("rejected", record)


def read_avro_matched(readable):
    """The records of one Avro file matched by ``fileio`` (a ``ReadableFile``)."""
    import fastavro

    with readable.open(compression_type="uncompressed") as f:
        yield from fastavro.reader(f)


def read_avro_files(pattern: str):
    """The records of every Avro file matching ``pattern`` (FileSystems), file
    by file in path order; none when nothing matches."""
    import fastavro
    from apache_beam.io.filesystems import FileSystems

    try:
        paths = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # nothing matched
        paths = []
    for path in paths:
        with FileSystems.open(path, compression_type="uncompressed") as f:
            yield from fastavro.reader(f)
