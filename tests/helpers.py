"""Helpers shared by tests: building article dicts and reading Avro output back."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import fastavro

from pipelines.records import load_schema


def article(id_, text, **fields) -> dict:
    base = {
        "id": id_, "source": f"{id_}.txt", "url": None, "title": fields.pop("title", f"Title {id_}"),
        "author": None, "published": None, "text": text, "captions": [], "language": "en",
        "language_probability": 1.0, "entities": [], "content_hash": f"h-{id_}",
        "word_count": len(text.split()), "language_hint": None,
    }
    base.update(fields)
    return base


def read_avro_folder(folder: Path, schema_name: str) -> list[dict]:
    """All records in ``folder/*.avro``, each validated against the repo schema."""
    schema = fastavro.parse_schema(load_schema(schema_name))
    records = []
    for path in sorted(glob.glob(str(folder / "*.avro"))):
        with open(path, "rb") as f:
            reader = fastavro.reader(f)
            for record in reader:
                fastavro.validation.validate(record, schema, raise_errors=True)
                records.append(record)
    return records


def read_output(out: Path) -> dict:
    return {
        "articles": read_avro_folder(out / "articles", "article"),
        "duplicates": read_avro_folder(out / "duplicates", "duplicate"),
        "rejected": read_avro_folder(out / "rejected", "rejected"),
        "entity_counts": read_avro_folder(out / "entity_counts", "entity_count"),
        "summary": json.loads((out / "summary.json").read_text()),
    }
