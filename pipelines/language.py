"""Detect-language stage: tag each article with an ISO 639-1 code and probability.

Two detectors read a bounded sample of title + text. py3langid goes first: when
it is all but certain (``FAST_MIN_PROBABILITY``) of a language langdetect also
knows, that is the answer (most news articles: a sixth of langdetect's cost).
Otherwise langdetect decides, and three things make its answer one a user can
filter and route on:

* Determinism: every text gets a fresh ``Detector`` from one factory with a
  fixed seed, so the answer depends on the text alone, never on the worker, the
  runner or what the worker saw before.
* Speed: it reads a bounded sample (``SAMPLE_CHARS``) of title + text; its cost
  is mostly a fixed number of random trials, but n-gram extraction and the
  cross-check grow with length, and accuracy has long saturated by then.
* Honesty: ``und`` when the sample has too few letters (or, short of a
  sentence, py3langid does not rank the same language first), when langdetect's
  probability is below ``min_probability``, or when a second detector that
  knows more languages (py3langid) says the text is in a language langdetect
  has no profile for. langdetect names close relatives of the languages it
  lacks with full confidence (Azerbaijani -> tr, Bosnian -> hr, Serbian -> mk,
  Malay -> id, Mongolian -> ru, Armenian and Georgian -> et), so its own
  probability cannot catch them.

A language declared by the input (``language_hint``: JSON ``language``, HTML
``lang``) replaces ``und`` unless a detector that knows the hinted language
gives it almost no probability (a CMS-default ``lang="en"`` on a page in
Armenian stays ``und``). A confident detection always wins over the hint.

Codes: langdetect's ``zh-cn``/``zh-tw`` -> ``zh``; its ``no`` (a profile built
from Norwegian Wikipedia, which is Bokmål) -> ``nb``, so Nynorsk text is
reported as ``nb`` or ``und``, never ``nn``. All its other codes already are
ISO 639-1.
"""

from __future__ import annotations

import threading
import unicodedata
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.records import rejected, tag_rejected

__all__ = [
    "CROSSCHECK_MARGIN",
    "DEFAULT_MIN_PROBABILITY",
    "Detection",
    "FAST_MIN_PROBABILITY",
    "DetectLanguage",
    "SAMPLE_CHARS",
    "UND",
    "detect_language",
    "known_codes",
    "load_detectors",
    "normalise_code",
    "sample_text",
]

STAGE = "language"
UND = "und"
# langdetect's probability is the share of its 7 random trials that converged
# on the top language (about k/7). 0.5 asks for a majority. Higher costs
# accuracy fast and buys little: on lingua-langid 0.9 drops macro sentence
# accuracy from 0.976 to 0.958 and paragraph accuracy from 0.9994 to 0.9971 for
# 0.006 more unsupported-language safety; the cross-check catches the confident
# mistakes a threshold cannot.
DEFAULT_MIN_PROBABILITY = 0.5
# Characters of title + text the detectors see. On lingua-langid paragraphs
# (about 530 characters) 200 gives 0.9947 accuracy, 400 0.9994, 800 0.9998;
# a whole BBC article (about 2,200 characters) costs about twice the CPU of 400.
SAMPLE_CHARS = 400
# Fewer letters (Unicode letters and marks) than this and no detector is asked.
MIN_LETTERS = 5
# Below this many letters langdetect is confidently wrong too often ("Kursk
# invasion" -> sv): its answer stands only when py3langid independently ranks
# the same language first with at least SHORT_MIN_CROSSCHECK. On lingua-langid
# word pairs this lifts precision from 0.82 to 0.95.
SHORT_LETTERS = 20
SHORT_MIN_CROSSCHECK = 0.3
SEED = 0
# py3langid vetoes langdetect's answer L when it gives a language langdetect has
# no profile for at least this much more probability than L. A plain "top
# labels must agree" rule loses Croatian to Bosnian, Bokmål to Nynorsk and
# Indonesian to Malay on short sentences; the margin keeps most of those while
# still catching the far relatives (Azerbaijani, Armenian, Mongolian, ...).
CROSSCHECK_MARGIN = 0.25
# A hint is contradicted when a detector that knows its language gives it less.
HINT_MIN_SUPPORT = 0.05
# py3langid reads a sample in about a sixth of langdetect's time (0.4 ms against
# 2.6 ms for a BBC article), so it is asked first. When it gives a language
# langdetect also knows at least this probability, on a sample past the
# short-text rule, that is the answer and langdetect is not run. On
# lingua-langid (7,500 sentences and 7,413 paragraphs in 75 languages) 7,968
# items take that path; 3 of its answers are wrong, and the two-detector path
# gives those same 3 wrong answers, and 9 more wrong ones on the other items
# of the path. Of the BBC articles 99 % take it; at 0.999 only 90 % would.
FAST_MIN_PROBABILITY = 0.99

