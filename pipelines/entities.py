"""Extract-entities stage: spaCy NER per language, canonical entity names.

The model for a language is loaded once per worker process (``setup()`` and a
process-wide cache), articles reach ``nlp.pipe`` in batches, and only the
components NER depends on run.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.options import DEFAULT_SPACY_MODELS, parse_model_map

__all__ = [
    "ExtractEntities",
    "NAMED_LABELS",
    "canonicalise",
    "check_models_installed",
    "load_model",
    "mentions_from_doc",
]

STAGE = "entities"
NAMED_LABELS = frozenset({
    "PERSON", "NORP", "FAC", "ORG", "GPE", "LOC", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE",
})
# Components NER does not need: the NER of these pipelines has its own tok2vec.
DISABLED_COMPONENTS = ("tagger", "parser", "attribute_ruler", "lemmatizer", "morphologizer", "senter")

_MODELS: dict[str, object] = {}

_POSSESSIVE = re.compile(r"(?:['’]s|['’])$")
_EDGE = re.compile(r"^[\W_]+|[\W_]+$", re.UNICODE)


def check_models_installed(models: dict[str, str]) -> list[str]:
    """Messages for model packages that cannot be imported (checked at start-up)."""
    import importlib.util

    problems = []
    for lang, package in sorted(models.items()):
        if importlib.util.find_spec(package) is None:
            problems.append(
                f"spaCy model {package!r} for language {lang!r} is not installed: "
                f"pip install {package.replace('_', '-')} (or change --spacy-model)")
    return problems


def load_model(package: str):
    """The spaCy pipeline for a package, loaded at most once per process."""
    nlp = _MODELS.get(package)
    if nlp is None:
        import spacy

        nlp = spacy.load(package, disable=[c for c in DISABLED_COMPONENTS])
        _MODELS[package] = nlp
    return nlp


def clean_surface(text: str) -> str:
    """Entity name from a mention: possessive and edge punctuation stripped,
    whitespace folded."""
    name = " ".join(text.split())
    name = _POSSESSIVE.sub("", name)
    name = _EDGE.sub("", name)
    return name


def mentions_from_doc(doc, field: str) -> list[dict]:
    mentions = []
    for ent in doc.ents:
        if ent.label_ not in NAMED_LABELS:
            continue
        name = clean_surface(ent.text)
        if not name or not any(ch.isalpha() for ch in name):
            continue
        mentions.append({
            "text": ent.text, "entity": name, "label": ent.label_, "field": field,
            "start": ent.start_char, "end": ent.end_char,
        })
    return mentions


def canonicalise(mentions: list[dict]) -> list[dict]:
    """Map short person names to the longer name they abbreviate, and give each
    canonical entity one label (the majority; ties to the alphabetically first).

    A PERSON name that equals the trailing word(s) of a longer PERSON name in the
    same article maps to it (Putin -> Vladimir Putin); failing that, the leading
    word(s), for family-name-first names (Kim -> Kim Jong Un). When it could map
    to more than one longer name it is ambiguous and stays as it is.
    """
    persons = {m["entity"] for m in mentions if m["label"] == "PERSON"}
    full_names = sorted((p for p in persons if len(p.split()) > 1), key=lambda p: (-len(p.split()), p))
    alias: dict[str, str] = {}
    for name in persons:
        words = name.split()
        longer = [full.split() for full in full_names if len(full.split()) > len(words)]
        # Family name last (Putin -> Vladimir Putin), else first (Kim -> Kim Jong Un).
        targets = {" ".join(f) for f in longer if f[-len(words):] == words}
        if not targets:
            targets = {" ".join(f) for f in longer if f[:len(words)] == words}
        if len(targets) == 1:
            alias[name] = targets.pop()
    canonical = []
    for m in mentions:
        entity = alias.get(m["entity"], m["entity"]) if m["label"] == "PERSON" else m["entity"]
        canonical.append({**m, "entity": entity})
    votes: dict[str, Counter] = {}
    for m in canonical:
        votes.setdefault(m["entity"], Counter())[m["label"]] += 1
    label_of = {e: sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for e, c in votes.items()}
    return [{**m, "label": label_of[m["entity"]]} for m in canonical]


class ExtractEntitiesFn(beam.DoFn):
    """Batches of articles -> articles with ``entities``."""

    def __init__(self, models: dict[str, str]):
        self._models = dict(models)
        self._no_model = Metrics.counter(STAGE, "articles_without_model")
        self._mentions = Metrics.counter(STAGE, "mentions")

    def setup(self):
        for package in set(self._models.values()):
            load_model(package)

    def process(self, batch: list[dict]) -> Iterable[dict]:
        by_lang: dict[str, list[dict]] = {}
        for article in batch:
            by_lang.setdefault(article.get("language"), []).append(article)
        for lang, articles in sorted(by_lang.items(), key=lambda kv: str(kv[0])):
            package = self._models.get(lang)
            if package is None:
                for article in articles:
                    self._no_model.inc()
                    Metrics.counter(STAGE, f"no_model_{lang}").inc()
                    yield {**article, "entities": []}
                continue
            nlp = load_model(package)
            texts = []
            for article in articles:
                texts.append(article.get("title") or "")
                texts.append(article["text"])
            docs = iter(nlp.pipe(texts))
            for article in articles:
                title_doc, text_doc = next(docs), next(docs)
                mentions = canonicalise(
                    mentions_from_doc(title_doc, "title") + mentions_from_doc(text_doc, "text"))
                self._mentions.inc(len(mentions))
                yield {**article, "entities": mentions}


class ExtractEntities(beam.PTransform):
    """Language-tagged articles -> articles with named-entity mentions."""

    def __init__(self, spacy_model: str = DEFAULT_SPACY_MODELS, batch_size: int = 64):
        super().__init__()
        self._models = parse_model_map(spacy_model)
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        self._batch_size = batch_size

    def expand(self, articles):
        return (
            articles
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=self._batch_size)
            | "Recognise" >> beam.ParDo(ExtractEntitiesFn(self._models))
        )
