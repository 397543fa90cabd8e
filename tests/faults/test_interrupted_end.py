"""Ctrl-C or SIGTERM while a run writes its report and finishes its trackers: the status is written all the same
(a run orphaned by a killed sweep must not stay ``running``), and a run that was completing says it was
interrupted, so that running it again does the end again rather than skipping a run without its report."""

from __future__ import annotations

import pytest

import emergence.reports
from emergence.recorder import INTERRUPTED_AT_THE_END
from emergence.rundir import read_status, run_directory
from emergence.runner import run_one
from emergence.spec import resolve
from tests.faults.harness import data_lines, events, fault_spec, write_spec


def test_an_interrupt_in_the_report_leaves_the_run_to_be_finished_by_a_rerun(tmp_path, monkeypatch):
    spec = fault_spec(tmp_path / "runs")
    spec["measures"] = [m for m in spec["measures"] if m["name"] != "hessian_trace"]
    spec["training"]["steps"] = 10
    (run_spec,) = resolve(str(write_spec(tmp_path / "spec.yaml", spec)), [])
    run_dir = run_directory(run_spec)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(emergence.reports, "write_report", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_one(run_spec)
    status = read_status(run_dir)
    assert status["state"] == "failed" and status["reason"] == INTERRUPTED_AT_THE_END
    assert not (run_dir / "report.html").exists()
    before = data_lines(run_dir)

    outcome = run_one(run_spec)
    assert outcome.state == "completed" and read_status(run_dir)["state"] == "completed"
    assert (run_dir / "report.html").exists()
    assert data_lines(run_dir) == before  # the end done again, its verdict tables once
    assert [e["step"] for e in events(run_dir, "resume")] == [10]
