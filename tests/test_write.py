import apache_beam as beam
from helpers import read_avro_folder

from pipelines.records import load_schema
from pipelines.write import WriteRecords, project


def test_project_keeps_only_schema_fields():
    assert project({"a": 1, "b": 2}, ("a", "c")) == {"a": 1, "c": None}


def test_write_records_round_trip(tmp_path, test_pipeline):
    recs = [{"source": "s", "stage": "read", "reason": "empty", "detail": "d", "raw": None, "extra": 1}]
    with test_pipeline() as p:
        p | beam.Create(recs) | WriteRecords(str(tmp_path), "rejected", load_schema("rejected"))
    assert read_avro_folder(tmp_path / "rejected", "rejected") == [
        {"source": "s", "stage": "read", "reason": "empty", "detail": "d", "raw": None}]
