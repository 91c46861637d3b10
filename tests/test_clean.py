import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from pipelines.clean import CleanArticles, clean_article, clean_text, normalise_for_hash


def raw(text, **kw):
    return {"id": "i", "source": "s.txt", "format": "text", "title": "T", "text": text, "author": None,
            "published": None, "url": None, "language_hint": None, **kw}


def test_clean_text_repairs_and_keeps_paragraphs():
    assert clean_text("caf\u00c3\u00a9  is\u200b here\r\n\r\nsecond\x07 para") == "caf\u00e9 is here\n\nsecond para"


def test_normalise_for_hash_folds_case_punctuation_and_width():
    assert normalise_for_hash("Hello,  WORLD!") == normalise_for_hash("hello world") == "hello world"


def test_too_short_and_empty_are_rejected():
    assert clean_article(raw("two words"), min_words=5)["reason"] == "too_short"
    assert clean_article(raw("\u200b \x00"), min_words=5)["reason"] == "empty_after_clean"


def test_clean_transform(test_pipeline):
    with test_pipeline() as p:
        out = p | beam.Create([raw("one two three four five", id="a"), raw("one", id="b", source="b.txt")]) \
            | CleanArticles(min_words=3)
        assert_that(out["articles"] | beam.Map(lambda a: (a["id"], a["word_count"])), equal_to([("a", 5)]),
                    label="kept")
        assert_that(out["rejected"] | beam.Map(lambda r: r["reason"]), equal_to(["too_short"]), label="rej")
