"""Dedupe stage: fold exact and near-duplicate articles into one kept article.

How it decides, in order:

1. **Exact.** Articles are grouped by ``content_hash`` (the hash of
   ``clean.normalise_for_hash(text)``, set by the clean stage), together with the
   history fingerprints of earlier runs. A group that contains a history
   fingerprint makes every article in it an ``exact`` duplicate of that earlier
   id; otherwise the keep-rule winner represents the group and the others wait
   to learn whether that winner survives step 3. Thousands of identical
   boilerplate pages therefore collapse to one representative before any
   near-duplicate work.
2. **Candidates.** Each representative (and each history fingerprint) is cut
   into shingles (word 5-grams; character 3-grams in scripts written without
   spaces), hashed to 32 bits; a datasketch MinHash of those
   hashes is split into LSH bands and every band value becomes a Beam key. Only
   articles sharing a band bucket are ever compared, so cost grows with the
   input, not its square. A bucket of at most ``bucket_cap`` members yields all
   its pairs; a bigger one (a template shared by many pages) only pairs every
   member with the bucket's keep-rule winner, so it costs one pass and O(cap)
   memory (counter ``dedupe:oversized_buckets``).
3. **Verification.** Each distinct candidate pair is checked with the exact
   Jaccard similarity of the two shingle sets; pairs at or above ``threshold``
   are edges.
4. **Resolution (greedy star clustering).** Articles are visited in keep order
   (history first, then earliest ``published``, undated last, then smallest
   ``id``): an article is a ``near`` duplicate of the earliest already-kept
   article it is an edge with, otherwise it is kept. So ``duplicate_of`` always
   names a kept article and ``similarity`` is always the verified similarity to
   it (>= threshold). A chain A~B, B~C with A !~ C (A first) resolves to A kept,
   B duplicate of A, C kept. This step sees only the verified edges (ids, keep
   order and similarity: a few hundred bytes per duplicate), gathered on one
   worker because clusters can span any two buckets.

Exact duplicates of a representative that turns out to be a near duplicate are
pointed at the article it was folded into, as ``near`` with the same similarity
(identical normalised text has identical shingles).

Every decision depends only on article content, ``published`` and ``id``, never
on arrival order, bundle boundaries or the number of workers.

Cross-run history: ``WriteFingerprints(state_dir)`` persists the fingerprints of
the articles kept by a run as Avro (``schemas/fingerprint.avsc``) under
``<state_dir>/dedupe/``; ``ReadFingerprints(state_dir)`` reads them back (an
absent or empty folder is an empty history) to pass as ``history``. History
articles are always kept and win over anything in the current run.
"""

from __future__ import annotations

import hashlib
import itertools
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines.clean import UNSPACED_LETTER, has_unspaced_letter, normalise_for_hash
from pipelines.records import load_schema, read_avro_matched
from pipelines.write import WriteRecords

__all__ = [
    "DEFAULT_BUCKET_CAP",
    "HISTORY_FOLDER",
    "SHINGLE_SCHEME",
    "DedupeArticles",
    "DedupeDecisions",
    "FingerprintArticles",
    "KeepUnique",
    "ReadFingerprints",
    "WriteFingerprints",
    "band_keys",
    "bucket_pairs",
    "decide_in_passes",
    "fingerprint",
    "jaccard",
    "keep_order",
    "lsh_bands",
    "node_order",
    "resolve_exact_group",
    "resolve_near",
    "resolve_near_numbered",
    "shingle_hashes",
    "unpack_shingles",
]

STAGE = "dedupe"
DUPLICATES_TAG = "duplicates"
PENDING_TAG = "pending"
FINGERPRINTS_TAG = "fingerprints"
HISTORY_FOLDER = "dedupe"
FINGERPRINT_SCHEMA = "fingerprint"

SHINGLE_WORDS = 5
# Scripts written without spaces (clean.UNSPACED_LETTER) are shingled by
# characters: word 5-grams never match there (one "word" per sentence).
# Character 3-grams were chosen on zh/ja/th near copies (scripts/evaluate.py
# dedupe-scripts; figures in the README).
SHINGLE_CHARS = 3
# Names how fingerprint shingles are made; history written under another
# scheme is still used for exact matching but not compared for near matching.
# "words5-blake2b32" (before unspaced scripts were shingled by characters)
# made the same shingles for text without unspaced-script letters.
SHINGLE_SCHEME = "words5-chars3-blake2b32"
NUM_PERM = 128
MINHASH_SEED = 1
# Chance that a pair exactly at the threshold shares at least one band; LSH
# bands are chosen as the narrowest (fewest spurious candidates) that reach it.
MIN_CANDIDATE_RECALL = 0.995
DEFAULT_BUCKET_CAP = 32
# Candidate pairs turned into Python ints at a time during verification.
PAIRS_PER_CHUNK = 1 << 16

