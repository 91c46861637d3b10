import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to
from helpers import article

from pipelines.language import UND, DetectLanguage, detect_language, normalise_code, sample_text

EN = "The government announced on Tuesday that the new policy would take effect next year across the country."
FR = "Le gouvernement a annoncé mardi que la nouvelle politique entrerait en vigueur l'année prochaine dans le pays."
DE = ("Die Regierung kündigte am Dienstag an, dass die neue Regelung im nächsten Jahr im ganzen Land "
      "in Kraft treten werde.")
NB = ("Regjeringen kunngjorde tirsdag at den nye politikken vil tre i kraft over hele landet neste år, "
      "og at kommunene får mer penger.")
ZH = "政府星期二宣布，新政策将于明年在全国范围内生效，地方政府将获得更多资金用于公共服务。"
RU = "Правительство объявило во вторник, что новая политика вступит в силу по всей стране в следующем году."
# Languages langdetect has no profile for; it names a relative with near certainty.
AZ = ("Azərbaycan Respublikasının paytaxtı Bakı şəhəridir və ölkənin ən böyük şəhəri sayılır. "
      "Şəhərdə hər il çoxlu beynəlxalq tədbirlər keçirilir.")
HY = ("Հայաստանի մայրաքաղաքը Երևանն է, որը երկրի ամենամեծ քաղաքն է։ "
      "Քաղաքում ամեն տարի անցկացվում են բազմաթիվ միջազգային միջոցառումներ։")
MN = ("Монгол Улсын нийслэл нь Улаанбаатар хот бөгөөд энэ нь улсын хамгийн том хот юм. "
      "Хотод жил бүр олон улсын арга хэмжээ зохион байгуулагддаг.")


@pytest.mark.parametrize("text, code", [(EN, "en"), (FR, "fr"), (DE, "de"), (NB, "nb"), (ZH, "zh"), (RU, "ru")])
def test_detects_supported_languages_with_iso_codes(text, code):
    found = detect_language(text)
    assert (found.language, found.decision, found.hint_used) == (code, "confident", False)
    assert 0.5 <= found.probability <= 1.0 + 1e-9


@pytest.mark.parametrize("text, langdetect_says", [(AZ, "tr"), (HY, "et"), (MN, "ru")])
def test_languages_langdetect_lacks_are_und_not_a_confident_relative(text, langdetect_says):
    found = detect_language(text)
    assert found.detected == langdetect_says and found.probability > 0.9
    assert (found.language, found.decision) == (UND, "unsupported")


def test_same_text_same_answer_whatever_came_before_or_the_global_seed():
    from langdetect import DetectorFactory

    texts = [EN, FR, DE, NB, ZH, RU, AZ, HY, MN, "Kursk invasion"]
    first = [detect_language(t) for t in texts]
    saved = DetectorFactory.seed
    DetectorFactory.seed = 12345  # another langdetect user in the same process
    try:
        again = [detect_language(t) for t in reversed(texts)][::-1]
    finally:
        DetectorFactory.seed = saved
    assert again == first


@pytest.mark.parametrize("text", ["Kursk invasion", "Live updates", "Kursk", "Hi", "12:30 — 14:45", ""])
def test_too_short_text_is_und(text):
    found = detect_language(text)
    assert (found.language, found.decision) == (UND, "too_short")


def _used(text, hint):
    found = detect_language(text, hint=hint)
    return found.language, found.hint_used


def test_hint_used_only_when_detection_is_unreliable():
    assert _used("Kursk invasion", "en-GB") == ("en", True)
    assert _used("", "fr") == ("fr", True)
    # A confident detection wins over a wrong hint.
    assert _used(EN, "fr") == ("en", False)
    # Unsupported language: a hint the cross-check supports is used ...
    assert _used(HY, "hy") == ("hy", True)
    assert _used(AZ, "az") == ("az", True)
    # ... a CMS-default hint that both detectors contradict is not.
    assert _used(HY, "en") == (UND, False)
    # Not a language tag: ignored.
    assert _used("Kursk invasion", "english") == (UND, False)


def test_a_text_py3langid_is_certain_of_is_not_given_to_langdetect_and_gets_the_same_language():
    from pipelines.language import FAST_MIN_PROBABILITY

    text = EN + " " + EN.replace("Tuesday", "Friday")
    fast, slow = detect_language(text), detect_language(text, fast=False)
    assert (fast.language, fast.decision, fast.detected) == ("en", "confident", None)  # langdetect not run
    assert fast.probability >= FAST_MIN_PROBABILITY
    assert (slow.language, slow.decision, slow.detected) == ("en", "confident", "en")
    # A user's stricter threshold applies to py3langid's probability as well.
    assert detect_language(text, min_probability=1.0).detected == "en"


def test_threshold_makes_und_and_keeps_the_probability():
    found = detect_language(EN, min_probability=1.0)
    assert (found.language, found.decision, found.detected) == (UND, "low_probability", "en")
    assert found.probability > 0.99


@pytest.mark.parametrize("tag, code", [
    ("en", "en"), ("EN", "en"), ("en-GB", "en"), ("zh_TW", "zh"), ("zh-Hans-CN", "zh"), ("iw", "he"),
    ("in", "id"), ("no", "nb"), ("nn-NO", "nn"), (" pt-br ", "pt"),
    ("english", None), ("und", None), ("x-default", None), ("", None), (None, None), ("e1", None),
])
def test_normalise_code(tag, code):
    assert normalise_code(tag) == code


@pytest.mark.parametrize("text, limit, sample", [
    ("short text", 400, "short text"),
    ("alpha beta gamma", 12, "alpha beta"),     # a cut inside 'gamma' drops the half word
    ("alpha beta gamma", 11, "alpha beta "),    # the cut falls on a space: kept as is
    ("政府星期二宣布新政策", 4, "政府星期"),        # no spaces to cut back to
])
def test_sample_text_cuts_at_a_word_boundary(text, limit, sample):
    assert sample_text(text, limit) == sample


@pytest.mark.parametrize("kwargs", [{"min_probability": 1.5}, {"min_probability": -0.1}, {"languages": ("english",)}])
def test_transform_validates_arguments(kwargs):
    with pytest.raises(ValueError):
        DetectLanguage(**kwargs)


def test_language_transform_tags_filters_and_records_the_hint(test_pipeline):
    inputs = [article("e", EN, language_hint="EN-us"), article("f", FR), article("a", HY, language_hint="en"),
              article("s", "Kursk invasion", title=None, language_hint="de")]
    with test_pipeline() as p:
        out = p | beam.Create(inputs) | DetectLanguage(languages=("en", "und", "DE"))
        assert_that(out["articles"] | beam.Map(lambda a: (a["id"], a["language"], a["language_hint"])),
                    equal_to([("e", "en", "en"), ("a", UND, "en"), ("s", "de", "de")]), label="kept")
        assert_that(out["rejected"] | beam.Map(lambda r: (r["source"], r["stage"], r["reason"], r["raw"])),
                    equal_to([("f.txt", "language", "language_filtered", FR)]), label="rejected")
