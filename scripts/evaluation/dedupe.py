"""Dedupe on a bbc-news-style folder: pair precision and recall of the real read+clean+dedupe stages.

The folder holds ``articles/**.txt``, ``index.tsv`` (``exact_dup_group``: same
id = byte-identical files) and ``similar_pairs.tsv`` (word 5-gram Jaccard of
article pairs, a computed measurement). The pipeline's own ``ReadArticles``,
``CleanArticles`` and ``DedupeArticles`` run on Beam's FnApiRunner over the
``articles`` folder; nothing else of the pipeline runs.

Pairs are unordered pairs of article paths.

* True pairs: every pair inside an ``exact_dup_group``, plus every pair of
  ``similar_pairs.tsv`` with ``jaccard_word5gram >= --threshold``.
* Found pairs: every pair of articles in one kept group, a kept group being a
  kept article and all duplicates whose ``duplicate_of`` is it (so a duplicate
  is paired with its kept article and with its fellow duplicates). The
  figures for direct pairs only, (duplicate, duplicate_of), are printed too.

Precision = |found & true| / |found|, recall = |found & true| / |true|;
``exact_recall`` is the recall over the byte-identical pairs alone.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from evaluation import read_json_shards

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "bbc-news"
MAX_LISTED = 10


def add_arguments(parser) -> None:
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="bbc-news-style folder (default: ../shared/data/bbc-news from the repo root)")
    parser.add_argument("--threshold", type=float, default=0.8,
                        help="near-duplicate Jaccard threshold, for the pipeline and the truth (default: 0.8)")
    parser.add_argument("--workers", type=int, default=1,
                        help="FnApiRunner worker processes (default: 1)")


def pairs_of(members) -> set[frozenset]:
    return {frozenset(pair) for pair in itertools.combinations(sorted(set(members)), 2)}


def truth_pairs(data: Path, threshold: float) -> tuple[set[frozenset], set[frozenset], dict[frozenset, float]]:
    """(exact pairs, all true pairs, Jaccard of every listed pair)."""
    groups = defaultdict(list)
    with open(data / "index.tsv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["exact_dup_group"]:
                groups[row["exact_dup_group"]].append(row["path"])
    exact = set().union(*(pairs_of(paths) for paths in groups.values()))
    similarity = {}
    near = set()
    with open(data / "similar_pairs.tsv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            pair = frozenset((row["path_a"], row["path_b"]))
            similarity[pair] = float(row["jaccard_word5gram"])
            if similarity[pair] >= threshold:
                near.add(pair)
    return exact, exact | near, similarity


def found_pairs(kept: list[dict], duplicates: list[dict], path_of: dict[str, str]) -> tuple[set, set]:
    """(pairs within kept groups, direct (duplicate, duplicate_of) pairs)."""
    groups = defaultdict(list)
    for k in kept:
        groups[k["id"]].append(path_of[k["id"]])
    direct = set()
    for d in duplicates:
        groups[d["duplicate_of"]].append(path_of[d["id"]])
        direct.add(frozenset((path_of[d["id"]], path_of[d["duplicate_of"]])))
    grouped = set().union(*(pairs_of(members) for members in groups.values())) if groups else set()
    return grouped, direct


def scores(found: set, true: set) -> tuple[float, float]:
    hit = len(found & true)
    return (hit / len(found) if found else 1.0), (hit / len(true) if true else 1.0)


def run_stage(data: Path, threshold: float, workers: int) -> tuple[list[dict], list[dict], int, float]:
    """(kept, duplicates, clean rejections, seconds) from the Beam stages on ``data/articles``."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.clean import CleanArticles
    from pipelines.dedupe import DedupeArticles
    from pipelines.plan import plan_inputs
    from pipelines.read import ReadArticles, write_plan

    files = plan_inputs([str(data / "articles")])
    options = {"runner": "FnApiRunner", "direct_num_workers": workers}
    if workers > 1:
        options["direct_running_mode"] = "multi_processing"
    with tempfile.TemporaryDirectory(prefix="newsbeam-eval-dedupe-") as tmp:
        plan = os.path.join(tmp, "plan.jsonl")
        write_plan(files, plan)
        start = time.monotonic()
        with beam.Pipeline(options=PipelineOptions(flags=[], **options)) as p:
            read = p | "Read" >> ReadArticles(plan, 10 * 1024 * 1024)
            clean = read["articles"] | "Clean" >> CleanArticles()
            deduped = clean["articles"] | "Dedupe" >> DedupeArticles(threshold)
            (deduped["articles"]
             | "KeptJson" >> beam.Map(lambda a: json.dumps({"id": a["id"], "source": a["source"]}))
             | "WriteKept" >> beam.io.WriteToText(os.path.join(tmp, "kept")))
            (deduped["duplicates"]
             | "DupJson" >> beam.Map(json.dumps)
             | "WriteDups" >> beam.io.WriteToText(os.path.join(tmp, "dups")))
            ((read["rejected"], clean["rejected"]) | "Rejected" >> beam.Flatten()
             | "RejectedJson" >> beam.Map(lambda r: json.dumps({"source": r["source"], "reason": r["reason"]}))
             | "WriteRejected" >> beam.io.WriteToText(os.path.join(tmp, "rejected")))
        seconds = time.monotonic() - start

        kept, dups, rejected = (read_json_shards(tmp, name) for name in ("kept", "dups", "rejected"))
        return kept, dups, len(rejected), seconds