HISTORY_RANK = 0
CURRENT_RANK = 1


# ---------------------------------------------------------------------------
# Pure core


def keep_order(article: dict) -> tuple:
    """Sort key: the first article in this order is the one kept."""
    published = article.get("published")
    return (published is None, published or "", article["id"])


def node_order(record: dict, history: bool) -> tuple:
    """Keep order across runs: every history article precedes every current one."""
    return (HISTORY_RANK if history else CURRENT_RANK, *keep_order(record))


def duplicate_record(article: dict, kept_id: str, method: str, similarity: float) -> dict:
    return {
        "id": article["id"],
        "source": article["source"],
        "duplicate_of": kept_id,
        "method": method,
        "similarity": float(similarity),
    }


def resolve_exact_group(articles: Iterable[dict], history: Iterable[dict] = ()) -> tuple[dict | None, list[dict]]:
    """(kept article or None, duplicate records) for one content hash.

    Without history the keep-rule winner is kept and the rest point at it.
    With history the earliest history fingerprint wins and nothing new is
    kept, except an article whose id is already in the history (the same
    input seen again), which stays kept rather than becoming a duplicate of
    itself.
    """
    ordered = sorted(articles, key=keep_order)
    history = sorted(history, key=keep_order)
    if not ordered:
        return None, []
    if history:
        seen_ids = {h["id"] for h in history}
        seen = [a for a in ordered if a["id"] in seen_ids]
        if seen:
            kept = seen[0]
            return kept, [duplicate_record(a, kept["id"], "exact", 1.0) for a in ordered if a is not kept]
        return None, [duplicate_record(a, history[0]["id"], "exact", 1.0) for a in ordered]
    kept = ordered[0]
    return kept, [duplicate_record(a, kept["id"], "exact", 1.0) for a in ordered[1:]]


def _hashes32(shingles: Iterable[str]) -> np.ndarray:
    """Each shingle's 4-byte blake2b digest read as a little-endian uint32."""
    blake2b = hashlib.blake2b
    return np.frombuffer(b"".join(blake2b(s.encode("utf-8"), digest_size=4).digest() for s in shingles), dtype="<u4")


def _runs(text: str) -> Iterator[tuple[bool, list[str]]]:
    """(unspaced, tokens) for each run of consecutive whitespace tokens that
    do / do not hold letters of a script written without spaces."""
    tokens = text.split()
    # One scan of the whole text settles most of them: no unspaced letter, one spaced run.
    if not has_unspaced_letter(text):
        return iter([(False, tokens)] if tokens else [])
    return itertools.groupby(tokens, key=lambda token: UNSPACED_LETTER.search(token) is not None)


def _grams(units, span: int) -> Iterator:
    span = min(span, len(units))
    return (units[i:i + span] for i in range(len(units) - span + 1))


def _unspaced_chars(tokens: Iterable[str]) -> str:
    # Letters, combining marks (Thai vowels and tones) and digits, with case and
    # width folded; spaces and punctuation between them do not count.
    folded = unicodedata.normalize("NFKC", "".join(tokens)).casefold()
    return "".join(ch for ch in folded if ch.isalnum() or unicodedata.category(ch).startswith("M"))


def shingle_hashes(text: str, words: int = SHINGLE_WORDS, chars: int = SHINGLE_CHARS) -> np.ndarray:
    """Sorted unique 32-bit hashes of the text's shingles (``SHINGLE_SCHEME``).

    Runs of whitespace tokens in spaced scripts give the word ``words``-grams
    of their normalised text (``clean.normalise_for_hash``); runs of tokens
    holding letters of an unspaced script give the character ``chars``-grams
    of their letters, marks and digits. A run shorter than one shingle is a
    single shingle; text without a word character has none (it can still be an
    exact duplicate). Text without unspaced-script letters gets exactly the
    shingles of the earlier "words5-blake2b32" scheme.
    """
    runs = []
    for unspaced, tokens in _runs(text):
        if unspaced:
            letters = _unspaced_chars(tokens)
            # A prefix no word shingle has, so "abc" from a mixed run never meets the word "abc".
            runs.append(_hashes32("\x00" + gram for gram in _grams(letters, chars) if gram))
        else:
            normalised = normalise_for_hash(" ".join(tokens)).split()
            runs.append(_hashes32(" ".join(gram) for gram in _grams(normalised, words) if gram))
    return np.unique(np.concatenate(runs)).astype("<u4") if runs else np.zeros(0, dtype="<u4")


