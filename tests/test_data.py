"""The loader: quirks repaired with offsets kept right, and bad input named clearly."""

from __future__ import annotations

import http.server
import threading
import zipfile
from pathlib import Path

import pytest

from nerops.data import (
    TRAIN_ZIP,
    LoadReport,
    PinnedFile,
    Span,
    build_document,
    fetch_pinned,
    parse_cv,
    read_corpus,
    sha256_file,
)
from nerops.errors import ChecksumError, DataError
from tests.cvs import cv_xml, write_zip


def spans_text(doc) -> list[tuple[str, str]]:
    return [(s.label, doc.text[s.start : s.end]) for s in doc.spans]


def test_plain_cv_gives_text_and_spans():
    doc = parse_cv(
        "a.xml", cv_xml('<label type="Name">Ann Lee</label> works at <label type="Companies worked at">Acme</label>')
    )
    assert doc.text == "Ann Lee works at Acme"
    assert spans_text(doc) == [("Name", "Ann Lee"), ("Companies worked at", "Acme")]


def test_byte_escapes_are_decoded_before_offsets():
    raw = cv_xml(
        r'Skills \xe2\x80\xa2 <label type="Tech Tools">Python</label> \xe2\x80\x93 '
        r'<label type="Name">Zo\xc3\xab</label>'
    )
    report = LoadReport()
    doc = parse_cv("a.xml", raw, report)
    assert doc.text == "Skills • Python – Zoë"
    assert spans_text(doc) == [("Tech Tools", "Python"), ("Name", "Zoë")]
    assert report.docs_with_escapes == 1 and report.escapes_decoded == 3


def test_escape_cut_by_a_label_tag_is_decoded_and_the_span_keeps_only_its_word():
    # As in the training zip: the tag opens in the middle of an escape sequence.
    doc = parse_cv("a.xml", cv_xml(r'2011)   \xe2\x80\<label type="Designation">x98Volunteer</label> Training'))
    assert "‘Volunteer" in doc.text
    assert spans_text(doc) == [("Designation", "Volunteer")]


def test_simple_escapes_quotes_and_tabs():
    doc = parse_cv("a.xml", cv_xml(r'it\'s\tfine <label type="Soft Skills">team\'s spirit</label>'))
    assert doc.text == "it's fine team's spirit"
    assert spans_text(doc) == [("Soft Skills", "team's spirit")]


def test_stray_quotes_outer_whitespace_and_span_whitespace_are_trimmed():
    report = LoadReport()
    doc = parse_cv(
        "a.xml",
        cv_xml('\n"<label type="Name"> Ann Lee  </label>  Profile  <label type="Degree">BSc</label>"\n'),
        report,
    )
    assert doc.text == "Ann Lee    Profile  BSc"
    assert spans_text(doc) == [("Name", "Ann Lee"), ("Degree", "BSc")]
    assert report.spans_trimmed == 1


def test_span_left_empty_is_dropped_and_counted():
    report = LoadReport()
    doc = parse_cv("a.xml", cv_xml('Ann <label type="Name">  </label>Lee'), report)
    assert doc.spans == ()
    assert report.spans_dropped_empty == 1


def test_xml_entities_are_text():
    doc = parse_cv("a.xml", cv_xml('<label type="Companies worked at">Smith &amp; Sons</label>'))
    assert spans_text(doc) == [("Companies worked at", "Smith & Sons")]


def test_repr_and_errors_never_carry_cv_text():
    doc = parse_cv("a.xml", cv_xml('<label type="Name">Secretia Privatus</label> lives here'))
    assert "Secretia" not in repr(doc)
    with pytest.raises(DataError) as info:
        parse_cv("b.xml", cv_xml("Secretia Privatus <label>oops</label>"))
    assert "Secretia" not in str(info.value)
    with pytest.raises(DataError) as info:
        parse_cv("c.xml", b"<cv>Secretia Privatus <label type='Name'>unclosed</cv>")
    assert "Secretia" not in str(info.value) and "c.xml" in str(info.value)


