"""The training dataset: train/dev split of the training zip, the set-aside test set, a version.

The dataset version is a hash of every input byte that shapes training (both zips: test
duplicates are dropped from training), the preprocessing version and the split settings.
Same inputs give the same version; one changed byte gives a new one.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from nerops.data import (
    PREPROCESS_VERSION,
    TEST_ZIP,
    TRAIN_ZIP,
    Document,
    LoadReport,
    fetch_pinned,
    read_corpus,
    sha256_file,
)
from nerops.settings import Settings


@dataclass(frozen=True)
class SplitSpec:
    seed: int = 13
    dev_fraction: float = 0.1


@dataclass
class Dataset:
    train: list[Document]
    dev: list[Document]
    test: list[Document]
    version: str
    sources: dict[str, str]
    split: SplitSpec
    train_report: LoadReport
    test_report: LoadReport
    dropped_duplicates: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        """Counts and repairs, for logs and lineage (no text)."""
        return {
            "version": self.version,
            "sources": self.sources,
            "split": {"seed": self.split.seed, "dev_fraction": self.split.dev_fraction},
            "train_docs": len(self.train),
            "dev_docs": len(self.dev),
            "test_docs": len(self.test),
            "dropped_test_duplicates_from_training": self.dropped_duplicates,
            "train_zip": self.train_report.as_dict(),
            "test_zip": self.test_report.as_dict(),
        }


def dataset_version(source_hashes: dict[str, str], split: SplitSpec) -> str:
    payload = {
        "sources": dict(sorted(source_hashes.items())),
        "preprocess": PREPROCESS_VERSION,
        "split": {"seed": split.seed, "dev_fraction": split.dev_fraction},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def resolve_zips(settings: Settings) -> tuple[Path, Path]:
    """Paths of the verified training and test zips (local copy, cache, or download)."""
    kwargs = {
        "local_dir": settings.data_dir,
        "cache_dir": settings.data_cache,
        "base_url": settings.data_base_url,
    }
    return fetch_pinned(TRAIN_ZIP, **kwargs), fetch_pinned(TEST_ZIP, **kwargs)


def build_dataset(train_zip: Path, test_zip: Path, split: SplitSpec = SplitSpec()) -> Dataset:
    """Read both zips, drop test duplicates from training, split train/dev deterministically."""
    train_report, test_report = LoadReport(), LoadReport()
    train_docs = read_corpus(train_zip, train_report)
    test_docs = read_corpus(test_zip, test_report)
    test_fingerprints = {_fingerprint(doc.text) for doc in test_docs}
    dropped = [doc.name for doc in train_docs if _fingerprint(doc.text) in test_fingerprints]
    kept = [doc for doc in train_docs if _fingerprint(doc.text) not in test_fingerprints]

    order = sorted(kept, key=lambda doc: doc.name)
    random.Random(split.seed).shuffle(order)
    n_dev = round(len(order) * split.dev_fraction)
    sources = {"train": sha256_file(train_zip), "test": sha256_file(test_zip)}
    return Dataset(
        train=order[n_dev:],
        dev=order[:n_dev],
        test=test_docs,
        version=dataset_version(sources, split),
        sources=sources,
        split=split,
        train_report=train_report,
        test_report=test_report,
        dropped_duplicates=dropped,
    )


def load_dataset(settings: Settings, split: SplitSpec = SplitSpec()) -> Dataset:
    train_zip, test_zip = resolve_zips(settings)
    return build_dataset(train_zip, test_zip, split)


def _fingerprint(text: str) -> str:
    return hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()
