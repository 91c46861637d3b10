import spacy

from pipelines.entities import canonicalise, clean_surface, mentions_from_doc


def ruler_nlp(patterns):
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns(patterns)
    return nlp


def test_mentions_keep_offsets_and_only_named_labels():
    nlp = ruler_nlp([{"label": "PERSON", "pattern": "Vladimir Putin"}, {"label": "DATE", "pattern": "Friday"},
                     {"label": "PERSON", "pattern": "Putin's"}])
    text = "Vladimir Putin met on Friday. Putin's army moved."
    mentions = mentions_from_doc(nlp(text), "text")
    assert [(m["text"], m["entity"]) for m in mentions] == [("Vladimir Putin", "Vladimir Putin"), ("Putin's", "Putin")]
    assert all(text[m["start"]:m["end"]] == m["text"] for m in mentions)


def test_last_names_map_to_the_full_name_and_labels_agree():
    ms = [{"entity": e, "label": lab} for e, lab in [
        ("Vladimir Putin", "PERSON"), ("Putin", "PERSON"), ("Kim Jong Un", "PERSON"), ("Kim", "PERSON"),
        ("Kursk", "GPE"), ("Kursk", "GPE"), ("Kursk", "PRODUCT")]]
    assert [(m["entity"], m["label"]) for m in canonicalise(ms)] == [
        ("Vladimir Putin", "PERSON"), ("Vladimir Putin", "PERSON"), ("Kim Jong Un", "PERSON"),
        ("Kim Jong Un", "PERSON"), ("Kursk", "GPE"), ("Kursk", "GPE"), ("Kursk", "GPE")]


def test_clean_surface():
    assert clean_surface(" Putin’s ") == "Putin"
    assert clean_surface("“Nato”,") == "Nato"
