import random
from collections import Counter

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to
from helpers import article

from pipelines.dedupe import (
    CURRENT_RANK,
    DEFAULT_BUCKET_CAP,
    HISTORY_RANK,
    DedupeArticles,
    ReadFingerprints,
    WriteFingerprints,
    bucket_pairs,
    decide_in_passes,
    fingerprint,
    jaccard,
    lsh_bands,
    resolve_exact_group,
    resolve_near,
    shingle_hashes,
)

VOCAB = [f"w{i}" for i in range(5000)]


def story(seed: int, words: int = 120) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(VOCAB) for _ in range(words)]


def edit(words: list[str], positions, tag: str) -> list[str]:
    out = list(words)
    for i in positions:
        out[i] = f"{tag}{i}"
    return out


def text(words: list[str]) -> str:
    return " ".join(words)


def sim(a: str, b: str) -> float:
    return jaccard(shingle_hashes(a), shingle_hashes(b))


def art(id_, words, published=None, **fields):
    t = text(words) if isinstance(words, list) else words
    return article(id_, t, published=published, content_hash=f"hash-of-{t}", **fields)


def ids(pcoll, label):
    return pcoll | label >> beam.Map(lambda a: a["id"])


def dup_tuples(pcoll, label):
    return pcoll | label >> beam.Map(lambda d: (d["id"], d["duplicate_of"], d["method"], round(d["similarity"], 6)))


# --- pure core ---------------------------------------------------------------


def test_earliest_published_then_smallest_id_is_kept():
    a = article("b", "x", published="2024-01-01", content_hash="h")
    b = article("a", "x", published="2024-01-02", content_hash="h")
    c = article("0", "x", published=None, content_hash="h")
    kept, dups = resolve_exact_group([c, b, a])
    assert kept["id"] == "b"
    assert {(d["id"], d["duplicate_of"], d["method"]) for d in dups} == {("a", "b", "exact"), ("0", "b", "exact")}


def test_exact_group_with_history_points_everything_at_the_history_article():
    a = article("a", "x", published="2020-01-01", content_hash="h")
    old = {"id": "old", "published": "2024-06-01", "content_hash": "h"}
    kept, dups = resolve_exact_group([a], [old])
    assert kept is None
    assert [(d["id"], d["duplicate_of"], d["similarity"]) for d in dups] == [("a", "old", 1.0)]


def test_exact_group_article_already_in_history_stays_kept():
    same = article("old", "x", content_hash="h")
    copy = article("new", "x", content_hash="h")
    kept, dups = resolve_exact_group([copy, same], [{"id": "old", "published": None, "content_hash": "h"}])
    assert kept is same
    assert [(d["id"], d["duplicate_of"]) for d in dups] == [("new", "old")]


@pytest.mark.parametrize("a, b, expected", [
    ("The cat sat on the mat today.", "the CAT sat, on the mat -- today!", 1.0),
    ("one two three", "one two three", 1.0),
    ("one two three", "one two four", 0.0),
    ("a b c d e f", "a b c d e g", 1 / 3),
    ("", "anything at all here", 0.0),
])
def test_shingle_similarity_ignores_case_and_punctuation(a, b, expected):
    assert sim(a, b) == pytest.approx(expected)


