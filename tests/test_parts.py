"""End-to-end: a run executed in many small parts gives exactly what one
pipeline gives, and a killed run with --state-dir carries on where it stopped."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO
from helpers import read_output

from pipelines.cli import main

pytestmark = pytest.mark.slow

PEOPLE = ["Angela Merkel", "Emmanuel Macron", "Joe Biden", "Rishi Sunak", "Olaf Scholz", "Giorgia Meloni"]
PLACES = ["Paris", "Berlin", "London", "Washington", "Rome", "Brussels"]
ORGS = ["the European Union", "Nato", "the United Nations", "Microsoft", "Barclays", "the World Bank"]
VERBS = ["met", "criticised", "praised", "called", "warned", "thanked"]
TOPICS = ["trade", "energy prices", "the budget", "climate policy", "migration", "defence spending"]


def story(rng: random.Random, sentences: int = 9) -> str:
    out = []
    for _ in range(sentences):
        out.append(f"{rng.choice(PEOPLE)} {rng.choice(VERBS)} {rng.choice(PEOPLE)} in {rng.choice(PLACES)} "
                   f"on {rng.choice(['Monday', 'Tuesday', 'Friday'])} to discuss {rng.choice(TOPICS)} with "
                   f"officials from {rng.choice(ORGS)}, according to {rng.randint(2, 90)} people briefed.")
    return " ".join(out)


def write_corpus(folder, seed: int = 7) -> None:
    """Distinct stories, with duplicates placed in other parts than their
    originals: exact copies whose *later* path holds the earlier date (the
    keep rule must see across parts), near copies, and rejected inputs."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    stories = [story(rng) for _ in range(14)]
    for i, text in enumerate(stories):
        (folder / f"a{i:02d}.json").write_text(json.dumps(
            {"title": f"Story {i}", "text": text, "published": f"2024-03-{10 + i:02d}T09:00:00Z"}))
    # exact copy, later in path order but published earlier: it is the one kept
    (folder / "z_exact_of_03.json").write_text(json.dumps(
        {"title": "Story 3", "text": stories[3], "published": "2024-03-01T08:00:00Z"}))
    (folder / "b_exact_of_09.json").write_text(json.dumps(
        {"title": "Story 9 again", "text": stories[9], "published": "2024-04-01T08:00:00Z"}))
    words = stories[5].split()
    words[7] = "reportedly"
    (folder / "m_near_of_05.json").write_text(json.dumps(
        {"title": "Story 5 edited", "text": " ".join(words), "published": "2024-04-02T08:00:00Z"}))
    (folder / "c_text_copy_of_11.txt").write_text("Story eleven\n\n" + stories[11] + "\n")
    # a newline in a path: what the phases pass between them must keep a source whole
    (folder / "n_new\nline_exact_of_02.json").write_text(json.dumps(
        {"title": "Story 2 again", "text": stories[2], "published": "2024-05-01T08:00:00Z"}))
    (folder / "d_short.json").write_text(json.dumps({"title": "Brief", "text": "Too short to keep."}))
    (folder / "e_broken.json").write_text('{"title": "Broken", "text": ')


def comparable(out) -> dict:
    got = read_output(out)

    def key(record):
        return json.dumps(record, sort_keys=True, default=str)

    summary = got.pop("summary")
    result = {name: sorted(records, key=key) for name, records in got.items()}
    result["summary"] = {k: summary[k] for k in ("inputs", "articles", "duplicates", "rejected", "languages",
                                                   "entities", "top_entities")}
    result["csv"] = (out / "entity_counts.csv").read_text()
    return result


def test_many_tiny_parts_give_exactly_what_one_pipeline_gives(tmp_path):
    corpus = tmp_path / "in"
    write_corpus(corpus)
    one, parts = tmp_path / "one", tmp_path / "parts"
    assert main(["run", str(corpus), "--output", str(one), "--chunk-bytes", "0"]) == 0
    # every input file is bigger than 1 byte: each is a part of its own
    assert main(["run", str(corpus), "--output", str(parts), "--chunk-bytes", "1"]) == 0
    a, b = comparable(one), comparable(parts)
    summary = json.loads((parts / "summary.json").read_text())
    assert summary["execution"]["parts"] == len(list(corpus.iterdir())) == 21
    assert set(summary["timings"]["phase_seconds"]) == {"read+clean", "dedupe", "annotate", "merge"}
    assert a["duplicates"], "the corpus has duplicates"
    kept_of_3 = [d["duplicate_of"] for d in b["duplicates"] if d["source"].endswith("a03.json")]
    assert kept_of_3 and all(
        any(x["id"] == k and x["source"].endswith("z_exact_of_03.json") for x in b["articles"]) for k in kept_of_3)
    assert {d["method"] for d in b["duplicates"]} == {"exact", "near"}
    assert a == b
    s = b["summary"]
    assert s["inputs"]["records"] == s["articles"] + s["duplicates"]["total"] + s["rejected"]["total"] == 21
    assert any("\n" in d["source"] for d in b["duplicates"]) and not any("\n" in x["source"] for x in b["articles"])
    assert not (parts / "_work").exists() and not (parts / ".staging").exists()


def _run(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "pipelines", "run", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def _latest(out):
    return out / "runs" / (out / "latest").read_text().strip()


def test_a_killed_run_with_state_dir_carries_on_from_the_units_it_finished(tmp_path):
    corpus = tmp_path / "in"
    write_corpus(corpus)
    args = ["--chunk-bytes", "3000", "--direct_num_workers", "1"]

    reference = tmp_path / "ref"
    done = _run([str(corpus), "--output", str(reference), "--state-dir", str(tmp_path / "ref-state"), *args])
    _, err = done.communicate(timeout=600)
    assert done.returncode == 0, err

    out, state = tmp_path / "out", tmp_path / "state"
    proc = _run([str(corpus), "--output", str(out), "--state-dir", str(state), *args])
    deadline = time.time() + 600
    markers = []
    while time.time() < deadline and proc.poll() is None:
        markers = list((out / ".staging").glob("*/_work/done/annotate-*.json"))
        if markers:
            break
        time.sleep(0.05)
    assert markers, "the run reached the annotate phase"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, as a crash or the OOM killer would
    proc.wait(timeout=30)
    assert not (out / "latest").exists(), "nothing was committed"

    again = _run([str(corpus), "--output", str(out), "--state-dir", str(state), *args])
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert "carrying on with run" in err and "resuming" in err
    summary = json.loads((_latest(out) / "summary.json").read_text())
    assert summary["execution"]["units_done_earlier"] >= 1 + summary["execution"]["parts"]
    assert comparable(_latest(out)) == comparable(_latest(reference))
    assert not list((out / ".staging").glob("*")) if (out / ".staging").exists() else True