def unpack_shingles(packed: bytes) -> np.ndarray:
    return np.frombuffer(packed, dtype="<u4")


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted unique hash arrays (0.0 when either is empty)."""
    if not len(a) or not len(b):
        return 0.0
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (len(a) + len(b) - inter)


def lsh_bands(threshold: float, num_perm: int = NUM_PERM, min_recall: float = MIN_CANDIDATE_RECALL) -> tuple[int, int]:
    """(bands, rows per band) for a MinHash of ``num_perm`` values.

    A pair of Jaccard similarity s shares a band with probability
    1 - (1 - s**rows)**bands. We take the most rows (fewest candidates among
    dissimilar articles) for which a pair exactly at ``threshold`` is a
    candidate with probability >= ``min_recall``. Candidates are verified
    exactly afterwards, so spare candidates cost time, never precision.
    datasketch's own MinHashLSH parameter search balances false positives
    against false negatives instead (at 0.8 it picks 9 bands of 13 rows,
    which finds a pair at 0.8 only 40% of the time).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError("threshold must be in (0, 1]")
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1.0 - (1.0 - threshold ** rows) ** bands >= min_recall:
            return bands, rows
    return num_perm, 1


def _identity(value):
    return value


_PERMUTATIONS: dict[tuple[int, int], np.ndarray] = {}


def minhash_signature(shingles: np.ndarray, num_perm: int = NUM_PERM, seed: int = MINHASH_SEED) -> np.ndarray:
    """datasketch MinHash (affine32 scheme) of already-hashed shingles."""
    from datasketch import MinHash

    key = (num_perm, seed)
    if key not in _PERMUTATIONS:
        _PERMUTATIONS[key] = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    m = MinHash(num_perm=num_perm, seed=seed, scheme="affine32", hashfunc=_identity,
                permutations=_PERMUTATIONS[key])
    m.update_batch(shingles.tolist())
    return m.hashvalues


def band_keys(shingles: np.ndarray, bands: int, rows: int) -> list[bytes]:
    """One LSH bucket key per band: band number + that band's MinHash values."""
    if not len(shingles):
        return []
    if bands * rows > NUM_PERM:
        raise ValueError(f"{bands} bands of {rows} rows need more than {NUM_PERM} MinHash values")
    signature = minhash_signature(shingles).astype("<u4")
    return [bytes([i]) + signature[i * rows:(i + 1) * rows].tobytes() for i in range(bands)]


def _comparable(a: tuple, b: tuple) -> bool:
    # History articles were already deduplicated against each other, and an
    # id seen before is the same input, not a duplicate of itself.
    return not (a[0] == HISTORY_RANK and b[0] == HISTORY_RANK) and a[-1] != b[-1]


def bucket_pairs(members: Iterable[tuple], cap: int = DEFAULT_BUCKET_CAP) -> tuple[bool, Iterator[tuple]]:
    """(oversized, candidate pairs (earlier, later)) of one LSH bucket of node orders.

    Up to ``cap`` members: every pair. More: each member paired with the
    bucket's first member in keep order only, reading ``members`` twice more
    instead of holding it (Beam's grouped values can be re-iterated).
    """
    if iter(members) is members:  # a one-shot iterator cannot be read again
        members = list(members)
    head = list(itertools.islice(members, cap + 1))
    if len(head) <= cap:
        head.sort()
        return False, ((a, b) for a, b in itertools.combinations(head, 2) if _comparable(a, b))
    first = min(members)
    return True, ((first, m) for m in members if m != first and _comparable(first, m))


def resolve_near(edges: Iterable[tuple]) -> dict[str, tuple[str, float, bool]]:
    """Greedy star clustering over verified edges ``(order_a, order_b, similarity)``.

    Returns {duplicate id: (kept id, similarity, kept is a history article)}
    for the current-run articles that are near duplicates. Nodes are visited
    in keep order; history nodes are always kept; a current node is a duplicate
    of the earliest kept node it shares an edge with, else kept.
    """
    edges = list(edges)
    nodes = sorted({node for a, b, _ in edges for node in (a, b)})
    number = {node: i for i, node in enumerate(nodes)}
    history = np.fromiter((node[0] == HISTORY_RANK for node in nodes), dtype=bool, count=len(nodes))
    decided = resolve_near_numbered(
        np.arange(len(nodes)), history, [number[a] for a, _, _ in edges], [number[b] for _, b, _ in edges],
        [sim for _, _, sim in edges])
    return {nodes[d][-1]: (nodes[k][-1], sim, bool(history[k])) for d, k, sim in decided}


