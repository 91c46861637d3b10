import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to
from helpers import article

from pipelines.language import DetectLanguage, detect_language

EN = "The government announced on Tuesday that the new policy would take effect next year across the country."
FR = "Le gouvernement a annoncé mardi que la nouvelle politique entrerait en vigueur l'année prochaine dans le pays."


def test_detects_and_is_repeatable():
    assert detect_language(EN)[0] == "en"
    assert detect_language(FR)[0] == "fr"
    assert detect_language(EN) == detect_language(EN)


def test_short_text_is_und_unless_hinted():
    assert detect_language("Kursk invasion")[0] == "und"
    assert detect_language("Kursk invasion", hint="en")[0] == "en"


def test_language_transform_filters_into_rejected(test_pipeline):
    with test_pipeline() as p:
        out = p | beam.Create([article("e", EN), article("f", FR)]) | DetectLanguage(languages=("en",))
        assert_that(out["articles"] | beam.Map(lambda a: (a["id"], a["language"])), equal_to([("e", "en")]),
                    label="kept")
        assert_that(out["rejected"] | beam.Map(lambda r: r["reason"]), equal_to(["language_filtered"]),
                    label="rej")
