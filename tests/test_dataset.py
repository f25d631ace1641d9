"""Dataset version, split and duplicate handling."""

from __future__ import annotations

import zipfile
from pathlib import Path

from nerops.dataset import SplitSpec, build_dataset
from tests.conftest import TEST_ZIP, TRAIN_ZIP, needs_real_data
from tests.cvs import cv_xml, synthetic_zip, write_zip


def test_same_inputs_give_the_same_version_and_split(synthetic_data):
    a = build_dataset(*synthetic_data)
    b = build_dataset(*synthetic_data)
    assert a.version == b.version
    assert [d.name for d in a.train] == [d.name for d in b.train]
    assert [d.name for d in a.dev] == [d.name for d in b.dev]


def test_one_changed_byte_gives_a_new_version(synthetic_data, tmp_path: Path):
    train, test = synthetic_data
    changed = tmp_path / "train.zip"
    data = bytearray(train.read_bytes())
    # flip one byte of the zip's trailing comment area: the content still reads the same
    changed.write_bytes(bytes(data) + b"\x00")
    assert build_dataset(changed, test).version != build_dataset(train, test).version
    changed_test = tmp_path / "test.zip"
    changed_test.write_bytes(test.read_bytes() + b"\x00")
    assert build_dataset(train, changed_test).version != build_dataset(train, test).version


def test_one_changed_character_of_a_cv_gives_a_new_version(tmp_path: Path, synthetic_data):
    _, test = synthetic_data
    a = write_zip(tmp_path / "a.zip", {"1.xml": cv_xml('<label type="Name">Ann Lee</label>')})
    b = write_zip(tmp_path / "b.zip", {"1.xml": cv_xml('<label type="Name">Ann Lea</label>')})
    assert build_dataset(a, test).version != build_dataset(b, test).version


def test_split_seed_and_fraction_shape_the_version_and_the_split(synthetic_data):
    a = build_dataset(*synthetic_data, SplitSpec(seed=1))
    b = build_dataset(*synthetic_data, SplitSpec(seed=2))
    c = build_dataset(*synthetic_data, SplitSpec(seed=1, dev_fraction=0.2))
    assert len({a.version, b.version, c.version}) == 3
    assert [d.name for d in a.dev] != [d.name for d in b.dev]
    assert len(c.dev) == 8 and len(a.dev) == 4


def test_train_and_dev_are_disjoint_and_cover_the_training_zip(synthetic_data):
    ds = build_dataset(*synthetic_data)
    names = [d.name for d in ds.train + ds.dev]
    assert len(names) == len(set(names)) == 40


def test_test_duplicates_are_dropped_from_training(tmp_path: Path):
    test = synthetic_zip(tmp_path / "test.zip", 3, seed=5, folder="test")
    with zipfile.ZipFile(test) as z:
        copied = z.read("test/1.xml")
    train = write_zip(
        tmp_path / "train.zip",
        {"a.xml": cv_xml("one CV"), "b.xml": copied.replace(b"  ", b"   "), "c.xml": cv_xml("another")},
        folder="train",
    )
    ds = build_dataset(train, test, SplitSpec(dev_fraction=0.0))
    assert ds.dropped_duplicates == ["train.zip!train/b.xml"]
    assert sorted(d.name for d in ds.train) == ["train.zip!train/a.xml", "train.zip!train/c.xml"]


@needs_real_data
def test_real_zips_counts_and_repairs():
    ds = build_dataset(TRAIN_ZIP, TEST_ZIP)
    assert ds.train_report.documents == 310 and ds.train_report.spans == 15681
    assert ds.test_report.documents == 50 and ds.test_report.spans == 2543
    assert ds.train_report.spans_trimmed == 260 and ds.test_report.spans_trimmed == 49
    assert ds.test_report.skipped_files == ["__MACOSX/set_aside_test_v2_50cvs/._Indeed_3.xml"]
    assert ds.train_report.docs_with_escapes >= 167 and ds.test_report.docs_with_escapes >= 23
    assert ds.dropped_duplicates  # the set-aside CV that also sits in the training zip
    assert len(ds.train) + len(ds.dev) == 310 - len(ds.dropped_duplicates)
    for doc in ds.train + ds.test:
        assert "\\x" not in doc.text
        for span in doc.spans:
            piece = doc.text[span.start : span.end]
            assert piece == piece.strip() and piece