_LANGDETECT_CODES = {"zh-cn": "zh", "zh-tw": "zh", "no": "nb"}
# py3langid labels folded into the code langdetect reports for the same
# macrolanguage, so they never count as a language langdetect lacks.
_PY3LANGID_CODES = {"no": "nb", "ary": "ar", "arz": "ar", "wuu": "zh", "yue": "zh", "ltg": "lv", "uzs": "uz"}
# py3langid's label for text with no linguistic content: no evidence either way.
_NO_LANGUAGE = "zxx"
# Deprecated ISO 639-1 codes still found in markup, and our own choice for 'no'.
_HINT_CODES = {"iw": "he", "in": "id", "ji": "yi", "jw": "jv", "no": "nb", "mo": "ro"}


class Detection(NamedTuple):
    language: str          # ISO 639-1 code or 'und'
    probability: float     # the deciding detector's probability of its top language (0.0: none could run)
    decision: str          # confident | too_short | low_probability | unsupported
    hint_used: bool        # language comes from the input's hint
    detected: str | None   # langdetect's top language before threshold and cross-check (None: not run)


class _Detectors(NamedTuple):
    factory: object        # langdetect DetectorFactory, seeded
    langdetect_codes: frozenset
    identifier: object     # py3langid LanguageIdentifier with normalised probabilities
    identifier_codes: frozenset


_lock = threading.Lock()
_detectors: _Detectors | None = None


def load_detectors() -> _Detectors:
    """Both detectors, loaded once per process (1-3 s, about 130 MB) and read-only after."""
    global _detectors
    with _lock:
        if _detectors is None:
            from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            # A private factory with its own seed: the global DetectorFactory.seed
            # is shared with any other langdetect user in the process.
            factory = DetectorFactory()
            factory.load_profile(PROFILES_DIRECTORY)
            factory.set_seed(SEED)
            identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
            _detectors = _Detectors(
                factory, frozenset(_LANGDETECT_CODES.get(c, c) for c in factory.get_lang_list()),
                identifier, frozenset(_PY3LANGID_CODES.get(c, c) for c in identifier.labels))
        return _detectors


def known_codes() -> tuple[frozenset, frozenset]:
    """(codes langdetect can report, further codes only py3langid knows), as this
    stage reports them. A code of the second kind is never detected (the
    cross-check turns it into 'und'); it can only come from an input's hint.
    Reads the profile names and py3langid's labels (about 0.7 s), not the
    langdetect profiles themselves."""
    import os

    from langdetect.detector_factory import PROFILES_DIRECTORY
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    detected = frozenset(_LANGDETECT_CODES.get(c, c) for c in os.listdir(PROFILES_DIRECTORY))
    labels = LanguageIdentifier.from_model_file(MODEL_FILE).labels
    return detected, frozenset(_PY3LANGID_CODES.get(c, c) for c in labels) - detected


