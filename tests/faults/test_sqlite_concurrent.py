"""Several processes writing to one fresh MLflow SQLite store at once.

MLflow creates and migrates a new SQLite store's tables when a process first opens it, without a lock: two
``emergence run`` processes started at the same moment against a fresh ``sqlite:///mlflow.db`` both ran the
migrations and all but one failed (``duplicate column name: step``), leaving their tracker behind. The tracker
now opens a SQLite store under a lock (``emergence_mlflow.store.open_client``).
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.faults.harness import (
    RUN_TIMEOUT_S,
    fault_spec,
    mlflow_history,
    mlflow_tracking,
    read_json,
    record_fault,
    records,
    run_dir_of,
    start_run,
    stop,
    subprocess_env,
    write_spec,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

WRITERS = 4

# Each process imports everything, says it is ready, and waits for the go file; then it starts a run on the
# fresh store, logs a few steps and finishes: the store is first opened by all four within a few milliseconds.
TRACKER_SCRIPT = """
import sys, time
from pathlib import Path
from emergence_mlflow import MlflowTracker

uri, run_key, gate = sys.argv[1], sys.argv[2], Path(sys.argv[3])
tracker = MlflowTracker({"backend": "mlflow", "tracking_uri": uri, "experiment": "race"}, run_dir=Path("."))
(gate / run_key).touch()
while not (gate / "go").exists():
    time.sleep(0.001)
tracker.start(run_key, run_key, "race", {}, {"seed": run_key})
tracker.log_params({"seed": run_key})
for step in range(20):
    tracker.log_metrics({"loss": 1.0 / (step + 1), "step_squared": float(step * step)}, step)
tracker.finish("completed")
print("ok", run_key)
"""


def test_trackers_opening_one_fresh_sqlite_store_at_the_same_instant_all_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    gate = tmp_path / "gate"
    gate.mkdir()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", TRACKER_SCRIPT, uri, f"race{i}", str(gate)],
            cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(WRITERS)
    ]  # fmt: skip
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while len(list(gate.iterdir())) < WRITERS and time.monotonic() < deadline and all(p.poll() is None for p in processes):
        time.sleep(0.01)
    (gate / "go").touch()
    outputs = [process.communicate(timeout=RUN_TIMEOUT_S)[0] for process in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
        assert "duplicate column" not in output and "already exists" not in output, output[-3000:]
    for i in range(WRITERS):
        history = mlflow_history(uri, f"race{i}", "race")
        assert history["loss"] == [(step, 1.0 / (step + 1)) for step in range(20)]
        assert [step for step, _ in history["step_squared"]] == list(range(20))


def test_four_runs_started_together_into_one_fresh_sqlite_store_are_all_tracked_whole(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = fault_spec(tmp_path / "runs", mlflow_tracking(uri))
    spec["training"]["steps"] = 10
    spec["measures"] = [m for m in spec["measures"] if m["name"] != "hessian_trace"]
    spec_paths = []
    for seed in range(WRITERS):
        spec["seed"] = seed
        spec_paths.append(write_spec(tmp_path / f"spec{seed}.yaml", spec))
    logs = [tmp_path / f"run{seed}.log" for seed in range(WRITERS)]
    processes = [start_run(path, log) for path, log in zip(spec_paths, logs, strict=True)]
    try:
        codes = [process.wait(timeout=RUN_TIMEOUT_S) for process in processes]
    finally:
        for process in processes:
            stop(process)
    lost = duplicated = 0
    for path, log, code in zip(spec_paths, logs, codes, strict=True):
        output = log.read_text(errors="replace")
        assert code == 0, output[-3000:]
        assert "duplicate column" not in output and "bookkeeping failed" not in output, output[-3000:]
        run_dir = run_dir_of(path)
        status = read_json(run_dir / "status.json")
        assert status["state"] == "completed" and "trackers_behind" not in status, status
        history = mlflow_history(uri, run_dir.name)
        for record in records(run_dir):
            for key, value in record.get("values", {}).items():
                logged = [v for step, v in history.get(key, []) if step == record["step"]]
                lost += not logged
                duplicated += max(0, len(logged) - 1)
                assert logged == [value], (key, record["step"], logged)
    record_fault(f"{WRITERS} runs writing to one fresh MLflow SQLite store at once", WRITERS, WRITERS, lost, duplicated, None)
