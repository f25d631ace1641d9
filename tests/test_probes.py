"""Probe traffic: when a rollout sends it (a table), and which resumes it sends."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

from nerops.controller.probes import probe_texts, wanted
from nerops.errors import ConfigurationError
from nerops.rollout.policy import Probes

SHORT, ALWAYS = Probes(rate=2), Probes(rate=2, when="always")


@pytest.mark.parametrize(
    ("probes", "kind", "phase", "verdict", "sends"),
    [
        (None, "canary", "progressing", "no_data", False),  # the profile sends none
        (SHORT, "canary", "progressing", "no_data", True),  # live traffic short of the minimum
        (SHORT, "canary", "progressing", "healthy", False),  # the minimum is met: live traffic decides
        (SHORT, "canary", "progressing", "inconclusive", False),
        (SHORT, "canary", "progressing", "error", False),  # the metrics failed: probes would not be read
        (SHORT, "shadow", "progressing", "no_data", True),
        (SHORT, "bake", "progressing", "no_data", True),
        (SHORT, "readiness", "progressing", "no_data", False),  # readiness is the smoke requests' job
        (SHORT, "canary", "paused", "no_data", True),  # traffic frozen, the judge still looks
        (SHORT, "canary", "awaiting_approval", "no_data", True),
        (ALWAYS, "canary", "progressing", "healthy", True),
        (ALWAYS, "readiness", "progressing", "healthy", False),
        (ALWAYS, "canary", "promoted", "healthy", False),  # ended: nothing to judge
        (SHORT, "canary", "rolled_back", "no_data", False),
        (ALWAYS, "canary", "aborted", None, False),
    ],
)
def test_when_a_rollout_sends_probes(probes, kind, phase, verdict, sends):
    assert wanted(probes, kind, phase, verdict) is sends


def test_probe_resumes_come_from_the_configured_folder_or_zip_else_the_default(tmp_path, synthetic_data):
    from nerops.data import read_corpus

    _, test_zip = synthetic_data
    expected = [doc.text for doc in read_corpus(test_zip)]
    assert probe_texts(Probes(rate=1), test_zip) == expected  # the default: the test CVs
    assert probe_texts(Probes(rate=1, folder=str(test_zip)), None) == expected
    folder = tmp_path / "cvs"
    folder.mkdir()
    with zipfile.ZipFile(test_zip) as zf:
        for name in zf.namelist():
            if name.endswith(".xml"):
                (folder / Path(name).name).write_bytes(zf.read(name))
    assert sorted(probe_texts(Probes(rate=1, folder=str(folder)), test_zip)) == sorted(expected)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda tmp: None, "set probes.folder"),
        (lambda tmp: str(tmp / "missing"), "probe resumes from"),
        (lambda tmp: (tmp / "empty").mkdir() or str(tmp / "empty"), "no *.xml CV in it"),
    ],
)
def test_probe_resumes_that_cannot_be_read_are_a_configuration_error(tmp_path, setup, message):
    folder = setup(tmp_path)
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        probe_texts(Probes(rate=1, folder=folder), None)
