"""Detect-language stage: tag each article with an ISO 639-1 code and probability.

langdetect is seeded in the worker's ``setup()`` and run on a bounded sample of
the text; below the probability threshold, or on too little text, the answer
is the honest ``und``.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.records import rejected, tag_rejected

__all__ = ["DetectLanguage", "detect_language", "normalise_code", "DEFAULT_MIN_PROBABILITY"]

STAGE = "language"
UND = "und"
DEFAULT_MIN_PROBABILITY = 0.9
# Characters of text the detector sees: accuracy saturates long before a full
# article, and langdetect's cost grows with length.
SAMPLE_CHARS = 2000
MIN_LETTERS = 20
SEED = 0

# langdetect codes that are not ISO 639-1.
_CODE_MAP = {"zh-cn": "zh", "zh-tw": "zh", "no": "nb"}


def normalise_code(code: str | None) -> str | None:
    if not code:
        return None
    code = code.strip().lower().replace("_", "-")
    code = _CODE_MAP.get(code, code)
    return code.split("-")[0] or None


def _detector_factory():
    from langdetect import DetectorFactory
    from langdetect.detector_factory import init_factory

    DetectorFactory.seed = SEED
    init_factory()
    from langdetect import detector_factory

    return detector_factory._factory


def detect_language(text: str, min_probability: float = DEFAULT_MIN_PROBABILITY,
                    hint: str | None = None) -> tuple[str, float]:
    """(ISO 639-1 code or 'und', probability of the top language)."""
    from langdetect import DetectorFactory
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = SEED
    sample = text[:SAMPLE_CHARS]
    letters = sum(ch.isalpha() for ch in sample)
    hint_code = normalise_code(hint)
    if letters < MIN_LETTERS:
        return (hint_code or UND), 0.0
    factory = _detector_factory()
    try:
        detector = factory.create()
        detector.append(sample)
        ranked = detector.get_probabilities()
    except LangDetectException:
        return (hint_code or UND), 0.0
    if not ranked:
        return (hint_code or UND), 0.0
    top = ranked[0]
    if top.prob < min_probability:
        return (hint_code or UND), float(top.prob)
    return normalise_code(top.lang) or UND, float(top.prob)


class DetectLanguageFn(beam.DoFn):
    def __init__(self, min_probability: float, languages: tuple[str, ...]):
        self._min_probability = min_probability
        self._languages = frozenset(languages)

    def setup(self):
        # Loading the profiles and fixing the seed once per worker makes every
        # answer independent of which worker saw what before.
        _detector_factory()

    def process(self, article: dict):
        text = "\n".join(filter(None, [article.get("title"), article["text"]]))
        code, prob = detect_language(text, self._min_probability, article.get("language_hint"))
        Metrics.counter(STAGE, f"language_{code}").inc()
        if self._languages and code not in self._languages:
            yield tag_rejected(STAGE, rejected(
                article["source"], STAGE, "language_filtered",
                f"language {code} (p={prob:.3f}) not in --languages={','.join(sorted(self._languages))}",
                article["text"][:2000]))
            return
        yield {**article, "language": code, "language_probability": prob}


class DetectLanguage(beam.PTransform):
    """Articles -> {'articles': language-tagged articles, 'rejected': filtered out}."""

    def __init__(self, min_probability: float | None = None, languages: tuple[str, ...] = ()):
        super().__init__()
        if min_probability is None:
            min_probability = DEFAULT_MIN_PROBABILITY
        if not 0.0 <= min_probability <= 1.0:
            raise ValueError("min_probability must be in [0, 1]")
        self._min_probability = min_probability
        self._languages = tuple(languages)

    def expand(self, articles):
        results = articles | "Detect" >> beam.ParDo(
            DetectLanguageFn(self._min_probability, self._languages)).with_outputs(
                "rejected", main="articles")
        return {"articles": results.articles, "rejected": results.rejected}