def test_shingles_are_sorted_unique_32_bit():
    hashes = shingle_hashes("a b c d e a b c d e a b c d e")
    assert hashes.dtype == np.dtype("<u4")
    assert list(hashes) == sorted(set(hashes))
    assert len(hashes) == 5


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9, 0.95, 1.0])
def test_lsh_bands_find_a_pair_at_the_threshold_almost_always(threshold):
    bands, rows = lsh_bands(threshold)
    assert bands * rows <= 128
    assert 1 - (1 - threshold ** rows) ** bands >= 0.995
    # one more row per band would miss too many pairs at the threshold
    wider = rows + 1
    assert wider > 128 or 1 - (1 - threshold ** wider) ** (128 // wider) < 0.995


def test_lsh_bands_rejects_bad_threshold():
    with pytest.raises(ValueError):
        lsh_bands(0.0)


def _node(id_, rank=CURRENT_RANK, published=None):
    return (rank, published is None, published or "", id_)


def test_small_bucket_yields_every_comparable_pair():
    h1, h2 = _node("h1", HISTORY_RANK), _node("h2", HISTORY_RANK)
    c, d, again = _node("c", published="2024-01-01"), _node("d"), _node("h1")
    oversized, pairs = bucket_pairs([d, again, c, h2, h1], cap=5)
    pairs = set(pairs)
    assert not oversized
    assert (h1, h2) not in pairs  # history was deduplicated by its own run
    assert (h1, again) not in pairs  # the same id is the same input
    assert pairs == {(h1, c), (h1, d), (h2, c), (h2, d), (h2, again), (c, d), (c, again), (d, again)}


def test_oversized_bucket_pairs_every_member_with_its_first_only():
    members = [_node(f"n{i:03d}") for i in range(50, 0, -1)]
    oversized, pairs = bucket_pairs(members, cap=4)
    assert oversized
    first = _node("n001")
    assert sorted(pairs) == [(first, m) for m in sorted(members) if m != first]


def test_oversized_bucket_reads_a_one_shot_iterator_correctly():
    members = [_node(f"n{i}") for i in (5, 3, 9, 1, 7)]
    oversized, pairs = bucket_pairs(iter(members), cap=2)
    assert oversized
    assert sorted(pairs) == [(_node("n1"), m) for m in sorted(members)[1:]]


def test_near_chain_resolves_greedily_in_keep_order():
    a, b, c = _node("a", published="2024-01-01"), _node("b", published="2024-01-02"), _node("c")
    # A~B, B~C, A not ~C: B folds into A; C's only match is a duplicate, so C is kept.
    assert resolve_near([(b, c, 0.85), (a, b, 0.9)]) == {"b": ("a", 0.9, False)}
    # When C also matches A directly, it folds into A too.
    assert resolve_near([(b, c, 0.85), (a, b, 0.9), (c, a, 0.81)]) == {"b": ("a", 0.9, False), "c": ("a", 0.81, False)}


def test_near_prefers_earliest_kept_and_history_always_wins():
    late_history = _node("zzz", HISTORY_RANK, published="2030-01-01")
    early = _node("b", published="2000-01-01")
    tie_small, tie_large = _node("m1", published="2024-05-05"), _node("m2", published="2024-05-05")
    decisions = resolve_near([(early, late_history, 0.8), (tie_large, tie_small, 0.95), (tie_large, early, 0.99)])
    # b is published long before the history article but history wins; m1 and m2
    # tie on published, so the smaller id is kept and m2 folds into it, not into
    # its more similar but duplicate neighbour b.
    assert decisions == {"b": ("zzz", 0.8, True), "m2": ("m1", 0.95, False)}


def _greedy_reference(ranks, history, edges):
    # The clustering spelled out with sets, as resolve_near was first written.
    earlier = {}
    for a, b, sim in edges:
        if ranks[b] < ranks[a]:
            a, b = b, a
        earlier.setdefault(b, []).append((ranks[a], sim, a))
    kept, out = set(), {}
    for node in sorted({n for a, b, _ in edges for n in (a, b)}, key=lambda n: ranks[n]):
        matches = sorted(m for m in earlier.get(node, ()) if m[2] in kept)
        if history[node] or not matches:
            kept.add(node)
        else:
            out[node] = (matches[0][2], matches[0][1])
    return out


@pytest.mark.parametrize("seed", range(25))
def test_numbered_clustering_is_the_greedy_one_on_random_graphs(seed):
    import random

    from pipelines.dedupe import resolve_near_numbered

    rng = random.Random(seed)
    n = rng.randint(2, 40)
    ranks = list(range(n))
    rng.shuffle(ranks)
    history = [rng.random() < 0.2 for _ in range(n)]
    pairs = {tuple(rng.sample(range(n), 2)) for _ in range(rng.randint(1, 3 * n))}
    pairs = {(a, b) for a, b in pairs if (b, a) not in pairs or a < b}
    edges = [(a, b, round(rng.uniform(0.8, 1.0), 3)) for a, b in sorted(pairs)]
    got = {d: (k, sim) for d, k, sim in resolve_near_numbered(
        ranks, history, [e[0] for e in edges], [e[1] for e in edges], [e[2] for e in edges])}
    assert got == _greedy_reference(ranks, history, edges)


def test_fingerprint_record_has_packed_shingles():
    a = art("a", story(1))
    fp = fingerprint(a)
    assert fp["id"] == "a" and fp["content_hash"] == a["content_hash"]
    assert np.array_equal(np.frombuffer(fp["shingles"], dtype="<u4"), shingle_hashes(a["text"]))


# --- Beam --------------------------------------------------------------------


BASE = story(1, 200)
# B differs from A in a few spread words, C from B in a few others: A~B and B~C
# are over 0.8 but A~C is not, which is the chain case.
CHAIN_B = edit(BASE, range(5, 200, 50), "b")
CHAIN_C = edit(CHAIN_B, range(30, 200, 50), "c")


def test_chain_fixture_is_a_chain():
    assert sim(text(BASE), text(CHAIN_B)) >= 0.8
    assert sim(text(CHAIN_B), text(CHAIN_C)) >= 0.8
    assert sim(text(BASE), text(CHAIN_C)) < 0.8


def corpus() -> list[dict]:
    other = story(2)
    near = edit(other, [60], "n")
    return [
        art("a", BASE, "2024-01-01"),
        art("b", CHAIN_B, "2024-01-02"),
        art("c", CHAIN_C, "2024-01-03"),
        art("o", other, "2024-02-01"),
        art("n", near, "2024-01-15"),            # near copy of o, published earlier: n is kept
        art("x", near, "2024-03-01"),            # exact copy of n
        art("y", text(other).upper(), "2024-03-01"),  # same story as o re-typeset: exact of o after normalising
        art("u", story(3)),                      # unrelated
        art("t2", story(4), "2024-04-04"),      # t1/t2 tie on published: smaller id kept
        art("t1", story(4), "2024-04-04"),
    ]


def expected_duplicates():
    other = story(2)
    near_sim = round(sim(text(other), text(edit(other, [60], "n"))), 6)
    return [
        ("b", "a", "near", round(sim(text(BASE), text(CHAIN_B)), 6)),
        ("o", "n", "near", near_sim),
        ("x", "n", "exact", 1.0),
        ("y", "n", "near", near_sim),  # y is an exact copy of o, and o folded into n
        ("t2", "t1", "exact", 1.0),
    ]


def fix_hashes(articles):
    from pipelines.clean import normalise_for_hash
    from pipelines.records import sha256_hex

    return [{**a, "content_hash": sha256_hex(normalise_for_hash(a["text"]))} for a in articles]


def test_dedupe_exact_near_chain_ties(test_pipeline):
    with test_pipeline() as p:
        out = p | beam.Create(fix_hashes(corpus())) | DedupeArticles(0.8)
        assert_that(ids(out["articles"], "KeptIds"), equal_to(["a", "c", "n", "u", "t1"]), label="kept")
        assert_that(dup_tuples(out["duplicates"], "DupTuples"), equal_to(expected_duplicates()), label="dups")
        assert_that(ids(out["fingerprints"], "FpIds"), equal_to(["a", "c", "n", "u", "t1"]), label="fingerprints")


@pytest.mark.parametrize("seed, options", [
    (1, {}),
    (2, {"direct_num_workers": 2, "direct_running_mode": "multi_threading"}),
    (3, {"runner": "BundleBasedDirectRunner"}),
])
def test_dedupe_output_does_not_depend_on_input_order_or_workers(test_pipeline, seed, options):
    articles = fix_hashes(corpus())
    random.Random(seed).shuffle(articles)
    with test_pipeline(**options) as p:
        out = p | beam.Create(articles, reshuffle=True) | DedupeArticles(0.8, bucket_cap=2)
        assert_that(ids(out["articles"], "KeptIds"), equal_to(["a", "c", "n", "u", "t1"]), label="kept")
        assert_that(dup_tuples(out["duplicates"], "DupTuples"), equal_to(expected_duplicates()), label="dups")


def test_oversized_bucket_is_counted_and_still_folds_boilerplate(test_pipeline):
    page = story(9, 150)
    # 12 template pages differing in one word each; no two are byte-identical.
    pages = fix_hashes([art(f"p{i:02d}", edit(page, [140], f"v{i}"), f"2024-01-{i + 1:02d}") for i in range(12)])
    p = test_pipeline()
    out = p | beam.Create(pages) | DedupeArticles(0.8, bucket_cap=4)
    assert_that(ids(out["articles"], "KeptIds"), equal_to(["p00"]), label="kept")
    assert_that(out["duplicates"] | beam.Map(lambda d: (d["duplicate_of"], d["method"])),
                equal_to([("p00", "near")] * 11), label="dups")
    result = p.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_namespace("dedupe"))["counters"]
    by_name = {c.key.metric.name: c.committed for c in counters}
    assert by_name["oversized_buckets"] > 0
    assert by_name["near_duplicates"] == 11
    assert by_name["kept"] == 1


