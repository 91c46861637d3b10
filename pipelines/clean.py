"""Clean stage: raw article -> clean article (or a rejected record).

Pure functions first (``clean_text``, ``normalise_for_hash``, ``clean_article``),
fed to Beam through one ``FlatMap``; every rejection has a named counter.
"""

from __future__ import annotations

import re
import unicodedata

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.records import rejected, sha256_hex, tag_rejected

__all__ = [
    "CleanArticles",
    "clean_article",
    "clean_text",
    "normalise_for_hash",
    "paragraphs_of",
]

STAGE = "clean"
REJECTED_TAG = "rejected"

# Zero-width and other invisible format characters that glue onto words
# ("\u200bPutin") without being visible; soft hyphen included.
_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
# C0/C1 controls except tab and newline, which carry layout.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[^\S\n]+")


def paragraphs_of(text: str) -> list[str]:
    """Non-empty lines, whitespace collapsed: each line of a scraped article is
    a paragraph (headlines, captions and body paragraphs alike)."""
    paragraphs = []
    for line in text.split("\n"):
        line = _SPACES.sub(" ", line).strip()
        if line:
            paragraphs.append(line)
    return paragraphs


def clean_text(text: str) -> str:
    """Repair and normalise text, keeping paragraph boundaries as blank lines."""
    import ftfy

    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = ftfy.fix_text(text, normalization="NFC")
    text = _INVISIBLE.sub("", text)
    text = _CONTROL.sub(" ", text)
    text = unicodedata.normalize("NFC", text)
    return "\n\n".join(paragraphs_of(text))


_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalise_for_hash(text: str) -> str:
    """Fold case, Unicode variants, punctuation and whitespace: what exact-duplicate
    detection compares, so trivially re-typeset copies hash the same."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_NON_WORD.sub(" ", text).split())


def _extract_html(html: str) -> dict:
    import trafilatura

    extracted = trafilatura.bare_extraction(html, with_metadata=True, favor_precision=False)
    if extracted is None:
        return {}
    doc = extracted.as_dict() if hasattr(extracted, "as_dict") else dict(extracted)
    return doc


def clean_article(raw: dict, min_words: int = 20) -> dict:
    """One raw article -> clean article, or a rejected record (has ``reason``)."""
    article = dict(raw)
    if raw.get("format") == "html":
        doc = _extract_html(raw["text"])
        article["text"] = doc.get("text") or ""
        article["title"] = raw.get("title") or doc.get("title")
        article["author"] = raw.get("author") or doc.get("author")
        article["published"] = raw.get("published") or doc.get("date")
        article["url"] = raw.get("url") or doc.get("url")
        article["language_hint"] = raw.get("language_hint") or doc.get("language")
    article["text"] = clean_text(article.get("text") or "")
    for field in ("title", "author", "url", "published"):
        value = article.get(field)
        if value is not None:
            value = " ".join(clean_text(value).split())
            article[field] = value or None
    article.setdefault("captions", [])
    article.pop("format", None)
    words = len(article["text"].split())
    if words == 0:
        return rejected(raw["source"], STAGE, "empty_after_clean",
                        "no text left after cleaning", (raw.get("text") or "")[:2000])
    if words < min_words:
        return rejected(raw["source"], STAGE, "too_short",
                        f"{words} words after cleaning, fewer than --min-words={min_words}",
                        article["text"])
    article["word_count"] = words
    article["content_hash"] = sha256_hex(normalise_for_hash(article["text"]))
    return article


class CleanArticleFn(beam.DoFn):
    def __init__(self, min_words: int):
        self._min_words = min_words
        self._kept = Metrics.counter(STAGE, "articles")

    def process(self, raw: dict):
        result = clean_article(raw, self._min_words)
        if "reason" in result:
            yield tag_rejected(STAGE, result)
        else:
            self._kept.inc()
            yield result


class CleanArticles(beam.PTransform):
    """Raw articles -> {'articles': clean articles, 'rejected': rejected records}."""

    def __init__(self, min_words: int = 20):
        super().__init__()
        if min_words < 0:
            raise ValueError("min_words must be zero or more")
        self._min_words = min_words

    def expand(self, raw_articles):
        results = raw_articles | "Clean" >> beam.ParDo(CleanArticleFn(self._min_words)).with_outputs(
            REJECTED_TAG, main="articles")
        return {"articles": results.articles, "rejected": results[REJECTED_TAG]}