def normalise_code(code: str | None) -> str | None:
    """A language tag ('en-GB', 'zh_TW', 'EN', 'iw', 'no') -> ISO 639-1 code, or None when the
    tag does not start with a two-letter language code ('english', 'und', 'x-default')."""
    if not code:
        return None
    primary = code.strip().lower().replace("_", "-").split("-")[0]
    if len(primary) != 2 or not primary.isascii() or not primary.isalpha():
        return None
    return _HINT_CODES.get(primary, primary)


def sample_text(text: str, limit: int = SAMPLE_CHARS) -> str:
    """The first ``limit`` characters, cut back to a word boundary so no half word
    adds n-grams of a word that is not in the text."""
    if len(text) <= limit:
        return text
    sample = text[:limit]
    if not text[limit].isspace():
        cut = sample.rstrip().rfind(" ")
        if cut > limit // 2:
            sample = sample[:cut]
    return sample


def _langdetect(detectors: _Detectors, sample: str) -> list[tuple[str, float]]:
    from langdetect.lang_detect_exception import LangDetectException

    detector = detectors.factory.create()
    detector.append(sample)
    try:
        ranked = detector.get_probabilities()
    except LangDetectException:
        return []
    # zh-cn and zh-tw are one language here: their trials add up.
    merged: dict[str, float] = {}
    for r in ranked:
        code = _LANGDETECT_CODES.get(r.lang, r.lang)
        merged[code] = merged.get(code, 0.0) + float(r.prob)
    return sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))


def _py3langid(detectors: _Detectors, sample: str) -> dict[str, float]:
    probs: dict[str, float] = {}
    for label, prob in detectors.identifier.rank(sample):
        code = _PY3LANGID_CODES.get(label, label)
        probs[code] = probs.get(code, 0.0) + float(prob)
    return probs


def _letters(text: str) -> int:
    # Marks count: Devanagari or Tamil vowel signs are half of a word's characters.
    return sum(unicodedata.category(ch)[0] in "LM" for ch in text)


def _agrees(language: str, crosscheck: dict[str, float]) -> bool:
    top = max(crosscheck, key=crosscheck.get, default=None)
    return top == language and crosscheck[top] >= SHORT_MIN_CROSSCHECK


def _vetoed(language: str, crosscheck: dict[str, float], langdetect_codes: frozenset, margin: float) -> bool:
    unknown = max((p for code, p in crosscheck.items() if code not in langdetect_codes and code != _NO_LANGUAGE),
                  default=0.0)
    return unknown - crosscheck.get(language, 0.0) >= margin


def _hint_contradicted(hint: str, ranked: list[tuple[str, float]], crosscheck: dict[str, float],
                       detectors: _Detectors) -> bool:
    if hint in detectors.langdetect_codes and dict(ranked).get(hint, 0.0) >= HINT_MIN_SUPPORT:
        return False
    if hint in detectors.identifier_codes and crosscheck.get(hint, 0.0) >= HINT_MIN_SUPPORT:
        return False
    return hint in detectors.langdetect_codes or hint in detectors.identifier_codes


def _certain(crosscheck: dict[str, float], langdetect_codes: frozenset, min_probability: float) -> str | None:
    """py3langid's language when it alone settles the question (see ``FAST_MIN_PROBABILITY``)."""
    language, probability = max(crosscheck.items(), key=lambda kv: (kv[1], kv[0]), default=(None, 0.0))
    if language in langdetect_codes and probability >= max(FAST_MIN_PROBABILITY, min_probability):
        return language
    return None


