"""Progress inside flows goes to the Prefect run logger; outside a run, to the ``nerops`` logger."""

from __future__ import annotations

import logging

from nerops.lifecycle import run_progress


def test_progress_outside_a_run_is_logged_every_tenth(caplog):
    caplog.set_level(logging.INFO, logger="nerops")
    progress = run_progress()
    for done in range(0, 201, 5):
        progress("scoring", done, 200)
    lines = [r.getMessage() for r in caplog.records if r.name == "nerops"]
    assert lines[0] == "scoring: 0/200 (0 %)" and lines[-1] == "scoring: 200/200 (100 %)"
    assert len(lines) == 11  # 0, 10, ..., 100 %: not one line per document


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_progress_inside_a_flow_goes_to_its_run_logger(prefect_harness):
    from prefect import flow

    @flow(name="progress-probe")
    def probe() -> None:
        progress = run_progress(every_percent=50)
        for done in range(5):
            progress("training", done, 4)

    kept, run_logger = Kept(), logging.getLogger("prefect.flow_runs")  # what the run logger writes to
    run_logger.addHandler(kept)
    try:
        probe()
    finally:
        run_logger.removeHandler(kept)
    lines = [r.getMessage() for r in kept.records if "training:" in r.getMessage()]
    assert lines == ["training: 0/4 (0 %)", "training: 2/4 (50 %)", "training: 4/4 (100 %)"]
    assert all(getattr(r, "flow_run_id", None) for r in kept.records if "training:" in r.getMessage())