def test_unrelated_articles_are_not_duplicates(test_pipeline):
    arts = fix_hashes([art(f"s{i}", story(100 + i)) for i in range(20)])
    with test_pipeline() as p:
        out = p | beam.Create(arts) | DedupeArticles(0.8)
        assert_that(ids(out["articles"], "KeptIds"), equal_to([a["id"] for a in arts]), label="kept")
        assert_that(out["duplicates"], equal_to([]), label="dups")


def test_history_across_runs(test_pipeline, tmp_path):
    state = str(tmp_path / "state")
    first = fix_hashes([art("old", BASE, "2024-05-01"), art("other", story(5), "2024-05-01")])
    with test_pipeline() as p:
        out = p | beam.Create(first) | DedupeArticles(0.8)
        out["fingerprints"] | WriteFingerprints(state)
    assert list((tmp_path / "state" / "dedupe").glob("*.avro"))

    second = fix_hashes([
        art("exact", text(BASE).lower(), "2020-01-01"),  # exact copy, published before: the old one still wins
        art("near", CHAIN_B, "2020-01-01"),
        art("old", BASE, "2024-05-01"),  # the same input seen again: stays kept, not a duplicate of itself
        art("new", story(6)),
    ])
    with test_pipeline() as p:
        history = p | "History" >> ReadFingerprints(state)
        out = p | beam.Create(second) | DedupeArticles(0.8, history=history)
        assert_that(ids(out["articles"], "KeptIds"), equal_to(["old", "new"]), label="kept")
        assert_that(dup_tuples(out["duplicates"], "DupTuples"), equal_to([
            ("exact", "old", "exact", 1.0),
            ("near", "old", "near", round(sim(text(BASE), text(CHAIN_B)), 6)),
        ]), label="dups")
        assert_that(ids(out["fingerprints"], "FpIds"), equal_to(["new"]), label="fingerprints")


