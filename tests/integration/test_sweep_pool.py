"""Sweeps on the local process pool, end to end: real runs in real child processes, a real MLflow store.

The sweep is stopped the hard way (SIGKILL of the sweep process, and of one worker), then started again.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from emergence.executors import RunMessage
from emergence.orchestrate import execute, sweep_directory
from emergence.record import read_journal
from emergence.rundir import read_status, run_directory
from emergence.spec import resolve

pytestmark = pytest.mark.integration


def _pool_spec(tiny_raw: dict, tmp_path: Path, steps: int, seeds: list[int]) -> dict:
    tiny_raw["training"].update({"steps": steps, "checkpoint_every": 20})
    tiny_raw["schedule"] = {"every": 10}
    tiny_raw["grid"] = {"seed": seeds}
    tiny_raw["execution"].update({"workers": 2, "threads_per_worker": 1})
    tiny_raw["tracking"] = [{"backend": "mlflow", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "pool"}]
    return tiny_raw


def _states(runs: list) -> list[str | None]:
    return [(read_status(run_directory(run)) or {}).get("state") for run in runs]


def test_a_sweep_killed_midway_resumes_with_every_run_once_in_mlflow(tiny_raw, write_spec, tmp_path):
    steps = 400
    spec_path = write_spec(_pool_spec(tiny_raw, tmp_path, steps=steps, seeds=[0, 1, 2]))
    runs = resolve(str(spec_path))
    command = [sys.executable, "-m", "emergence.cli", "run", str(spec_path), "--quiet"]
    sweep = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # Kill it once one run has finished and another is early on, past its first checkpoint.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            states = _states(runs)
            early = [20 <= (read_journal(run_directory(r)).last_step() or 0) <= steps // 3 for r in runs]
            if "completed" in states and any(s == "running" and e for s, e in zip(states, early, strict=True)):
                break
            assert sweep.poll() is None, sweep.stdout.read().decode() if sweep.stdout else ""
            time.sleep(0.2)
        else:
            pytest.fail(f"the sweep never got part-way: {_states(runs)}")
        sweep.kill()  # SIGKILL: no clean-up in the sweep process at all
        sweep.wait(timeout=30)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    # Its orphaned workers notice and stop themselves, marking their runs interrupted.
    deadline = time.monotonic() + 60
    while "running" in _states(runs) and time.monotonic() < deadline:
        time.sleep(0.5)
    states = _states(runs)
    assert "running" not in states, states
    assert 0 < states.count("completed") < len(runs), states

    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _states(runs) == ["completed"] * len(runs)
    resumed = [r for r in runs if any(e["event"] == "resume" for e in read_journal(run_directory(r)).events)]
    assert resumed, "an interrupted run should have resumed from its checkpoint"

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("pool").experiment_id
    for run in runs:
        found = client.search_runs([experiment_id], filter_string=f"tags.`emergence.run_key` = '{run.run_key}'")
        assert len(found) == 1, f"run {run.run_key} is in MLflow {len(found)} times"
        assert found[0].info.status == "FINISHED"
        logged = [m.step for m in client.get_metric_history(found[0].info.run_id, "behavior/test/exact_match")]
        assert sorted(set(logged)) == list(range(0, steps + 1, 10)), "every measured step reached MLflow"
    (parent,) = client.search_runs([experiment_id], filter_string="tags.`emergence.sweep_parent` = 'true'")
    assert parent.info.status == "FINISHED"
    assert (sweep_directory(runs) / "sweep.json").exists()


def test_a_failing_run_and_a_killed_worker_do_not_stop_the_others(tiny_raw, tmp_path, write_spec):
    raw = _pool_spec(tiny_raw, tmp_path, steps=200, seeds=[0, 1])
    raw["grid"]["training.device"] = ["cpu", "cuda:7"]  # no machine here has an eighth GPU
    raw["tracking"] = []
    runs = resolve(str(write_spec(raw)))
    victim = runs[2].run_key  # seed 1 on the CPU: killed from outside once it is training
    messages: list[RunMessage] = []

    def kill_the_victim(message: RunMessage) -> None:
        messages.append(message)
        if message.run_key == victim and message.kind == "step" and message.step >= 20:
            for child in multiprocessing.active_children():
                if child.name == f"emergence-{victim}":
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child.pid, signal.SIGKILL)

    outcomes = {o.run_key: o for o in execute(runs, progress=kill_the_victim)}
    by_point = {(r.spec.seed, r.spec.training.device): outcomes[r.run_key] for r in runs}
    assert by_point[(0, "cpu")].state == "completed"
    for seed in (0, 1):
        failed = by_point[(seed, "cuda:7")]
        assert failed.state == "failed" and "cuda" in (failed.reason or "").lower()
        assert read_status(failed.run_dir)["state"] == "failed"
    killed = outcomes[victim]
    assert killed.state == "failed" and "killed by signal 9" in (killed.reason or "")
    assert {m.kind for m in messages if m.run_key == runs[0].run_key} == {"started", "step", "finished"}

    # The killed run resumes from its checkpoint when the sweep runs again; the finished one is skipped.
    again = {o.run_key: o for o in execute(runs)}
    assert again[victim].state == "completed"
    assert again[runs[0].run_key].state == "skipped"
    assert any(e["event"] == "resume" for e in read_journal(again[victim].run_dir).events)
