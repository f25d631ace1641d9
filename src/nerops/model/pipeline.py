"""Train, save, load and run the NER pipeline: ``text -> [{label, start, end, text}]``.

The saved model is a folder: ``pipeline/`` (a spaCy pipeline whose components are the
tokenizer, the CRF recognizer and the contact rules; a fault model, :mod:`nerops.model.faults`,
ends with one more) and ``model.json`` (config, config hash,
dataset version, token-alignment report, training time, dev scores, library versions).
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pycrfsuite
import spacy
from spacy.language import Language

from nerops.data import Document
from nerops.errors import ModelError
from nerops.evaluation import score
from nerops.model import components, faults  # importing them registers their spaCy factories
from nerops.model.config import TrainConfig
from nerops.model.features import Gazetteer, cross_gazetteers, doc_features
from nerops.model.personal import hidden_words, name_spans, name_token_ids

Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``: called as training goes."""

META_FILE = "model.json"
PIPELINE_DIR = "pipeline"


def _no_progress(phase: str, done: int, total: int) -> None:
    return None


@dataclass
class AlignmentReport:
    """Gold spans that do not fall on token boundaries cannot be learned: counted, per label."""

    spans: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {"spans": self.spans, "dropped": sum(self.dropped.values()), "dropped_per_label": dict(self.dropped)}


