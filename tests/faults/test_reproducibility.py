"""Reproducibility, stated and kept: every run records the torch version, torch's thread count and the CPU model
(journal, status.json, tracker params), and a run resumed under other ones says so. That the same ones give the
same run bit for bit is what every other fault case checks against its reference."""

from __future__ import annotations

import logging

import pytest
import torch

from emergence.environment import BIT_FOR_BIT_KEYS, environment_changes, run_environment
from emergence.rundir import read_status, run_directory
from emergence.runner import run_one
from emergence.spec import resolve
from tests.faults.harness import events, fault_spec, mlflow_run, status_of, write_spec

pytestmark = pytest.mark.integration


def test_every_run_records_what_bit_for_bit_depends_on(reference):
    status = status_of(reference.run_dir)
    environment = status["environment"]
    assert environment["torch_version"] == torch.__version__
    assert environment["torch_threads"] == 1  # the spec's threads_per_worker
    assert environment["cpu"] and environment["python"]
    (start,) = events(reference.run_dir, "start")
    assert start["environment"] == environment
    params = mlflow_run(reference.tracking_uri, reference.run_key).data.params
    assert params["run.torch_threads"] == "1"
    assert params["run.torch_version"] == torch.__version__
    assert params["run.cpu"] == environment["cpu"]


def test_a_run_resumed_under_another_thread_count_warns_and_records_it(tmp_path, caplog):
    spec = fault_spec(tmp_path / "runs")
    spec["measures"] = [m for m in spec["measures"] if m["name"] != "hessian_trace"]
    spec["training"]["steps"] = 20
    (run_spec,) = resolve(str(write_spec(tmp_path / "spec.yaml", spec)), [])
    threads = torch.get_num_threads()

    def stop_at_15(result, values):
        if result.step == 15:
            raise KeyboardInterrupt

    try:
        torch.set_num_threads(1)
        with pytest.raises(KeyboardInterrupt):
            run_one(run_spec, progress=stop_at_15)
        torch.set_num_threads(2)
        with caplog.at_level(logging.WARNING, logger="emergence.recorder"):
            outcome = run_one(run_spec)
    finally:
        torch.set_num_threads(threads)
    assert outcome.state == "completed"
    run_dir = run_directory(run_spec)
    (changed,) = events(run_dir, "environment_changed")
    assert changed["changes"] == {"torch_threads": [1, 2]}
    assert read_status(run_dir)["environment_changed"] == {"torch_threads": [1, 2]}
    assert read_status(run_dir)["environment"]["torch_threads"] == 2
    assert any("resumes under another environment" in r.getMessage() and "torch_threads 1 -> 2" in r.getMessage() for r in caplog.records)


def test_environment_changes_name_only_what_breaks_bit_for_bit():
    now = run_environment()
    assert set(BIT_FOR_BIT_KEYS) <= set(now)
    assert environment_changes(None, now) == {}  # a journal from before the environment was recorded
    assert environment_changes({**now, "python": "2.7"}, now) == {}
    assert environment_changes({**now, "cpu": "another"}, now) == {"cpu": ["another", now["cpu"]]}