def test_history_of_another_shingle_scheme_is_used_for_exact_matching_only(test_pipeline):
    old = {**fingerprint(fix_hashes([art("old", BASE, "2024-05-01")])[0]), "shingle_scheme": "chars3-md5"}
    arts = fix_hashes([art("exact", BASE), art("near", CHAIN_B)])
    with test_pipeline() as p:
        history = p | "History" >> beam.Create([old])
        out = p | "Articles" >> beam.Create(arts) | DedupeArticles(0.8, history=history)
        assert_that(ids(out["articles"], "KeptIds"), equal_to(["near"]), label="kept")
        assert_that(dup_tuples(out["duplicates"], "DupTuples"), equal_to([("exact", "old", "exact", 1.0)]),
                    label="dups")


def test_absent_history_folder_is_an_empty_history(test_pipeline, tmp_path):
    with test_pipeline() as p:
        history = p | "History" >> ReadFingerprints(str(tmp_path / "never-written"))
        out = p | beam.Create(fix_hashes([art("a", story(7))])) | DedupeArticles(0.8, history=history)
        assert_that(ids(out["articles"], "KeptIds"), equal_to(["a"]), label="kept")


@pytest.mark.parametrize("kwargs", [{"threshold": 0.0}, {"threshold": 1.5}, {"bucket_cap": 1}])
def test_dedupe_validates_arguments(kwargs):
    with pytest.raises(ValueError):
        DedupeArticles(**kwargs)


# ---------------------------------------------------------------------------
# decide_in_passes: the same decisions over re-readable records


