"""The NER pipeline: training, prediction contract (empty, long input), rules, config hashing."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nerops.data import read_corpus
from nerops.errors import ConfigurationError, ModelError
from nerops.model.config import TrainConfig, get_config
from nerops.model.pipeline import Extractor, chunk_text, train_model
from tests.cvs import synthetic_cv


@pytest.fixture(scope="module")
def extractor(tiny_model: Path) -> Extractor:
    return Extractor.load(tiny_model)


def test_predicts_entities_with_offsets_into_the_text(extractor: Extractor):
    text = "Dana Vance  Riverton, WY  dana.vance@example.com  Phone: (555) 123-4567  EXPERIENCE  Web Developer  Hooli"
    entities = extractor.predict(text)
    assert entities, "a trained model finds something in a CV-shaped text"
    for entity in entities:
        assert text[entity["start"] : entity["end"]] == entity["text"]
    found = {(e["label"], e["text"]) for e in entities}
    assert ("Email Address", "dana.vance@example.com") in found
    assert ("Phone", "(555) 123-4567") in found


def test_empty_and_blank_input_give_no_entities(extractor: Extractor):
    assert extractor.predict("") == []
    assert extractor.predict("   \n  ") == []


def test_non_string_input_is_refused(extractor: Extractor):
    with pytest.raises(TypeError, match="must be a str"):
        extractor.predict(None)  # type: ignore[arg-type]


def test_long_input_is_chunked_and_offsets_map_back(extractor: Extractor):
    rng = random.Random(7)
    from xml.etree import ElementTree

    cvs = ["".join(ElementTree.fromstring(f"<cv>{synthetic_cv(rng)}</cv>").itertext()).strip() for _ in range(250)]
    text = "  ".join(cvs)
    assert len(text) > 3 * extractor.window_chars
    entities = extractor.predict(text)
    emails = [e for e in entities if e["label"] == "Email Address"]
    assert len(emails) == 250, "every CV's e-mail is found, including those past the first window"
    for entity in entities:
        assert text[entity["start"] : entity["end"]] == entity["text"]
    assert entities == sorted(entities, key=lambda e: e["start"])


@given(st.text(alphabet=st.sampled_from("ab  \n.x"), max_size=400), st.integers(min_value=10, max_value=120))
@settings(max_examples=200, deadline=None)
def test_chunks_cover_the_text_exactly(text: str, window: int):
    chunks = chunk_text(text, window)
    assert "".join(piece for _, piece in chunks) == text
    for offset, piece in chunks:
        assert text[offset : offset + len(piece)] == piece
        assert len(piece) <= window


def test_config_hash_is_stable_and_tracks_every_field():
    assert get_config("quick").config_hash() == get_config("quick").config_hash()
    assert get_config("quick").config_hash() != get_config("quick", seed=1).config_hash()
    assert get_config("quick").config_hash() != get_config("full").config_hash()
    renamed = TrainConfig(**{**get_config("quick").model_dump(), "name": "other"})
    assert renamed.config_hash() == get_config("quick").config_hash()


def test_unknown_config_and_bad_values_are_refused():
    with pytest.raises(ConfigurationError, match="choose one of"):
        get_config("huge")
    with pytest.raises(ValueError):
        get_config("quick", train_fraction=0)


def test_loading_a_folder_that_is_not_a_model_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ModelError, match="not a model folder"):
        Extractor.load(tmp_path)


def test_training_reports_progress_and_logs_no_cv_text(synthetic_data, tmp_path: Path, caplog, capsys):
    docs = read_corpus(synthetic_data[0])[:8]
    calls: list[tuple[str, int, int]] = []
    with caplog.at_level(logging.DEBUG):
        meta = train_model(
            docs,
            get_config("quick", max_iterations=5),
            tmp_path / "m",
            dev_docs=docs[:2],
            progress=lambda *a: calls.append(a),
        )
    phases = {phase for phase, _, _ in calls}
    assert {"features", "optimising"} <= phases
    assert ("features", 8, 8) in calls
    assert meta["alignment"]["spans"] == sum(len(d.spans) for d in docs)
    assert "dev_micro" in meta and meta["train_documents"] == 8
    captured = capsys.readouterr()
    logged = caplog.text + captured.out + captured.err
    for doc in docs:
        for span in doc.spans:
            assert doc.text[span.start : span.end] not in logged


def test_train_fraction_uses_a_seeded_subset(synthetic_data, tmp_path: Path):
    docs = read_corpus(synthetic_data[0])
    meta = train_model(docs, get_config("quick", max_iterations=3, train_fraction=0.1), tmp_path / "m")
    assert meta["train_documents"] == 4


@pytest.mark.parametrize("scheme", ["bio", "bilou"])
def test_tags_and_spans_round_trip(scheme: str):
    from nerops.model.components import bio_tags, blank_pipeline, spans_from_tags

    nlp = blank_pipeline()
    doc = nlp.make_doc("Ann Lee  Data Analyst at Acme  Python")
    spans = [doc.char_span(0, 7, "Name"), doc.char_span(9, 21, "Designation"), doc.char_span(31, 37, "Tech Tools")]
    tags = bio_tags(doc, spans, scheme)
    if scheme == "bilou":
        assert tags[:2] == ["B-Name", "L-Name"] and tags[-1] == "U-Tech Tools"
    assert [(s.start_char, s.end_char, s.label_) for s in spans_from_tags(doc, tags)] == [
        (s.start_char, s.end_char, s.label_) for s in spans
    ]


def test_full_style_features_train_save_and_load(synthetic_data, tmp_path: Path):
    """BILOU tags, line features and a cross-fold gazetteer survive saving and loading."""
    docs = read_corpus(synthetic_data[0])
    config = get_config("full", max_iterations=15, gazetteer_folds=2)
    assert config.tag_scheme == "bilou" and config.line_features
    train_model(docs, config, tmp_path / "m")
    assert (tmp_path / "m" / "pipeline" / "nerops_crf_ner" / "gazetteer.json").is_file()
    extractor = Extractor.load(tmp_path / "m")
    text = docs[0].text
    found = {(e["start"], e["end"], e["label"]) for e in extractor.predict(text)}
    gold = {(s.start, s.end, s.label) for s in docs[0].spans}
    assert len(found & gold) >= len(gold) // 2


def _tiny_tagger(tmp_path: Path, scheme: str):
    """A CRF trained in milliseconds on hand-made sequences: ``n`` (name-like) tokens are entities."""
    import pycrfsuite

    trainer = pycrfsuite.Trainer(verbose=False)
    rng = random.Random(0)
    for _ in range(40):
        words = [rng.choice("nnox") for _ in range(8)]
        tags, i = ["O"] * len(words), 0
        while i < len(words):
            if words[i] == "n":
                j = i
                while j + 1 < len(words) and words[j + 1] == "n":
                    j += 1
                if scheme == "bilou" and i == j:
                    tags[i] = "U-Name"
                else:
                    tags[i] = "B-Name"
                    for k in range(i + 1, j + 1):
                        tags[k] = "L-Name" if scheme == "bilou" and k == j else "I-Name"
                i = j + 1
            else:
                i += 1
        trainer.append([[f"w={w}"] for w in words], tags)
    trainer.set_params({"max_iterations": 30})
    trainer.train(str(tmp_path / "m.crfsuite"))
    tagger = pycrfsuite.Tagger()
    tagger.open(str(tmp_path / "m.crfsuite"))
    return tagger


def _valid(tags: list[str], scheme: str) -> bool:
    previous = "O"
    for tag in [*tags, "O"]:
        kind = tag[0]
        if kind in ("I", "L") and (previous[0] not in ("B", "I") or previous[2:] != tag[2:]):
            return False
        if scheme == "bilou" and previous[0] in ("B", "I") and kind not in ("I", "L"):
            return False
        previous = tag
    return True


@pytest.mark.parametrize("scheme", ["bio", "bilou"])
@pytest.mark.parametrize("penalty", [0.5, 2.0, 8.0])
def test_posterior_decoding_gives_valid_sequences_and_more_entities_with_a_higher_penalty(
    tmp_path: Path, scheme: str, penalty: float
):
    from nerops.model.components import PosteriorDecoder

    tagger = _tiny_tagger(tmp_path, scheme)
    rng = random.Random(5)
    sequences = [[[f"w={rng.choice('nnoxq')}"] for _ in range(rng.randint(1, 12))] for _ in range(60)]
    low, high = PosteriorDecoder(tagger.labels(), penalty), PosteriorDecoder(tagger.labels(), penalty * 4)
    outside_low = outside_high = 0
    for features in sequences:
        tags_low, tags_high = low(tagger, features), high(tagger, features)
        assert len(tags_low) == len(features)
        assert _valid(tags_low, scheme) and _valid(tags_high, scheme), (tags_low, tags_high)
        outside_low += tags_low.count("O")
        outside_high += tags_high.count("O")
    assert outside_high <= outside_low, "a higher O penalty never tags more tokens O"


def test_name_propagation_tags_the_other_occurrences_of_a_found_name():
    from spacy.tokens import Span

    from nerops.model.components import blank_pipeline, propagate_entities

    doc = blank_pipeline().make_doc("Ann Lee  Analyst  References: Ann Lee, and Ann Leeds  Ann Lee")
    doc.ents = [Span(doc, 0, 2, label="Name"), Span(doc, 3, 4, label="Designation")]
    ents = propagate_entities(doc, ["Name"])
    names = sorted((e.start_char, e.end_char) for e in ents if e.label_ == "Name")
    assert names == [(0, 7), (30, 37), (54, 61)], "whole words only: 'Ann Leeds' is not 'Ann Lee'"
    assert propagate_entities(doc, ["Designation"]) == list(doc.ents)  # "Analyst" occurs once