def detect_language(text: str, min_probability: float = DEFAULT_MIN_PROBABILITY, hint: str | None = None, *,
                    sample_chars: int = SAMPLE_CHARS, margin: float = CROSSCHECK_MARGIN,
                    fast: bool = True) -> Detection:
    """The language of ``text`` from a bounded sample: py3langid's when it is
    certain of a language langdetect knows, else langdetect's cross-checked by
    py3langid (``fast`` False always takes that second path, only to measure it).

    ``probability`` is that of the detector that decided. ``hint`` (any
    language tag) is used only when the detection is not confident and no
    detector that knows the hinted language contradicts it.
    """
    detectors = load_detectors()
    sample = sample_text(text, sample_chars)
    hint_code = normalise_code(hint)
    letters = _letters(sample)
    short = letters < SHORT_LETTERS
    crosscheck: dict[str, float] = {}
    if fast and not short:
        crosscheck = _py3langid(detectors, sample)
        certain = _certain(crosscheck, detectors.langdetect_codes, min_probability)
        if certain is not None:
            return Detection(certain, crosscheck[certain], "confident", False, None)
    ranked = _langdetect(detectors, sample) if letters >= MIN_LETTERS else []
    if not ranked:
        # Too little to judge: nothing can contradict the hint.
        return Detection(hint_code or UND, 0.0, "too_short", hint_code is not None, None)
    language, probability = ranked[0]
    if probability < min_probability:
        decision = "too_short" if short else "low_probability"
    else:
        crosscheck = crosscheck or _py3langid(detectors, sample)
        if short and not _agrees(language, crosscheck):
            decision = "too_short"
        elif _vetoed(language, crosscheck, detectors.langdetect_codes, margin):
            decision = "unsupported"
        else:
            return Detection(language, probability, "confident", False, language)
    if hint_code is not None:
        # On too short a text the detectors' view of the hint means as little as their own answer.
        if short or not _hint_contradicted(
                hint_code, ranked, crosscheck or _py3langid(detectors, sample), detectors):
            return Detection(hint_code, probability, decision, True, language)
    return Detection(UND, probability, decision, False, language)


class DetectLanguageFn(beam.DoFn):
    def __init__(self, min_probability: float, languages: tuple[str, ...]):
        self._min_probability = min_probability
        self._languages = frozenset(languages)

    def setup(self):
        load_detectors()

    def process(self, article: dict):
        text = "\n".join(filter(None, [article.get("title"), article["text"]]))
        hint = normalise_code(article.get("language_hint"))
        found = detect_language(text, self._min_probability, hint)
        Metrics.counter(STAGE, f"language_{found.language}").inc()
        Metrics.counter(STAGE, f"decision_{found.decision}").inc()
        if found.hint_used:
            Metrics.counter(STAGE, "hint_used").inc()
        elif hint is not None and hint != found.language:
            Metrics.counter(STAGE, "hint_overruled").inc()
        if self._languages and found.language not in self._languages:
            yield tag_rejected(STAGE, rejected(
                article["source"], STAGE, "language_filtered",
                f"language {found.language} (p={found.probability:.3f}, {found.decision}) not in "
                f"--languages={','.join(sorted(self._languages))}",
                article["text"]))
            return
        yield {**article, "language": found.language, "language_probability": found.probability,
               "language_hint": hint}


class DetectLanguage(beam.PTransform):
    """Articles -> {'articles': language-tagged articles, 'rejected': filtered out by ``languages``}.

    ``languages``: ISO 639-1 codes to keep (``und`` keeps undetermined ones);
    empty keeps everything.
    """

    def __init__(self, min_probability: float | None = None, languages: tuple[str, ...] = ()):
        super().__init__()
        if min_probability is None:
            min_probability = DEFAULT_MIN_PROBABILITY
        if not 0.0 <= min_probability <= 1.0:
            raise ValueError("min_probability must be in [0, 1]")
        kept = []
        for code in languages:
            normalised = UND if str(code).strip().lower() == UND else normalise_code(code)
            if normalised is None:
                raise ValueError(f"not an ISO 639-1 language code: {code!r}")
            kept.append(normalised)
        self._min_probability = min_probability
        self._languages = tuple(sorted(set(kept)))

    def expand(self, articles):
        results = articles | "Detect" >> beam.ParDo(
            DetectLanguageFn(self._min_probability, self._languages)).with_outputs(
                "rejected", main="articles")
        return {"articles": results.articles, "rejected": results.rejected}
