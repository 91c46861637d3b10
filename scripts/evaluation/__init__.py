"""Quality evaluations (``scripts/evaluate.py``): one module per evaluation, helpers they share here."""

import json
from pathlib import Path


def read_json_shards(folder: str, prefix: str) -> list[dict]:
    """The JSON lines of every ``prefix-*`` shard Beam's WriteToText wrote in ``folder``, in shard order."""
    records = []
    for path in sorted(Path(folder).glob(f"{prefix}-*")):
        records.extend(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())
    return records