def passes(articles, history=(), bucket_cap=DEFAULT_BUCKET_CAP, tmp_path=None, threshold=0.8):
    fps = [fingerprint(a) for a in articles]
    counters = Counter()
    scratch = str(tmp_path / "shingles.bin")
    out = list(decide_in_passes(lambda: iter(fps), lambda: iter(history), scratch, threshold, bucket_cap,
                                counters=counters))
    dups = sorted((r["id"], r["duplicate_of"], r["method"], round(r["similarity"], 6))
                  for kind, r, fp in out if kind == "duplicate" and fp["id"] == r["id"])
    kept = sorted(r["id"] for kind, r, fp in out if kind == "fingerprint" and fp is r)
    return kept, dups, counters


def test_passes_exact_near_chain_ties(tmp_path):
    kept, dups, counters = passes(fix_hashes(corpus()), tmp_path=tmp_path)
    assert kept == sorted(["a", "c", "n", "u", "t1"])
    assert dups == sorted(expected_duplicates())
    assert counters["dedupe:kept"] == 5
    assert counters["dedupe:near_duplicates"] == 3 and counters["dedupe:exact_duplicates"] == 2


def test_passes_oversized_bucket_still_folds_boilerplate(tmp_path):
    page = story(9, 150)
    pages = fix_hashes([art(f"p{i:02d}", edit(page, [140], f"v{i}"), f"2024-01-{i + 1:02d}") for i in range(12)])
    kept, dups, counters = passes(pages, bucket_cap=4, tmp_path=tmp_path)
    assert kept == ["p00"]
    assert {(d[1], d[2]) for d in dups} == {("p00", "near")} and len(dups) == 11
    assert counters["dedupe:oversized_buckets"] > 0


def test_passes_history_across_runs(tmp_path):
    first = fix_hashes([art("old", BASE, "2024-05-01"), art("other", story(5), "2024-05-01")])
    history = [fingerprint(a) for a in first]
    second = fix_hashes([
        art("exact", text(BASE).lower(), "2020-01-01"),
        art("near", CHAIN_B, "2020-01-01"),
        art("old", BASE, "2024-05-01"),
        art("new", story(6)),
    ])
    kept, dups, counters = passes(second, history, tmp_path=tmp_path)
    assert kept == ["new"]
    assert dups == [("exact", "old", "exact", 1.0), ("near", "old", "near", round(sim(text(BASE), text(CHAIN_B)), 6))]
    assert counters["dedupe:already_in_history"] == 1
    assert counters["dedupe:history_duplicates"] == 1  # near: into history; exact: at "old", seen again
    assert counters["dedupe:history_fingerprints"] == 2


def test_passes_history_of_another_scheme_is_exact_only(tmp_path):
    old = {**fingerprint(fix_hashes([art("old", BASE, "2024-05-01")])[0]), "shingle_scheme": "chars3-md5"}
    kept, dups, counters = passes(fix_hashes([art("exact", BASE), art("near", CHAIN_B)]), [old], tmp_path=tmp_path)
    assert kept == ["near"]
    assert dups == [("exact", "old", "exact", 1.0)]
    assert counters["dedupe:history_other_shingle_scheme"] == 1


@pytest.mark.parametrize("seed", [11, 12])
def test_passes_give_what_the_beam_transform_gives(test_pipeline, tmp_path, seed):
    """Near copies, exact copies, template pages, ties and history, shuffled:
    every decision and counter of the two implementations is equal."""
    rng = random.Random(seed)
    arts = []
    for s in range(25):
        base = story(1000 + s, rng.randint(20, 200))
        arts.append(art(f"s{s}", base, rng.choice([None, "2024-01-01", f"2024-02-{s % 28 + 1:02d}"])))
        for c in range(rng.randint(0, 4)):
            kind = rng.random()
            words = base if kind < 0.3 else edit(base, rng.sample(range(len(base)), rng.randint(1, 6)), f"e{c}")
            arts.append(art(f"s{s}c{c}", words, rng.choice([None, "2023-12-31", "2024-01-01"])))
    arts = fix_hashes(arts)
    rng.shuffle(arts)
    history = [fingerprint(a) for a in arts[:6]]
    history[0] = {**history[0], "id": "h-only"}
    current = arts[3:]
    kept, dups, counters = passes(current, history, bucket_cap=3, tmp_path=tmp_path)

    p = test_pipeline()
    hist = p | "History" >> beam.Create(history)
    out = p | "Articles" >> beam.Create(current) | DedupeArticles(0.8, history=hist, bucket_cap=3)
    assert_that(ids(out["fingerprints"], "FpIds"), equal_to(kept), label="kept")
    assert_that(dup_tuples(out["duplicates"], "DupTuples"), equal_to(dups), label="dups")
    result = p.run()
    result.wait_until_finish()
    beam_counters = Counter()
    for c in result.metrics().query(MetricsFilter().with_namespace("dedupe"))["counters"]:
        beam_counters[c.key.metric.name] += c.committed  # one entry per step that counts the name
    assert {f"dedupe:{k}": v for k, v in beam_counters.items() if v} == {k: v for k, v in counters.items() if v}
    assert dups, "the corpus must contain duplicates for the comparison to mean anything"