def test_read_corpus_from_zip_and_folder_agree(tmp_path: Path):
    files = {f"{i}.xml": cv_xml(f'CV {i} <label type="Name">Person {i}</label>') for i in range(3)}
    archive = write_zip(tmp_path / "cvs.zip", {**files, "readme.txt": b"not a cv"})
    with zipfile.ZipFile(archive, "a") as z:
        z.writestr("__MACOSX/cvs/._1.xml", b"\x00\x05junk")
    folder = tmp_path / "folder"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    report = LoadReport()
    from_zip = read_corpus(archive, report)
    from_folder = read_corpus(folder)
    assert [d.text for d in from_zip] == [d.text for d in from_folder]
    assert [d.spans for d in from_zip] == [d.spans for d in from_folder]
    assert report.documents == 3 and report.skipped_files == ["__MACOSX/cvs/._1.xml"]


# --- bad input: each a clear error that names the file ------------------------------------


def test_missing_file(tmp_path: Path):
    with pytest.raises(DataError, match="no such file") as info:
        read_corpus(tmp_path / "nope.zip")
    assert "nope.zip" in str(info.value)


def test_corrupt_zip(tmp_path: Path):
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(DataError, match="not a readable zip") as info:
        read_corpus(bad)
    assert "broken.zip" in str(info.value)


def test_xml_that_does_not_parse_names_the_member(tmp_path: Path):
    archive = write_zip(tmp_path / "cvs.zip", {"good.xml": cv_xml("fine"), "bad.xml": b"<cv><label type='Name'>x</cv>"})
    with pytest.raises(DataError, match="XML does not parse") as info:
        read_corpus(archive)
    assert "cvs.zip!cvs/bad.xml" in str(info.value)


def test_label_without_type_names_the_member(tmp_path: Path):
    archive = write_zip(tmp_path / "cvs.zip", {"x.xml": cv_xml("<label>no type</label>")})
    with pytest.raises(DataError, match="no type attribute") as info:
        read_corpus(archive)
    assert "cvs/x.xml" in str(info.value)


def test_span_outside_its_text_names_the_file():
    with pytest.raises(DataError, match="outside the text") as info:
        build_document("cvs.zip!cvs/7.xml", "short text", [Span(3, 40, "Name")])
    assert "cvs/7.xml" in str(info.value)


def test_wrong_sha256_is_refused(tmp_path: Path):
    local = tmp_path / "local"
    local.mkdir()
    (local / TRAIN_ZIP.local_name).write_bytes(b"tampered")
    with pytest.raises(ChecksumError, match="sha256") as info:
        fetch_pinned(TRAIN_ZIP, local_dir=local, cache_dir=tmp_path / "cache", base_url="http://unused")
    assert TRAIN_ZIP.local_name in str(info.value)


def test_missing_local_copy_says_where_it_looked(tmp_path: Path):
    with pytest.raises(DataError, match="NEROPS_DATA_DIR") as info:
        fetch_pinned(TRAIN_ZIP, local_dir=tmp_path, cache_dir=tmp_path / "cache", base_url="http://unused")
    assert str(tmp_path) in str(info.value)


# --- download into the cache, from a real HTTP server on loopback --------------------------


@pytest.fixture()
def http_folder(tmp_path: Path):
    served = tmp_path / "served"
    served.mkdir()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(served), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_checks_sha256_and_caches(tmp_path: Path, http_folder):
    served, url = http_folder
    archive = write_zip(served / "data.zip", {"1.xml": cv_xml("hello")})
    pinned = PinnedFile("data.zip", "dotin_data.zip", sha256_file(archive))
    cache = tmp_path / "cache"
    got = fetch_pinned(pinned, local_dir=None, cache_dir=cache, base_url=url)
    assert got == cache / "dotin_data.zip" and sha256_file(got) == pinned.sha256
    archive.unlink()  # the second call must not need the server
    assert fetch_pinned(pinned, local_dir=None, cache_dir=cache, base_url=url) == got


def test_download_with_wrong_sha256_leaves_nothing_in_the_cache(tmp_path: Path, http_folder):
    served, url = http_folder
    write_zip(served / "data.zip", {"1.xml": cv_xml("hello")})
    pinned = PinnedFile("data.zip", "dotin_data.zip", "0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError):
        fetch_pinned(pinned, local_dir=None, cache_dir=cache, base_url=url)
    assert list(cache.iterdir()) == []


def test_download_failure_is_a_data_error_with_a_hint(tmp_path: Path, http_folder):
    _, url = http_folder
    pinned = PinnedFile("absent.zip", "dotin_absent.zip", "0" * 64)
    with pytest.raises(DataError, match="NEROPS_DATA_DIR"):
        fetch_pinned(pinned, local_dir=None, cache_dir=tmp_path / "cache", base_url=url)