def chunk_text(text: str, window_chars: int) -> list[tuple[int, str]]:
    """Split ``text`` into pieces of at most ``window_chars``, at a line break or space if possible.

    Returns ``(offset, piece)`` pairs with ``text[offset:offset + len(piece)] == piece``.
    """
    chunks = []
    start = 0
    while len(text) - start > window_chars:
        limit = start + window_chars
        cut = text.rfind("  ", start + window_chars // 2, limit)
        if cut < 0:
            cut = text.rfind(" ", start + window_chars // 2, limit)
        cut = limit if cut < 0 else cut + 1
        chunks.append((start, text[start:cut]))
        start = cut
    if start < len(text) or not chunks:
        chunks.append((start, text[start:]))
    return chunks


class Extractor:
    """A loaded model: predicts entities with character offsets into the caller's text."""

    def __init__(self, nlp: Language, meta: dict[str, object]) -> None:
        self.nlp = nlp
        self.meta = meta
        self.window_chars = int(meta["config"]["window_chars"])  # type: ignore[index]

    @classmethod
    def load(cls, path: Path) -> Extractor:
        return cls(*load_pipeline(path))

    @property
    def fault(self) -> faults.FaultSpec | None:
        """The fault built into this pipeline (:mod:`nerops.model.faults`), or None for a normal model."""
        return faults.fault_of(self.nlp)

    def predict(self, text: str) -> list[dict[str, object]]:
        """Entities of one text, sorted by position; ``[]`` for empty or blank text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        if not text.strip():
            return []
        entities = []
        for offset, piece in chunk_text(text, self.window_chars):
            doc = self.nlp(piece)
            entities += [
                {
                    "label": ent.label_,
                    "start": offset + ent.start_char,
                    "end": offset + ent.end_char,
                    "text": ent.text,
                }
                for ent in doc.ents
            ]
        return entities

    def predict_spans(self, texts: Iterable[str]) -> list[list[tuple[int, int, str]]]:
        return [[(e["start"], e["end"], e["label"]) for e in self.predict(text)] for text in texts]


def load_pipeline(path: Path) -> tuple[Language, dict[str, object]]:
    """Load a saved model folder (``model.json`` + ``pipeline/``)."""
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file() or not (path / PIPELINE_DIR).is_dir():
        raise ModelError(f"{path}: not a model folder (expected {META_FILE} and {PIPELINE_DIR}/)")
    meta = json.loads(meta_path.read_text())
    try:
        nlp = spacy.load(path / PIPELINE_DIR)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: the spaCy pipeline does not load ({exc})") from exc
    return nlp, meta


class _ProgressTrainer(pycrfsuite.Trainer):
    """A CRF trainer that reports progress through a callback and prints nothing."""

    def __init__(self, progress: Progress, total: int) -> None:
        super().__init__(verbose=True)  # events reach the on_* hooks only when verbose
        self._progress = progress
        self._total = total

    def on_iteration(self, log: str, info: dict[str, object]) -> None:
        self._progress("optimising", int(info["num"]), self._total)

    def on_featgen_progress(self, log: str, percent: int) -> None:
        self._progress("indexing", int(percent), 100)

    def _quiet(self, log: str) -> None:
        return None

    on_start = on_featgen_end = on_prepared = on_prepare_error = on_optimization_end = on_end = _quiet


def align(nlp: Language, doc_in: Document, report: AlignmentReport):
    """The spaCy Doc of a Document with its gold spans on token boundaries (others dropped)."""
    doc = nlp.make_doc(doc_in.text)
    spans = []
    for span in doc_in.spans:
        report.spans += 1
        aligned = doc.char_span(span.start, span.end, label=span.label)
        if aligned is None:
            report.dropped[span.label] += 1
        else:
            spans.append(aligned)
    return doc, spans


def train_model(
    train_docs: Sequence[Document],
    config: TrainConfig,
    out_dir: Path,
    *,
    dev_docs: Sequence[Document] = (),
    dataset_version: str = "unknown",
    progress: Progress = _no_progress,
) -> dict[str, object]:
    """Train a pipeline on ``train_docs`` and save it to ``out_dir``; returns its metadata."""
    if not train_docs:
        raise ModelError("no training documents")
    started = time.perf_counter()
    every = sorted(train_docs, key=lambda d: d.name)
    docs = list(every)
    if config.train_fraction < 1:
        import random

        random.Random(config.seed).shuffle(docs)
        docs = docs[: max(1, round(len(docs) * config.train_fraction))]

    report = AlignmentReport()
    # this pipeline's string store fills with the training text: it is never saved
    reader = components.blank_pipeline()
    aligned = [align(reader, document, report) for document in docs]
    names = [name_spans(doc, document) for (doc, _), document in zip(aligned, docs, strict=True)]
    # the names of every training CV (those a train_fraction leaves out too) and of the dev CVs: a
    # name of one CV can be an ordinary-looking word in another, and none may reach the model files
    named = [(doc, spans) for (doc, _), spans in zip(aligned, names, strict=True)]
    used = {document.name for document in docs}
    for document in [*(d for d in every if d.name not in used), *dev_docs]:
        doc = reader.make_doc(document.text)
        named.append((doc, name_spans(doc, document)))
    hidden = hidden_words(named)
    gazetteer = Gazetteer.build(aligned, hidden) if config.gazetteer_folds else None
    # each document sees a gazetteer built without it, as unseen text will at prediction time
    doc_gazetteers = cross_gazetteers(aligned, config.gazetteer_folds, config.seed, hidden) if gazetteer else None
    trainer = _ProgressTrainer(progress, config.max_iterations)
    for i, (doc, spans) in enumerate(aligned, 1):
        features = doc_features(
            doc,
            config.window,
            gazetteer=doc_gazetteers[i - 1] if doc_gazetteers else None,
            line_features=config.line_features,
            hidden=hidden,
            name_tokens=name_token_ids(names[i - 1]),
        )
        trainer.append(features, components.bio_tags(doc, spans, config.tag_scheme))
        progress("features", i, len(docs))
    params: dict[str, object] = {"max_iterations": config.max_iterations, "feature.minfreq": config.min_feature_freq}
    if config.algorithm == "lbfgs":
        params["c1"] = config.c1
    if config.algorithm in ("lbfgs", "l2sgd"):
        params["c2"] = config.c2
    trainer.select(config.algorithm)
    trainer.set_params(params)

    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        crf_path = Path(tmp) / "model.crfsuite"
        trainer.train(str(crf_path))
        nlp = components.blank_pipeline()  # a fresh string store: none of the training text
        crf = nlp.add_pipe(
            "nerops_crf_ner",
            config={
                "window": config.window,
                "line_features": config.line_features,
                "gazetteer": gazetteer is not None,
                "o_penalty": config.o_penalty,
                "propagate": list(config.propagate_labels),
            },
        )
        crf.set_model(crf_path)
        if gazetteer is not None:
            crf.set_gazetteer(gazetteer)
        nlp.add_pipe("nerops_contact_rules")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        (out_dir / PIPELINE_DIR).parent.mkdir(parents=True, exist_ok=True)
        nlp.to_disk(out_dir / PIPELINE_DIR)
    train_seconds = time.perf_counter() - started

    meta: dict[str, object] = {
        "config": config.model_dump(),
        "config_hash": config.config_hash(),
        "dataset_version": dataset_version,
        "train_documents": len(docs),
        "alignment": report.as_dict(),
        "train_seconds": round(train_seconds, 1),
        "libraries": library_versions(),
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2))
    if dev_docs:
        extractor = Extractor.load(out_dir)
        dev = score(
            [[(s.start, s.end, s.label) for s in d.spans] for d in dev_docs],
            extractor.predict_spans(d.text for d in dev_docs),
            bootstrap_samples=200,
        )
        meta["dev_micro"] = dev["micro"]
        (out_dir / META_FILE).write_text(json.dumps(meta, indent=2))
    return meta


def build_fault_model(
    source_dir: Path, out_dir: Path, spec: faults.FaultSpec, *, from_version: str, from_sha256: str, reason: str
) -> Path:
    """A copy of the model folder ``source_dir`` at ``out_dir`` whose pipeline ends with the fault ``spec``
    (:mod:`nerops.model.faults`: it acts only in a serving worker); ``model.json`` says where it came from."""
    nlp, meta = load_pipeline(source_dir)
    existing = faults.fault_of(nlp)
    if existing is not None:
        raise ModelError(f"{source_dir}: already a fault model ({existing.kind}); build faults from a normal model")
    nlp.add_pipe(faults.FAULT_FACTORY, last=True, config={"kind": spec.kind, "params": dict(spec.params)})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=False)
    nlp.to_disk(out_dir / PIPELINE_DIR)
    meta["fault"] = {
        "kind": spec.kind,
        "params": dict(spec.params),
        "from_version": str(from_version),
        "from_artifact_sha256": from_sha256,
        "reason": reason,
    }
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=2))
    return out_dir


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("nerops", "spacy", "python-crfsuite", "mlflow", "prefect"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions
