"""No personal data of the training set in model artifacts; the audit that checks it; the gate that refuses.

A ``full``-feature model (line features, cross-fold gazetteers, BILOU) is trained for a few
iterations on synthetic CVs with planted names, e-mail addresses, phone numbers and profile URLs.
The files are read here directly (raw bytes, the CRF's own feature list, the string store), not
through the audit under test.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import uuid
from pathlib import Path

import pycrfsuite
import pytest
from click.testing import CliRunner

from nerops.cli import main
from nerops.data import read_corpus
from nerops.gate import GatePolicy
from nerops.gating import run_gate
from nerops.governance import Governance, RegistryAnchor
from nerops.ledger import Ledger
from nerops.model.components import blank_pipeline
from nerops.model.config import get_config
from nerops.model.personal import PersonalStrings, audit_folder
from nerops.model.pipeline import train_model
from nerops.registry.mlflow_registry import MlflowRegistry
from tests.cvs import cv_xml, label, synthetic_cv, write_zip

# rare names: they occur only in Name spans (the CV's header and its reference line, as in the dotin data)
PLANTED = [("Quorra", "Vashti"), ("Ysolde", "Brannigan"), ("Tavish", "Okonkwo"), ("Ilsabet", "Marchetti")]
# "Will" is also a common word in every CV: it keeps its word feature, the pair never appears
COMMON_FIRST = ("Will", "Harrowgate")
PEOPLE = [*PLANTED, COMMON_FIRST]


def _planted_cv(rng: random.Random, index: int) -> tuple[str, dict[str, str]]:
    first, last = PEOPLE[index % len(PEOPLE)]
    person = {
        "first": first.lower(),
        "last": last.lower(),
        "email": f"{first.lower()}.{last.lower()}{index}@planted-mail.example",
        "phone": f"+44 20 7946 {1000 + index}",
        "url": f"https://www.linkedin.com/in/{first.lower()}-{last.lower()}-{index}",
    }
    glue = "" if index % 3 == 0 else "  "  # a third glued to the next word, as some dotin CVs are
    head = (
        f'\n"{label("Name", f"{first} {last}")}{glue}Mobile {person["phone"]}  '
        f"{label('Email Address', person['email'])}  Profile {person['url']}  "
        "I will lead teams and will deliver what the business will need.  "
    )
    body = synthetic_cv(rng).lstrip('\n"')
    tail = f'  References: {label("Name", f"{first} {last}")}, available on request."\n'
    return head + body.rstrip('"\n') + tail, person


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory):
    """Training zip with planted personal data, and a full-feature model trained on it."""
    rng = random.Random(11)
    files, people = {}, []
    for i in range(30):
        body, person = _planted_cv(rng, i)
        files[f"{i}.xml"] = cv_xml(body)
        people.append(person)
    folder = tmp_path_factory.mktemp("planted")
    train_zip = write_zip(folder / "train.zip", files, folder="train")
    model = folder / "model"
    config = get_config("full", max_iterations=8, gazetteer_folds=3)
    train_model(read_corpus(train_zip), config, model, dataset_version="planted")
    return train_zip, model, people


def _feature_strings(model: Path) -> list[str]:
    """What the model's files say in words: CRF labels and features, the string store, the gazetteer."""
    tagger = pycrfsuite.Tagger()
    tagger.open(str(model / "pipeline/nerops_crf_ner/model.crfsuite"))
    info = tagger.info()
    strings = [*info.attributes, *info.labels]
    tagger.close()
    strings += json.loads((model / "pipeline/vocab/strings.json").read_text())
    gazetteer = json.loads((model / "pipeline/nerops_crf_ner/gazetteer.json").read_text())
    strings += [*gazetteer["phrases"], *gazetteer["words"]]
    return [s.lower() for s in strings]


def test_no_planted_email_phone_or_url_in_any_artifact_file(planted):
    _, model, people = planted
    files = [p for p in model.rglob("*") if p.is_file()]
    assert len(files) >= 8
    for path in files:
        raw = path.read_bytes().lower()
        for person in people:
            for kind in ("email", "phone", "url"):
                assert person[kind].encode() not in raw, f"a planted {kind} is in {path.relative_to(model)}"


def test_no_planted_name_in_feature_strings_or_the_string_store(planted):
    _, model, people = planted
    strings = _feature_strings(model)
    assert len(strings) > 1000
    components = {part for s in strings for part in re.split(r"[=|:\s]+", s)}
    for person in people:
        first, last = person["first"], person["last"]
        together = re.compile(rf"(?<![a-z]){first}[^a-z0-9]?{last}(?![a-z])")
        assert not [s for s in strings if together.search(s)], f"the name {first.title()} {last.title()} is there"
        assert not [part for part in components if last in part], f"{last.title()} is in a feature string"
        if first != "will":
            assert not [part for part in components if first in part]
    # the rule keeps a word that is common outside names, and the model's other words
    assert "lower=will" in strings
    assert {"lower=python", "lower=experience"} <= set(strings)
    assert "lower=<email>" in strings and "lower=<url>" in strings


def test_gazetteer_holds_no_personal_label(planted):
    _, model, _ = planted
    gazetteer = json.loads((model / "pipeline/nerops_crf_ner/gazetteer.json").read_text())
    labels = {label for counts in gazetteer["phrases"].values() for label in counts if label}
    assert labels and not labels & {"Name", "Email Address", "Phone"}


def test_the_model_still_finds_names_emails_and_phones(planted):
    from nerops.model.pipeline import Extractor

    _, model, _ = planted
    text = "Zephyrine Caldwell  zephyrine.caldwell@elsewhere.example  Mobile +44 20 7946 5555  EXPERIENCE"
    found = {(e["label"], e["text"]) for e in Extractor.load(model).predict(text)}
    assert ("Email Address", "zephyrine.caldwell@elsewhere.example") in found
    assert ("Phone", "+44 20 7946 5555") in found


