"""End-to-end: the CLI on seeds/ and on bad input, Avro read back against the schemas."""

import gzip
import json
import subprocess
import sys

import pytest
from conftest import REPO, SEEDS
from helpers import read_output

from pipelines.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("seed-out")
    assert main(["run", str(SEEDS), "--output", str(out)]) == 0
    return read_output(out)


def test_seed_run_writes_contract_folders_valid_against_schemas(seed_run, seed_expected):
    [article] = seed_run["articles"]
    assert article["title"] == seed_expected["title"]
    assert article["language"] == seed_expected["language"]
    assert article["source"].endswith(seed_expected["source"])
    assert seed_run["duplicates"] == [] and seed_run["rejected"] == []
    assert seed_run["entity_counts"], "entity counts are written"
    for m in article["entities"]:
        field = article[m["field"]]
        assert field[m["start"]:m["end"]] == m["text"]


def test_seed_summary_accounts_for_every_input(seed_run):
    s = seed_run["summary"]
    assert s["inputs"]["files"] == 1
    assert s["inputs"]["records"] == s["articles"] + s["duplicates"]["total"] + s["rejected"]["total"] == 1
    assert s["versions"]["apache-beam"].startswith("2.77")
    assert s["versions"]["models"]["en"]["version"] == "3.8.0"


def test_bad_inputs_are_quarantined_and_accounted(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    body = "Paragraph with enough words to pass the minimum length of a real article. " * 3
    (inp / "good.txt").write_text("A good headline\n\n" + body)
    (inp / "copy.txt").write_text("A good headline\n\n" + body)
    other = ("Le caf\u00e9 na\u00efve served cr\u00e8me br\u00fbl\u00e9e to every guest who came to the opening "
             "night. ") * 2
    (inp / "latin1.txt").write_bytes(("Caf\u00e9 headline\n\n" + other).encode("cp1252"))
    (inp / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    (inp / "empty.txt").write_text("")
    (inp / "bomb.json.gz").write_bytes(gzip.compress(b" " * (3 * 1024 * 1024)))
    (inp / "feed.jsonl").write_text(
        json.dumps({"title": "Line one", "text": body}) + "\n{broken\n" + json.dumps({"title": "x"}) + "\n")
    out = tmp_path / "out"
    assert main(["run", str(inp), "--output", str(out), "--max-bytes", str(1024 * 1024)]) == 0
    res = read_output(out)
    reasons = sorted((r["source"].rsplit("/", 1)[-1], r["reason"]) for r in res["rejected"])
    assert reasons == [("bomb.json.gz", "too_large"), ("empty.txt", "empty"), ("feed.jsonl#2", "invalid_json"),
                       ("feed.jsonl#3", "no_text"), ("image.txt", "binary")]
    s = res["summary"]
    n_inputs = 9
    assert s["inputs"]["records"] == n_inputs
    assert len(res["articles"]) + len(res["duplicates"]) + len(res["rejected"]) == n_inputs
    latin = [a for a in res["articles"] if a["source"].endswith("latin1.txt")]
    assert latin and latin[0]["title"] == "Caf\u00e9 headline"
    kept_ids = {a["id"] for a in res["articles"]}
    assert all(d["duplicate_of"] in kept_ids for d in res["duplicates"])


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]) == 2
    assert "matches no file" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["run", str(SEEDS), "--output", str(blocker / "sub")]) == 2
    assert "not writable" in capsys.readouterr().err
    assert main(["run", str(SEEDS), "--output", str(tmp_path / "o"), "--spacy-model", "en=no_such_model"]) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_help_lists_options():
    out = subprocess.run([sys.executable, "-m", "pipelines", "run", "--help"], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    for option in ("--output", "--max-bytes", "--min-words", "--spacy-model", "--languages", "--state-dir"):
        assert option in out