# --- scripts written without spaces ------------------------------------------------------------

ZH = ("北京市政府今天宣布，将在明年春季开放三座新的城市公园，并扩建地铁线路以缓解交通压力。"
      "市民代表表示欢迎，但也希望政府公开工程预算，接受社会监督。专家认为，这些项目有助于改善空气质量。")


def _words5_only(text_):
    """The earlier words5-blake2b32 scheme, written out."""
    import hashlib

    from pipelines.clean import normalise_for_hash

    tokens = normalise_for_hash(text_).split()
    span = min(5, len(tokens))
    return sorted({int.from_bytes(hashlib.blake2b(" ".join(tokens[i:i + span]).encode(), digest_size=4).digest(),
                                  "little") for i in range(len(tokens) - span + 1)})


def test_spaced_text_keeps_the_shingles_of_the_earlier_scheme():
    for words in (story(1), story(2, 3), ["Le", "président,", "a", "parlé"] * 4):
        assert list(shingle_hashes(text(words))) == _words5_only(text(words))


def test_unspaced_text_is_shingled_by_characters():
    assert len(shingle_hashes(ZH)) > 50  # one whitespace token, yet many shingles
    changed = ZH.replace("春季", "秋季").replace("监督", "监察")  # 2 of ~90 characters
    assert sim(ZH, changed) >= 0.8
    assert sim(ZH, ZH[len(ZH) // 2:] + ZH[:len(ZH) // 2]) < 0.99
    assert sim(ZH, "上海的天气预报说，周末将有大雨，提醒市民出行注意安全，并减少不必要的外出活动。") < 0.1


def test_thai_marks_count_in_character_shingles():
    # Two words that differ only in a vowel mark: word shingles of the
    # normalised text would drop the mark and see the same letters.
    assert sim("ใกล้ไกล", "ใกลไกล") < 1.0


def test_chinese_near_copy_is_a_near_duplicate(test_pipeline):
    copy = ZH.replace("春季", "秋季")
    arts = fix_hashes([art("a", ZH, "2024-05-01"), art("b", copy, "2024-05-02"),
                       art("c", "上海的天气预报说，周末将有大雨，提醒市民出行注意安全，并减少不必要的外出活动。")])
    with test_pipeline() as p:
        out = p | beam.Create(arts) | DedupeArticles(0.8)
        assert_that(ids(out["articles"], "KeptIds"), equal_to(["a", "c"]), label="kept")
        assert_that(out["duplicates"] | beam.Map(lambda d: (d["id"], d["duplicate_of"], d["method"])),
                    equal_to([("b", "a", "near")]), label="dups")


def test_chinese_near_copy_is_a_near_duplicate_in_passes_too(tmp_path):
    other = "上海的天气预报说，周末将有大雨，提醒市民出行注意安全，并减少不必要的外出活动。"
    arts = fix_hashes([art("a", ZH, "2024-05-01"), art("b", ZH.replace("春季", "秋季"), "2024-05-02"),
                       art("c", other)])
    kept, dups, _ = passes(arts, tmp_path=tmp_path)
    assert kept == ["a", "c"]
    assert [(d[0], d[1], d[2]) for d in dups] == [("b", "a", "near")]
