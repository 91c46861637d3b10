"""Near duplicates in scripts written without spaces: zh/ja/th near copies built from lingua sentences.

Articles: each run of ``--sentences`` consecutive lines of
``lingua-langid/sentences/<lang>.txt`` (disjoint runs) is one distinct
article; each gets one near copy with ``--edit-rate`` of its non-space
characters edited (a seeded mix of substitutions by another character of the
same article, insertions and deletions). Spaced languages (en by default) are
a control: the word 5-gram part of the scheme must behave as before.

Two measurements:

* Shingle choice (pure functions, no Beam): for the old words-only scheme and
  character n-grams of 2 to 5, the Jaccard similarity of every (article, near
  copy) pair (median, minimum, share >= threshold) and the highest
  similarity between two distinct articles.
* Through the stages: raw records go through the pipeline's own
  ``CleanArticles`` (default ``--min-words``) and ``DedupeArticles`` on
  Beam's FnApiRunner. True pairs are (article, its copy); found pairs are the
  pairs within kept groups, as in ``scripts/evaluate.py dedupe``. Per
  language: recall, precision, and how many distinct articles were folded
  into another distinct article (must be 0).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from evaluation import read_json_shards

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "lingua-langid"
DEFAULT_LANGUAGES = "zh,ja,th,en"
CHAR_SIZES = (2, 3, 4, 5)


def add_arguments(parser) -> None:
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="lingua-langid folder (default: ../shared/data/lingua-langid from the repo root)")
    parser.add_argument("--languages", default=DEFAULT_LANGUAGES,
                        help=f"comma-separated sentence files to use (default: {DEFAULT_LANGUAGES})")
    parser.add_argument("--sentences", type=int, default=7, help="sentences per article (default: 7)")
    parser.add_argument("--edit-rate", type=float, default=0.02,
                        help="share of non-space characters edited in a near copy (default: 0.02)")
    parser.add_argument("--threshold", type=float, default=0.8,
                        help="near-duplicate Jaccard threshold (default: 0.8, the pipeline's)")
    parser.add_argument("--seed", type=int, default=16, help="random seed of the edits (default: 16)")


def articles_of(data: Path, lang: str, sentences: int) -> list[str]:
    lines = [line.strip() for line in (data / "sentences" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    return ["\n\n".join(lines[i:i + sentences]) for i in range(0, len(lines) - sentences + 1, sentences)]


def near_copy(text: str, rate: float, rng: random.Random) -> tuple[str, int]:
    """(copy, edits): ``rate`` of the non-space characters substituted,
    deleted or preceded by an inserted character, each drawn from the text."""
    chars = list(text)
    positions = [i for i, ch in enumerate(chars) if not ch.isspace()]
    edits = max(1, round(rate * len(positions)))
    alphabet = [chars[i] for i in positions]
    for i in sorted(rng.sample(positions, edits), reverse=True):
        op = rng.choice(("substitute", "delete", "insert"))
        other = rng.choice([ch for ch in alphabet if ch != chars[i]] or ["x"])
        if op == "substitute":
            chars[i] = other
        elif op == "delete":
            del chars[i]
        else:
            chars.insert(i, other)
    return "".join(chars), edits


def words_only_hashes(text: str):
    """The shingles of the earlier words5-blake2b32 scheme: word 5-grams of the whole normalised text."""
    import hashlib

    import numpy as np

    from pipelines.clean import normalise_for_hash
    from pipelines.dedupe import SHINGLE_WORDS

    tokens = normalise_for_hash(text).split()
    if not tokens:
        return np.zeros(0, dtype="<u4")
    span = min(SHINGLE_WORDS, len(tokens))
    grams = (" ".join(tokens[i:i + span]) for i in range(len(tokens) - span + 1))
    hashes = {int.from_bytes(hashlib.blake2b(g.encode("utf-8"), digest_size=4).digest(), "little") for g in grams}
    return np.array(sorted(hashes), dtype="<u4")


def shingle_choice(corpus: dict[str, tuple[list[str], list[str]]], threshold: float) -> dict:
    """Per language and scheme: near-copy similarities and the highest distinct-pair similarity."""
    from pipelines.clean import clean_text
    from pipelines.dedupe import jaccard, shingle_hashes

    schemes = {"words5 (old)": words_only_hashes}
    for n in CHAR_SIZES:
        schemes[f"words5-chars{n}"] = lambda t, n=n: shingle_hashes(t, chars=n)
    out: dict = {}
    for lang, (bases, copies) in corpus.items():
        out[lang] = {}
        for name, hashes_of in schemes.items():
            base_h = [hashes_of(clean_text(t)) for t in bases]
            copy_h = [hashes_of(clean_text(t)) for t in copies]
            near = [jaccard(a, b) for a, b in zip(base_h, copy_h)]
            distinct = max((jaccard(a, b) for a, b in itertools.combinations(base_h, 2)), default=0.0)
            out[lang][name] = {
                "near_median": round(statistics.median(near), 4),
                "near_min": round(min(near), 4),
                "near_at_threshold": round(sum(s >= threshold for s in near) / len(near), 4),
                "distinct_max": round(distinct, 4),
                "shingles_per_article": round(statistics.mean(len(h) for h in base_h), 1),
            }
    return out


def raw_record(id_: str, text: str) -> dict:
    return {"id": id_, "source": f"{id_}.txt", "format": "text", "title": None, "text": text, "author": None,
            "published": None, "url": None, "language_hint": None}


def run_stage(records: list[dict], threshold: float) -> tuple[list[dict], list[dict], list[dict], float]:
    """(kept, duplicates, clean rejections, seconds) from CleanArticles + DedupeArticles on FnApiRunner."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.clean import CleanArticles
    from pipelines.dedupe import DedupeArticles

    with tempfile.TemporaryDirectory(prefix="newsbeam-eval-dedupe-scripts-") as tmp:
        start = time.monotonic()
        with beam.Pipeline(options=PipelineOptions(flags=[], runner="FnApiRunner")) as p:
            clean = p | "Records" >> beam.Create(records) | "Clean" >> CleanArticles()
            deduped = clean["articles"] | "Dedupe" >> DedupeArticles(threshold)
            for name, pcoll in (("kept", deduped["articles"]), ("dups", deduped["duplicates"]),
                                ("rejected", clean["rejected"])):
                (pcoll
                 | f"{name}Json" >> beam.Map(lambda r: json.dumps({k: r.get(k) for k in (
                     "id", "duplicate_of", "method", "similarity", "reason", "message")}))
                 | f"{name}Write" >> beam.io.WriteToText(os.path.join(tmp, name)))
        seconds = time.monotonic() - start

        kept, dups, rejected = (read_json_shards(tmp, name) for name in ("kept", "dups", "rejected"))
        return kept, dups, rejected, seconds