def resolve_near_numbered(ranks, history, a, b, sim) -> Iterator[tuple[int, int, float]]:
    """``resolve_near`` over node numbers, in arrays rather than tuples: what
    stays compact for a million articles. ``ranks[i]`` is node i's place in
    keep order (distinct), ``history[i]`` whether it is a history node, and
    edge k joins nodes ``a[k]`` and ``b[k]`` with similarity ``sim[k]``.
    Yields (duplicate node, kept node, similarity) in keep order."""
    ranks = np.asarray(ranks)
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    sim = np.asarray(sim, dtype=np.float64)
    if not len(a):
        return
    later_first = ranks[b] < ranks[a]
    early, late = np.where(later_first, b, a), np.where(later_first, a, b)
    # Each node's edges to earlier nodes together, earliest partner first: a
    # node's partners were all decided when it is reached.
    by = np.lexsort((sim, ranks[early], ranks[late]))
    early, late, sim = early[by], late[by], sim[by]
    dropped = np.zeros(len(ranks), dtype=bool)
    starts = np.flatnonzero(np.r_[True, late[1:] != late[:-1]])
    for first, end in zip(starts.tolist(), np.r_[starts[1:], len(late)].tolist()):
        node = int(late[first])
        if history[node]:
            continue
        for k in range(first, end):
            if not dropped[early[k]]:
                dropped[node] = True
                yield node, int(early[k]), float(sim[k])
                break


def fingerprint(article: dict) -> dict:
    """The history record of a kept article (schemas/fingerprint.avsc)."""
    return {
        "id": article["id"],
        "source": article["source"],
        "published": article.get("published"),
        "content_hash": article["content_hash"],
        "shingle_scheme": SHINGLE_SCHEME,
        "shingles": shingle_hashes(article["text"]).tobytes(),
    }


# ---------------------------------------------------------------------------
# The same decisions in passes over fingerprint files (bounded memory)