def run(args) -> dict:
    data = Path(args.data)
    exact_true, true, similarity = truth_pairs(data, args.threshold)
    kept, duplicates, rejected, seconds = run_stage(data, args.threshold, args.workers)

    path_of = {r["id"]: os.path.relpath(r["source"], data).replace(os.sep, "/") for r in [*kept, *duplicates]}
    found, direct = found_pairs(kept, duplicates, path_of)
    precision, recall = scores(found, true)
    direct_precision, direct_recall = scores(direct, true)
    exact_recall = len(found & exact_true) / len(exact_true) if exact_true else 1.0
    near_true = true - exact_true
    near_recall = len(found & near_true) / len(near_true) if near_true else 1.0
    by_method = defaultdict(int)
    for d in duplicates:
        by_method[d["method"]] += 1

    print(f"dedupe on {data}: {len(kept) + len(duplicates)} articles ({rejected} rejected before dedupe), "
          f"{len(kept)} kept, {len(duplicates)} duplicates "
          f"({', '.join(f'{m} {n}' for m, n in sorted(by_method.items()))}) in {seconds:.1f}s")
    print(f"  true pairs:  {len(true)} ({len(exact_true)} byte-identical, {len(near_true)} with Jaccard >= "
          f"{args.threshold})")
    print(f"  found pairs: {len(found)} within kept groups ({len(direct)} direct duplicate->kept)")
    print(f"  precision {precision:.4f}  recall {recall:.4f}  exact recall {exact_recall:.4f}  "
          f"near recall {near_recall:.4f}")
    print(f"  direct pairs only: precision {direct_precision:.4f}  recall {direct_recall:.4f}")
    for label, pairs in (("missed", true - found), ("spurious", found - true)):
        for pair in sorted(pairs, key=sorted)[:MAX_LISTED]:
            a, b = sorted(pair)
            listed = similarity.get(pair)
            print(f"  {label}: {a} {b} (listed Jaccard {listed if listed is not None else '< 0.2'})")
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "exact_recall": round(exact_recall, 4),
        "near_recall": round(near_recall, 4),
        "direct_precision": round(direct_precision, 4),
        "direct_recall": round(direct_recall, 4),
        "true_pairs": len(true),
        "found_pairs": len(found),
        "true_found_pairs": len(found & true),
        "articles": len(kept) + len(duplicates),
        "kept": len(kept),
        "duplicates": dict(sorted(by_method.items())),
        "threshold": args.threshold,
        "seconds": round(seconds, 2),
    }