def stage_scores(lang_of: dict[str, str], kept: list[dict], duplicates: list[dict]) -> dict:
    """Per language: recall and precision over (article, copy) pairs, distinct articles folded."""
    groups = defaultdict(list)
    for k in kept:
        groups[k["id"]].append(k["id"])
    for d in duplicates:
        groups[d["duplicate_of"]].append(d["id"])
    found = {frozenset(pair) for members in groups.values() for pair in itertools.combinations(sorted(members), 2)}
    out = {}
    for lang in sorted(set(lang_of.values())):
        bases = sorted(i for i, lg in lang_of.items() if lg == lang and i.endswith("-a"))
        true = {frozenset((b, b[:-1] + "b")) for b in bases}
        mine = {pair for pair in found if all(lang_of.get(i) == lang for i in pair)}
        hit = len(mine & true)
        base_ids = set(bases)
        folded = sorted(d["id"] for d in duplicates
                        if d["id"] in base_ids and d["duplicate_of"][:-2] != d["id"][:-2])
        similarities = [d["similarity"] for d in duplicates if lang_of.get(d["id"]) == lang]
        out[lang] = {
            "pairs": len(true),
            "recall": round(hit / len(true), 4) if true else 1.0,
            "precision": round(hit / len(mine), 4) if mine else 1.0,
            "distinct_folded": len(folded),
            "min_similarity": round(min(similarities), 4) if similarities else None,
        }
    cross = {pair for pair in found if len({lang_of.get(i) for i in pair}) > 1}
    out["cross_language_pairs"] = len(cross)
    return out


