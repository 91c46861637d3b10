import pytest

from pipelines.plan import UsageError, plan_inputs


def test_directories_recurse_globs_match_and_hidden_files_are_skipped(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("x")
    (tmp_path / "a" / "deep").mkdir()
    (tmp_path / "a" / "deep" / "y.json").write_text("{}")
    (tmp_path / "a" / ".git").mkdir()
    (tmp_path / "a" / ".git" / "config").write_text("")
    (tmp_path / "a" / "z.expected.json").write_text("{}")
    planned = plan_inputs([str(tmp_path / "a")], exclude=("*.expected.json",))
    assert [f.key for f in planned] == ["deep/y.json", "x.txt"]
    assert plan_inputs([str(tmp_path / "a" / "*.txt")])[0].key == "x.txt"
    assert plan_inputs([str(tmp_path / "a" / "x.txt")])[0].source == str(tmp_path / "a" / "x.txt")


def test_same_file_twice_is_planned_once(tmp_path):
    (tmp_path / "x.txt").write_text("x")
    assert len(plan_inputs([str(tmp_path), str(tmp_path / "x.txt")])) == 1


def test_missing_input_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError):
        plan_inputs([str(tmp_path / "nope")])
    with pytest.raises(UsageError):
        plan_inputs([])


def test_fifos_are_skipped_and_counted_never_opened(tmp_path):
    import os
    from collections import Counter

    (tmp_path / "a.txt").write_text("a")
    os.mkfifo(tmp_path / "pipe.txt")  # opening it would block forever
    skipped = Counter()
    planned = plan_inputs([str(tmp_path)], skipped=skipped)
    assert [f.key for f in planned] == ["a.txt"]
    assert skipped == {"not_a_regular_file": 1}


def test_newsbeam_folders_inside_the_input_are_never_inputs(tmp_path):
    from collections import Counter

    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "out" / "articles").mkdir(parents=True)
    (tmp_path / "out" / "summary.json").write_text("{}")
    (tmp_path / "out" / "articles" / "part.avro").write_bytes(b"x")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "manifest.json").write_text("{}")
    skipped = Counter()
    planned = plan_inputs([str(tmp_path)], never_read=(str(tmp_path / "out") + "/", str(tmp_path / "state")),
                          skipped=skipped)
    assert [f.key for f in planned] == ["a.txt"]
    assert skipped == {"newsbeam_output": 3}