def _old_way(model: Path, train_zip: Path, into: Path) -> Path:
    """The model as the old training code saved it: the string store of the pipeline that read the CVs."""
    old = into / "old-way"
    shutil.copytree(model, old)
    reader = blank_pipeline()
    for doc in read_corpus(train_zip):
        reader.make_doc(doc.text)
    reader.vocab.strings.to_disk(old / "pipeline/vocab/strings.json")
    return old


def test_audit_passes_the_new_model_and_fails_one_built_the_old_way(planted, tmp_path: Path):
    train_zip, model, people = planted
    personal = PersonalStrings.from_documents(read_corpus(train_zip))
    # the planted ones, and those of the synthetic CV bodies (first.last@example.com)
    assert personal.sizes()["emails"] > 30 and personal.sizes()["phones"] > 30
    clean = audit_folder(model, personal)
    assert clean.ok and clean.total == 0, clean.describe()

    old = _old_way(model, train_zip, tmp_path)
    result = CliRunner().invoke(main, ["audit-artifacts", "--model", str(old), "--data", str(train_zip)])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["found"]["emails"] == report["searched"]["emails"] == personal.sizes()["emails"]
    assert report["found"]["name_words"] >= 2 * len(PLANTED)
    assert set(report["per_file"]) == {"pipeline/vocab/strings.json"}
    for person in people:  # counts only: no personal string in what the command prints
        for value in (person["email"], person["phone"], person["url"], person["last"]):
            assert value not in result.output.lower()

    ok = CliRunner().invoke(main, ["audit-artifacts", "--model", str(model), "--data", str(train_zip)])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["ok"] is True


def test_audit_of_a_missing_folder_is_a_clear_error(planted, tmp_path: Path):
    train_zip, _, _ = planted
    result = CliRunner().invoke(main, ["audit-artifacts", "--model", str(tmp_path / "nope"), "--data", str(train_zip)])
    assert result.exit_code == 2
    assert "no such model folder" in result.output


def test_the_gate_refuses_a_model_that_fails_the_audit(planted, tracking_uri: str, tmp_path: Path):
    train_zip, model, _ = planted
    registry = MlflowRegistry(tracking_uri, f"ner-{uuid.uuid4().hex[:8]}", artifact_root=(tmp_path / "art").as_uri())
    gov = Governance(registry, Ledger(tmp_path / "ledger.jsonl", RegistryAnchor(registry)), actor="tester@test")
    old = _old_way(model, train_zip, tmp_path)
    version = gov.register(
        old, dataset_version="planted", config_hash="cfg", git_commit="abc", libraries={}, params={}, metrics={}
    ).version
    docs = read_corpus(train_zip)[:5]
    policy = GatePolicy(min_micro_f1=0.0, default_min_label_f1=0.0, min_label_f1={})
    personal = PersonalStrings.from_documents(read_corpus(train_zip))
    result, details = run_gate(gov, version, docs, policy, test_sha256="0" * 64, personal=personal)
    assert not result.passed
    assert [check.name for check in result.checks if not check.passed] == ["privacy_audit"]
    assert details["privacy_audit"]["found"]["emails"] == personal.sizes()["emails"]
    entry = gov.ledger.find("gate", model=gov.model, version=version)[-1]
    assert entry.evidence["verdict"] == "fail" and "personal strings" in entry.evidence["summary"]
    assert "planted-mail" not in json.dumps(entry.evidence)

    unaudited, _ = run_gate(gov, version, docs, policy, test_sha256="0" * 64, personal=None)
    assert [check.name for check in unaudited.checks if not check.passed] == ["privacy_audit"]


def test_a_name_of_a_cv_left_out_by_train_fraction_stays_out_too(tmp_path: Path):
    """'Quillfeather' is a name in one CV and, unlabelled, a word in another: rare outside names either way."""
    rng = random.Random(5)
    bodies = {f"{i:02d}.xml": synthetic_cv(rng) for i in range(10)}
    config = get_config("quick", max_iterations=3, train_fraction=0.3)
    order = sorted(bodies)  # the subset train_model takes: sorted names, shuffled with the config's seed
    random.Random(config.seed).shuffle(order)
    inside, outside = order[0], order[-1]
    bodies[outside] = bodies[outside].replace('"\n', f'  References: {label("Name", "Oren Quillfeather")}"\n')
    mention = "  Volunteer at the Quillfeather trust; Quillfeather grant, 2019."  # twice: over the min. frequency
    bodies[inside] = bodies[inside].replace('"\n', mention + '"\n')
    train_zip = write_zip(tmp_path / "train.zip", {name: cv_xml(body) for name, body in bodies.items()}, "train")
    docs = read_corpus(train_zip)
    meta = train_model(docs, config, tmp_path / "model")
    assert meta["train_documents"] == 3
    strings = _feature_strings_of(tmp_path / "model")
    assert not [s for s in strings if "quillfeather" in s], "the word is hidden, though its Name CV was not used"
    assert audit_folder(tmp_path / "model", PersonalStrings.from_documents(docs)).ok


def _feature_strings_of(model: Path) -> list[str]:
    tagger = pycrfsuite.Tagger()
    tagger.open(str(model / "pipeline/nerops_crf_ner/model.crfsuite"))
    strings = [*tagger.info().attributes, *json.loads((model / "pipeline/vocab/strings.json").read_text())]
    tagger.close()
    return [s.lower() for s in strings]