def run(args) -> dict:
    data = Path(args.data)
    rng = random.Random(args.seed)
    corpus: dict[str, tuple[list[str], list[str]]] = {}
    edit_counts = {}
    for lang in [x.strip() for x in args.languages.split(",") if x.strip()]:
        bases = articles_of(data, lang, args.sentences)
        copies, edits = [], []
        for text in bases:
            copy, n = near_copy(text, args.edit_rate, rng)
            copies.append(copy)
            edits.append((n, sum(not ch.isspace() for ch in text)))
        corpus[lang] = (bases, copies)
        edit_counts[lang] = (statistics.median(n for n, _ in edits), statistics.median(c for _, c in edits))

    print(f"near copies with {args.edit_rate:.1%} of non-space characters edited, {args.sentences}-sentence articles "
          f"from {data}/sentences, threshold {args.threshold}")
    for lang, (bases, _) in corpus.items():
        n, chars = edit_counts[lang]
        print(f"  {lang}: {len(bases)} articles + {len(bases)} copies (median {chars:.0f} characters, {n:.0f} edits)")

    choice = shingle_choice(corpus, args.threshold)
    print("shingle choice (Jaccard of article and copy: median / min / share >= threshold; "
          "highest between distinct articles; shingles per article)")
    for lang, schemes in choice.items():
        for name, f in schemes.items():
            print(f"  {lang} {name:<16} near {f['near_median']:.3f} / {f['near_min']:.3f} / "
                  f"{f['near_at_threshold']:.3f}   distinct max {f['distinct_max']:.3f}   "
                  f"{f['shingles_per_article']:.0f} shingles")

    records, lang_of = [], {}
    for lang, (bases, copies) in corpus.items():
        for i, (text, copy) in enumerate(zip(bases, copies)):
            for suffix, body in (("a", text), ("b", copy)):
                id_ = f"{lang}-{i:04d}-{suffix}"
                records.append(raw_record(id_, body))
                lang_of[id_] = lang
    kept, duplicates, rejected, seconds = run_stage(records, args.threshold)
    scores = stage_scores(lang_of, kept, duplicates)
    print(f"through CleanArticles + DedupeArticles (FnApiRunner): {len(records)} records, {len(kept)} kept, "
          f"{len(duplicates)} duplicates, {len(rejected)} rejected by clean, {seconds:.1f}s")
    for reason in sorted({r["reason"] for r in rejected}):
        print(f"  rejected {reason}: {sum(r['reason'] == reason for r in rejected)}")
    for lang in corpus:
        s = scores[lang]
        print(f"  {lang}: recall {s['recall']:.4f}  precision {s['precision']:.4f}  "
              f"distinct articles folded {s['distinct_folded']}  lowest similarity {s['min_similarity']}")
    print(f"  pairs across languages: {scores['cross_language_pairs']}")
    # Flat per-language figures, so `evaluate.py all` can check them against the targets.
    flat = {f"{lang}_{key}": scores[lang][key] for lang in corpus for key in ("recall", "precision",
                                                                             "distinct_folded")}
    return {
        **flat,
        "languages": {lang: scores[lang] for lang in corpus},
        "cross_language_pairs": scores["cross_language_pairs"],
        "rejected": len(rejected),
        "shingle_choice": choice,
        "edit_rate": args.edit_rate,
        "threshold": args.threshold,
        "seconds": round(seconds, 2),
    }
