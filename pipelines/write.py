"""Write stage: records -> Avro (deflate) files, one folder per record type."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

__all__ = ["AvroFileWriter", "WriteRecords", "project"]


def project(record: dict, field_names: tuple[str, ...]) -> dict:
    """Keep only the schema's fields: in-flight helper fields never reach the output."""
    return {name: record.get(name) for name in field_names}


class WriteRecords(beam.PTransform):
    """Write one PCollection of dicts as ``<output>/<folder>/<prefix>-*.avro``.

    ``prefix`` lets several pipelines write parts of one folder side by side
    (a run executed in parts names each part's files after it)."""

    def __init__(self, output: str, folder: str, schema: dict, prefix: str = "part"):
        super().__init__()
        if not output:
            raise ValueError("output is required")
        if not prefix or "/" in prefix:
            raise ValueError(f"prefix must be a non-empty file-name prefix, got {prefix!r}")
        self._prefix = FileSystems.join(output, folder, prefix)
        self._schema = schema
        self._fields = tuple(f["name"] for f in schema["fields"])

    def expand(self, records):
        return (
            records
            | "Project" >> beam.Map(project, self._fields)
            | "WriteAvro" >> beam.io.WriteToAvro(
                self._prefix, schema=self._schema, codec="deflate", file_name_suffix=".avro")
        )


class AvroFileWriter:
    """One Avro file at ``path`` (FileSystems), written record by record with
    the schema's fields only, in the codec ``WriteRecords`` uses: for work
    done outside a Beam pipeline (``pipeline.run_dedupe_phase``)."""

    def __init__(self, path: str, schema: dict):
        if not path:
            raise ValueError("path is required")
        self._path = path
        self._schema = schema
        self._fields = tuple(f["name"] for f in schema["fields"])
        self._f = self._writer = None

    def __enter__(self):
        import fastavro

        self._f = FileSystems.create(self._path, compression_type="uncompressed")
        self._writer = fastavro.write.Writer(self._f, fastavro.parse_schema(self._schema), codec="deflate")
        return self

    def write(self, record: dict) -> None:
        self._writer.write(project(record, self._fields))

    def __exit__(self, *exc):
        self._writer.flush()
        self._f.close()
