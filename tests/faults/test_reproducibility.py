"""Reproducibility, stated and kept: every run records the torch version, torch's thread count and the CPU model
(journal, status.json, tracker params), and a run resumed under other ones says so. The same ones give the same
run bit for bit (every other fault case checks that against its reference, on one thread; here on two), another
thread count gives other values under the same run key."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from emergence.analysis.precursor import xcorr_lag_steps
from emergence.environment import BIT_FOR_BIT_KEYS, environment_changes, run_environment
from emergence.rundir import read_status, run_directory
from emergence.runner import run_one
from emergence.spec import resolve
from tests.faults.harness import data_lines, events, fault_spec, mlflow_run, run_here, status_of, write_spec

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


def test_the_same_thread_count_repeats_a_run_bit_for_bit_and_another_does_not(tmp_path):
    """What docs/reliability.md states: on one machine, a spec run twice on 2 threads is the same run bit for bit;
    on 1 thread it is the same run key but other values (torch splits its reductions by thread)."""
    import torch

    spec = fault_spec(tmp_path / "runs")
    spec["measures"] = [m for m in spec["measures"] if m["name"] != "hessian_trace"]
    spec["training"]["steps"] = 4  # measured at 0, 1, 2 and 4: the values part from step 2 on
    run_dirs = {}
    for name, threads in (("two", 2), ("two_again", 2), ("one", 1)):
        spec["execution"] = {"output_dir": str(tmp_path / name), "threads_per_worker": threads}
        (run_spec,) = resolve(str(write_spec(tmp_path / f"{name}.yaml", spec)), [])
        assert run_here(run_spec).state == "completed"
        run_dirs[name] = run_directory(run_spec)
    assert len({run_dir.name for run_dir in run_dirs.values()}) == 1  # one run key: a spec names a result, not a machine

    def weights(name: str) -> dict[str, torch.Tensor]:
        return torch.load(run_dirs[name] / "checkpoints" / "step_00000004.pt", weights_only=True)["model"]

    assert data_lines(run_dirs["two"]) == data_lines(run_dirs["two_again"])
    assert all(torch.equal(weights("two")[key], tensor) for key, tensor in weights("two_again").items())
    assert data_lines(run_dirs["one"]) != data_lines(run_dirs["two"]), "1 and 2 threads gave the same values here"
    assert status_of(run_dirs["one"])["environment"]["torch_threads"] == 1
    assert status_of(run_dirs["two"])["environment"]["torch_threads"] == 2


def test_a_signal_flat_but_for_rounding_has_no_lag_whatever_the_threads():
    """`geometry/rankme/resid_pre/L0` of specs/tiny.yaml as 1 and 2 threads journaled it: 1.00004986733985 at every
    step but for the last digits. Its cross-correlation lag with behaviour was -20 steps on 1 thread and 10 on 2
    (a verdict field that changed with the thread count); a series that does not move has no lag."""
    steps = np.array([0, 1, 2, 4, 8, 10, 20, 30, 40, 50, 60])
    one_thread = 1.0000498673398501 + np.array([0, 3, -1, 9, 7, -4, -4, -9, 3, 0, 7]) * 1e-16
    two_threads = 1.0000498673398501 + np.array([0, 3, -1, 11, 7, -4, -4, -9, -11, -1, 3]) * 1e-16
    behaviour = np.clip((steps - 15) / 30, 0, 1)
    assert xcorr_lag_steps(steps, one_thread, steps, behaviour, 10) is None
    assert xcorr_lag_steps(steps, two_threads, steps, behaviour, 10) is None
    # A real change keeps its lag however small against the signal's size (here a millionth of it).
    steps = np.arange(0, 2001, 10)
    behaviour = 1 / (1 + np.exp(-(steps - 1200) / 40))
    moving = 100 + 1e-4 / (1 + np.exp(-(steps - 900) / 40))
    assert xcorr_lag_steps(steps, moving, steps, behaviour, 10) == pytest.approx(300, abs=20)