def decide_in_passes(fingerprints: Callable[[], Iterable[dict]], history: Callable[[], Iterable[dict]],
                     scratch: str, threshold: float = 0.8, bucket_cap: int = DEFAULT_BUCKET_CAP,
                     counters: Counter | None = None) -> Iterator[tuple[str, dict, dict]]:
    """The decisions of ``DedupeDecisions``, made in passes over the records
    instead of in one Beam graph, as datatrove does its MinHash dedupe.

    ``fingerprints`` and ``history`` return a fresh iterable of fingerprint
    records each time they are called: every pass reads the records again
    rather than holding them. ``scratch`` is a local file that holds the
    shingles of the articles compared for near duplicates between the pass
    that reads them and verification. Yields ``("duplicate", record, fp)``
    per current article that is not kept and ``("fingerprint", fp, fp)`` per
    article newly kept, where ``fp`` is that article's record as
    ``fingerprints`` gave it (with any key a caller added, such as where it
    was read from); ``counters`` gets the counters the Beam transforms count
    (``dedupe:<name>``).

    What stays in memory is compact: per distinct content hash and per
    article compared its keep order, 12 bytes per LSH band entry, 8 bytes per
    candidate pair and 16 per verified edge. The decisions are those of
    ``DedupeDecisions`` for the same input: the same functions decide
    (``resolve_exact_group``'s rule, ``bucket_pairs``, ``jaccard``, and
    ``resolve_near``'s clustering, here over node numbers) in the same order.
    """
    from array import array

    if not 0.0 < threshold <= 1.0:
        raise ValueError("threshold must be in (0, 1]")
    if bucket_cap < 2:
        raise ValueError("bucket_cap must be at least 2")
    count = counters if counters is not None else Counter()
    bands, rows = lsh_bands(threshold)

    # Pass 1: what decides each content hash's exact group.
    first_in_history: dict[str, tuple] = {}  # hash -> earliest history (keep order)
    history_inputs: set[int] = set()  # hash((id, content hash)) of history records
    for h in history():
        order = keep_order(h)
        known = first_in_history.get(h["content_hash"])
        if known is None or order < known:
            first_in_history[h["content_hash"]] = order
        history_inputs.add(hash((h["id"], h["content_hash"])))
    best: dict[str, tuple] = {}  # hash -> earliest current article (node order)
    seen_again: dict[str, tuple] = {}  # hash -> earliest current article already in the history
    for fp in fingerprints():
        digest, order = fp["content_hash"], node_order(fp, history=False)
        if digest in first_in_history:
            if hash((fp["id"], digest)) in history_inputs:
                if digest not in seen_again or order < seen_again[digest]:
                    seen_again[digest] = order
        elif digest not in best or order < best[digest]:
            best[digest] = order
    del history_inputs

    # Pass 2: the nodes compared for near duplicates (history, and each
    # current exact group's representative), their band keys and shingles.
    orders: list[tuple] = []
    offsets, lengths = array("Q"), array("I")
    band_hashes, band_nodes = array("Q"), array("I")
    with open(scratch, "wb") as spill:
        def add_node(order: tuple, packed: bytes) -> None:
            keys = band_keys(unpack_shingles(packed), bands, rows)
            if not keys:
                count["dedupe:articles_without_shingles"] += 1
            index = len(orders)
            orders.append(order)
            offsets.append(spill.tell())
            lengths.append(len(packed))
            spill.write(packed)
            for key in keys:
                band_hashes.append(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little"))
                band_nodes.append(index)

        for h in history():
            count["dedupe:history_fingerprints"] += 1
            if h.get("shingle_scheme") != SHINGLE_SCHEME:
                count["dedupe:history_other_shingle_scheme"] += 1
                continue
            add_node(node_order(h, history=True), bytes(h["shingles"]))
        for fp in fingerprints():
            order = best.get(fp["content_hash"])
            if order is not None and order[-1] == fp["id"]:
                add_node(order, bytes(fp["shingles"]))

    # Buckets -> distinct candidate pairs, as node numbers. Only buckets of
    # two or more are visited (most are of one), without a Python object per band entry.
    by_key = np.argsort(np.frombuffer(band_hashes, dtype=np.uint64), kind="stable")
    sorted_keys = np.frombuffer(band_hashes, dtype=np.uint64)[by_key]
    members = np.frombuffer(band_nodes, dtype=np.uint32)[by_key]
    del by_key
    del band_hashes[:], band_nodes[:]  # emptied, not unbound: add_node refers to them
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    ends = np.r_[starts[1:], len(sorted_keys)]
    del sorted_keys
    shared = ends - starts >= 2
    starts, ends = starts[shared], ends[shared]
    n = len(orders)
    pairs = array("Q")
    for start, end in zip(starts.tolist(), ends.tolist()):
        number = {orders[i]: i for i in members[start:end].tolist()}
        oversized, bucket = bucket_pairs(list(number), bucket_cap)
        if oversized:
            count["dedupe:oversized_buckets"] += 1
        for a, b in bucket:
            pairs.append(number[a] * n + number[b])
    del members, starts, ends, shared
    distinct = np.unique(np.frombuffer(pairs, dtype=np.uint64)) if len(pairs) else np.zeros(0, np.uint64)
    del pairs

    # Verification: exact Jaccard of each candidate pair, shingles read back;
    # the verified edges kept as numbers.
    edge_a, edge_b, edge_sim = array("I"), array("I"), array("d")
    with open(scratch, "rb") as spill:
        def shingles_of(i: int) -> np.ndarray:
            spill.seek(offsets[i])
            return unpack_shingles(spill.read(lengths[i]))

        last_a, a_shingles = -1, None
        for chunk in range(0, len(distinct), PAIRS_PER_CHUNK):
            for code in distinct[chunk:chunk + PAIRS_PER_CHUNK].tolist():
                a, b = divmod(code, n)
                if a != last_a:
                    last_a, a_shingles = a, shingles_of(a)
                count["dedupe:candidate_pairs"] += 1
                sim = jaccard(a_shingles, shingles_of(b))
                if sim >= threshold:
                    count["dedupe:verified_pairs"] += 1
                    edge_a.append(a)
                    edge_b.append(b)
                    edge_sim.append(sim)
                else:
                    count["dedupe:candidates_below_threshold"] += 1
    del distinct
    ranks = np.empty(n, dtype=np.int64)
    ranks[sorted(range(n), key=orders.__getitem__)] = np.arange(n)
    history_node = np.fromiter((order[0] == HISTORY_RANK for order in orders), dtype=bool, count=n)
    near = {orders[d][-1]: (orders[k][-1], sim, bool(history_node[k]))
            for d, k, sim in resolve_near_numbered(ranks, history_node, edge_a, edge_b, edge_sim)}
    del edge_a, edge_b, edge_sim, ranks, history_node

    # Pass 3: every current article's decision.
    for fp in fingerprints():
        digest, id_ = fp["content_hash"], fp["id"]
        if digest in first_in_history:
            seen = seen_again.get(digest)
            if seen is not None and seen[-1] == id_:
                count["dedupe:already_in_history"] += 1
                continue
            count["dedupe:exact_duplicates"] += 1
            if seen is None:
                count["dedupe:history_duplicates"] += 1
            yield "duplicate", duplicate_record(fp, (seen or first_in_history[digest])[-1], "exact", 1.0), fp
            continue
        representative = best[digest][-1]
        if representative in near:
            kept_id, sim, in_history = near[representative]
            count["dedupe:near_duplicates"] += 1
            if in_history:
                count["dedupe:history_duplicates"] += 1
            yield "duplicate", duplicate_record(fp, kept_id, "near", sim), fp
        elif representative == id_:
            count["dedupe:kept"] += 1
            yield "fingerprint", fp, fp
        else:
            count["dedupe:exact_duplicates"] += 1
            yield "duplicate", duplicate_record(fp, representative, "exact", 1.0), fp


# ---------------------------------------------------------------------------
# Beam


class ResolveExactGroupFn(beam.DoFn):
    """One content hash's articles and history -> representative, or final duplicates."""

    def __init__(self):
        self._history_exact = Metrics.counter(STAGE, "exact_duplicates")
        self._history_matches = Metrics.counter(STAGE, "history_duplicates")
        self._seen = Metrics.counter(STAGE, "already_in_history")

    def process(self, element):
        _, members = element
        articles = [record for kind, record in members if kind == "article"]
        history = [record for kind, record in members if kind == "history"]
        kept, duplicates = resolve_exact_group(articles, history)
        if history:
            if kept is not None:  # kept, and already in the history: nothing to decide or record
                self._seen.inc()
            for dup in duplicates:
                self._history_exact.inc()
                if kept is None:
                    self._history_matches.inc()
                yield beam.pvalue.TaggedOutput(DUPLICATES_TAG, dup)
            return
        if kept is None:
            return
        yield kept
        for dup in duplicates:
            yield beam.pvalue.TaggedOutput(PENDING_TAG, (kept["id"], dup))


class HistoryNodeFn(beam.DoFn):
    """History fingerprints -> near-duplicate nodes (those shingled the way this version does)."""

    def __init__(self):
        self._read = Metrics.counter(STAGE, "history_fingerprints")
        self._incompatible = Metrics.counter(STAGE, "history_other_shingle_scheme")

    def process(self, fp):
        self._read.inc()
        if fp.get("shingle_scheme") != SHINGLE_SCHEME:
            self._incompatible.inc()
            return
        yield fp["id"], (node_order(fp, history=True), bytes(fp["shingles"]))


class BandFn(beam.DoFn):
    def __init__(self, bands: int, rows: int):
        self._bands = bands
        self._rows = rows
        self._unbanded = Metrics.counter(STAGE, "articles_without_shingles")

    def process(self, node):
        _, (order, packed) = node
        keys = band_keys(unpack_shingles(packed), self._bands, self._rows)
        if not keys:
            self._unbanded.inc()
        for key in keys:
            yield key, order


class BucketPairsFn(beam.DoFn):
    def __init__(self, cap: int):
        self._cap = cap
        self._oversized = Metrics.counter(STAGE, "oversized_buckets")

    def process(self, element):
        _, members = element
        oversized, pairs = bucket_pairs(members, self._cap)
        if oversized:
            self._oversized.inc()
        yield from pairs


def _node_for(nodes, order):
    for node_order_, packed in nodes:
        if node_order_ == order:
            return unpack_shingles(packed)
    raise KeyError(f"no fingerprint for {order!r}")


def _attach_left(element):
    """(a id, {nodes, pairs}) -> (b id, (a order, a shingles, b order)) per candidate pair."""
    _, grouped = element
    for a_order, b_order in grouped["pairs"]:
        yield b_order[-1], (a_order, _node_for(grouped["nodes"], a_order), b_order)


class VerifyPairsFn(beam.DoFn):
    """(b id, {nodes, left}) -> verified edges (a order, b order, similarity)."""

    def __init__(self, threshold: float):
        self._threshold = threshold
        self._candidates = Metrics.counter(STAGE, "candidate_pairs")
        self._verified = Metrics.counter(STAGE, "verified_pairs")
        self._below = Metrics.counter(STAGE, "candidates_below_threshold")

    def process(self, element):
        _, grouped = element
        for a_order, a_shingles, b_order in grouped["left"]:
            self._candidates.inc()
            sim = jaccard(a_shingles, _node_for(grouped["nodes"], b_order))
            if sim >= self._threshold:
                self._verified.inc()
                yield a_order, b_order, sim
            else:
                self._below.inc()


class FinalizeFn(beam.DoFn):
    """Representative + its near decision + its waiting exact duplicates ->
    duplicate records, and the representative's fingerprint when it is kept."""

    def __init__(self):
        self._kept = Metrics.counter(STAGE, "kept")
        self._exact = Metrics.counter(STAGE, "exact_duplicates")
        self._near = Metrics.counter(STAGE, "near_duplicates")
        self._history_matches = Metrics.counter(STAGE, "history_duplicates")

    def process(self, element):
        _, grouped = element
        (fp,) = grouped["fingerprint"]
        pending = sorted(grouped["pending"], key=lambda d: d["id"])
        if grouped["near"]:
            ((kept_id, sim, in_history),) = grouped["near"]
            for dup in [duplicate_record(fp, kept_id, "near", sim), *pending]:
                self._near.inc()
                if in_history:
                    self._history_matches.inc()
                yield {**dup, "duplicate_of": kept_id, "method": "near", "similarity": float(sim)}
            return
        self._kept.inc()
        yield beam.pvalue.TaggedOutput(FINGERPRINTS_TAG, fp)
        for dup in pending:
            self._exact.inc()
            yield dup


class KeepUniqueFn(beam.DoFn):
    """(id, {article, duplicate}) -> the article, unless the decisions made it a duplicate.

    An id with a decision and no article is an article of another part of
    the same run (``pipelines.pipeline.build_annotate_phase``)."""

    def process(self, element):
        _, grouped = element
        if not grouped["duplicate"]:
            yield from grouped["article"]


class FingerprintArticles(beam.PTransform):
    """Clean articles -> fingerprint records (``schemas/fingerprint.avsc``): all
    that the dedupe decisions need of an article, a few hundred bytes to a few
    KB instead of the article itself."""

    def expand(self, articles):
        return articles | "Fingerprint" >> beam.Map(fingerprint)


class DedupeDecisions(beam.PTransform):
    """Fingerprints of this run's articles -> {'duplicates': one duplicate record
    per article that is not kept, 'fingerprints': the fingerprints of the
    articles newly kept (the history to record)}.

    Every article without a duplicate record is kept. ``history`` is an
    optional PCollection of fingerprint records from earlier runs (see
    ``ReadFingerprints``).
    """

    def __init__(self, threshold: float = 0.8, history: beam.PCollection | None = None,
                 bucket_cap: int = DEFAULT_BUCKET_CAP):
        super().__init__()
        if not 0.0 < threshold <= 1.0:
            raise ValueError("threshold must be in (0, 1]")
        if bucket_cap < 2:
            raise ValueError("bucket_cap must be at least 2")
        self._threshold = threshold
        self._history = history
        self._bucket_cap = bucket_cap
        self._bands, self._rows = lsh_bands(threshold)

    def expand(self, fingerprints):
        history = self._history
        if history is None:
            history = fingerprints.pipeline | "NoHistory" >> beam.Create([])

        exact = (
            (fingerprints | "KeyArticleByHash" >> beam.Map(lambda a: (a["content_hash"], ("article", a))),
             history | "KeyHistoryByHash" >> beam.Map(lambda h: (h["content_hash"], ("history", h))))
            | "ExactCandidates" >> beam.Flatten()
            | "GroupExact" >> beam.GroupByKey()
            | "ResolveExact" >> beam.ParDo(ResolveExactGroupFn()).with_outputs(
                DUPLICATES_TAG, PENDING_TAG, main="representatives")
        )
        representatives = exact.representatives | "KeyRepresentative" >> beam.Map(lambda fp: (fp["id"], fp))
        nodes = (
            (representatives | "CurrentNodes" >> beam.MapTuple(
                lambda id_, fp: (id_, (node_order(fp, history=False), fp["shingles"]))),
             history | "HistoryNodes" >> beam.ParDo(HistoryNodeFn()))
            | "AllNodes" >> beam.Flatten()
        )
        pairs = (
            nodes
            | "Band" >> beam.ParDo(BandFn(self._bands, self._rows))
            | "GroupBands" >> beam.GroupByKey()
            | "BucketPairs" >> beam.ParDo(BucketPairsFn(self._bucket_cap))
            | "DistinctPairs" >> beam.Distinct()
        )
        left = (
            {"nodes": nodes, "pairs": pairs | "KeyPairByFirst" >> beam.Map(lambda ab: (ab[0][-1], ab))}
            | "JoinFirst" >> beam.CoGroupByKey()
            | "AttachFirst" >> beam.FlatMap(_attach_left)
        )
        near = (
            {"nodes": nodes, "left": left}
            | "JoinSecond" >> beam.CoGroupByKey()
            | "Verify" >> beam.ParDo(VerifyPairsFn(self._threshold))
            | "AllEdges" >> beam.Map(lambda edge: (None, edge))
            | "GatherEdges" >> beam.GroupByKey()
            | "ResolveNear" >> beam.FlatMap(lambda kv: sorted(resolve_near(kv[1]).items()))
        )
        final = (
            {"fingerprint": representatives, "near": near, "pending": exact[PENDING_TAG]}
            | "JoinDecisions" >> beam.CoGroupByKey()
            | "Finalize" >> beam.ParDo(FinalizeFn()).with_outputs(FINGERPRINTS_TAG, main="duplicates")
        )
        return {
            "duplicates": (exact[DUPLICATES_TAG], final.duplicates) | "AllDuplicates" >> beam.Flatten(),
            "fingerprints": final[FINGERPRINTS_TAG],
        }


class KeepUnique(beam.PTransform):
    """Articles -> those without a duplicate record in ``duplicates`` (the
    output of ``DedupeDecisions`` over their fingerprints)."""

    def __init__(self, duplicates: beam.PCollection):
        super().__init__()
        if duplicates is None:
            raise ValueError("duplicates is required")
        self._duplicates = duplicates

    def expand(self, articles):
        return (
            {"article": articles | "KeyArticle" >> beam.Map(lambda a: (a["id"], a)),
             "duplicate": self._duplicates | "KeyDuplicate" >> beam.Map(lambda d: (d["id"], True))}
            | "JoinDuplicates" >> beam.CoGroupByKey()
            | "DropDuplicates" >> beam.ParDo(KeepUniqueFn())
        )


class DedupeArticles(beam.PTransform):
    """Clean articles -> {'articles': kept, 'duplicates': duplicate records,
    'fingerprints': history records of this run's kept articles}.

    Three steps, each usable alone: ``FingerprintArticles`` reduces each
    article to what the decisions need, ``DedupeDecisions`` decides over the
    fingerprints (with the ``history`` of earlier runs, an optional
    PCollection of fingerprint records, see ``ReadFingerprints``), and
    ``KeepUnique`` keeps the articles the decisions did not fold. A run that
    is executed in parts (``pipelines.orchestrate``) runs the same three with
    the fingerprints kept on disk in between.
    """

    def __init__(self, threshold: float = 0.8, history: beam.PCollection | None = None,
                 bucket_cap: int = DEFAULT_BUCKET_CAP):
        super().__init__()
        self._decisions = DedupeDecisions(threshold, history, bucket_cap)

    def expand(self, articles):
        decisions = articles | "Fingerprints" >> FingerprintArticles() | "Decide" >> self._decisions
        kept = articles | "KeepUnique" >> KeepUnique(decisions["duplicates"])
        return {"articles": kept, "duplicates": decisions["duplicates"], "fingerprints": decisions["fingerprints"]}


class ReadFingerprints(beam.PTransform):
    """PBegin -> fingerprint records in ``<state_dir>/dedupe/*.avro`` (none when absent)."""

    def __init__(self, state_dir: str):
        super().__init__()
        if not state_dir:
            raise ValueError("state_dir is required")
        self._pattern = FileSystems.join(state_dir, HISTORY_FOLDER, "*.avro")

    def expand(self, pbegin):
        return (
            pbegin
            | "MatchHistory" >> fileio.MatchFiles(self._pattern,
                                                  empty_match_treatment=fileio.EmptyMatchTreatment.ALLOW)
            | "OpenHistory" >> fileio.ReadMatches()
            | "ParseHistory" >> beam.FlatMap(read_avro_matched)
        )


class WriteFingerprints(beam.PTransform):
    """Fingerprint records -> ``<state_dir>/dedupe/part-*.avro``."""

    def __init__(self, state_dir: str):
        super().__init__()
        if not state_dir:
            raise ValueError("state_dir is required")
        self._write = WriteRecords(state_dir, HISTORY_FOLDER, load_schema(FINGERPRINT_SCHEMA))

    def expand(self, fingerprints):
        return fingerprints | "WriteAvro" >> self._write
