"""``make demo`` end to end: the command the README gives, in a fresh state folder, on the real data.

It trains three quick models and a fault version, rolls the second good model out under live traffic on the
demo profile and the bad one after it; about six minutes on 2 cores, the longest test of the suite.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_the_readme_starts_with_the_demo_and_the_test_commands():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert [line.split("#")[0].strip() for line in block] == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo: \$\(STAMP\)\n(\t.*\n)*\t\$\(BIN\)/nerops demo$", makefile, re.M)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    state = tmp_path_factory.mktemp("demo-state")
    env = {
        **os.environ,
        "NEROPS_STATE_DIR": str(state),
        "PREFECT_HOME": str(state / "prefect"),
        "MPLCONFIGDIR": str(state / "matplotlib"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "COLUMNS": "200",
    }
    env.pop("NEROPS_ROLLOUT_PROFILE", None)  # the demo picks its own
    env.pop("PREFECT_API_URL", None)  # the demo runs on Prefect's temporary server
    (state / "prefect").mkdir()
    run = subprocess.run(
        [str(Path(sys.executable).with_name("nerops")), "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        cwd=ROOT,
    )
    return state, run


def test_the_demo_promotes_a_second_model_and_the_judge_rolls_a_bad_one_back(demo):
    from nerops.controller import evidence
    from nerops.controller.records import RecordStore
    from nerops.ledger import Ledger

    state, run = demo
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])
    out = run.stderr + run.stdout  # the demo's console writes to stderr (stdout stays for data), Prefect's logs too
    store = RecordStore(state / "rollouts")
    records = sorted((r for name in store.endpoints() for r in store.all(name)), key=lambda r: r.created)
    good, bad = records
    assert good.state["phase"] == "promoted" and good.state["weights"] == [0, 25, 50, 100]
    assert bad.state["phase"] == "rolled_back" and bad.state["ending"].startswith("unhealthy")
    decided = next(line for line in evidence.read(store.evidence_path(bad)) if line["phase"] == "rolled_back")
    unhealthy = [m for m in decided["look"]["metrics"] if m["status"] == "unhealthy"]
    assert unhealthy and all(m["candidate_samples"] >= m["min_samples"] for m in unhealthy)
    assert f"  {unhealthy[0]['metric']} (" in out  # the demo shows the metric that decided, with its values

    entries = Ledger(state / "ledger" / "ledger.jsonl").entries()
    champions = [e for e in entries if e.kind == "champion_change"]
    assert champions[-1].subject["version"] == good.version and champions[-1].evidence.get("cause") == "rollout"
    kinds = [e.kind for e in entries if e.subject.get("rollout") == bad.rollout_id]
    assert kinds[0] == "rollout_started" and "rollback" in kinds and kinds[-1] == "rollout_finished"
    assert "ledger: ledger ok" in out and "disagreements: none" in out

    listed = [line for line in out.splitlines() if line.startswith((good.rollout_id + " ", bad.rollout_id + " "))]
    assert [line.split()[1] for line in listed] == ["promoted", "rolled_back"]
    for record in (good, bad):
        report = state / "reports" / f"{record.rollout_id.replace('/', '-')}.md"
        assert f"# Rollout {record.rollout_id}: {record.state['phase']}" in report.read_text()
        assert report.with_suffix(".html").exists()
    page = (state / "dashboard" / "index.html").read_text()
    assert good.rollout_id in page and bad.rollout_id in page  # both rollouts on the verdict timeline
    assert "rollback" in page and "rollout_finished" in page  # and their decisions marked
