"""The MLflow tracking server (the session's real ``mlflow server``) SIGKILLed in the middle of a sweep: a grid
of two runs (seeds 0 and 1) on the local process pool, nested in MLflow under the sweep's parent run, which the
sweep made before its runs started and must finish with its summary once they are over.

1. **Back before the sweep ends**: the server is killed while both runs train and started again while they
   still do; each run catches its tracker up by itself, and the sweep's end finishes the parent.
2. **Still away when the sweep ends**: the runs complete with MLflow behind, and so does the parent: the sweep
   directory's ``status.json`` says so and names the command. Once the server is back, ``emergence sync`` on
   the sweep directory replays both runs and finishes the parent.

Either way every run ends as its undisturbed reference (seed 0: the session's; seed 1: one made here), its
MLflow history every value once, and the parent FINISHED with the summary of ``sweep.json``, each value once.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from emergence_mlflow.store import SUMMARY_METRIC_PREFIX
from emergence_mlflow.tracker import legal_name
from mlflow import MlflowClient

from emergence.orchestrate import sweep_directory
from emergence.rundir import run_directory
from emergence.spec import resolve
from emergence.spec.grid import RunSpec
from emergence.sweep_tracking import summary_values
from tests.faults.harness import (
    RUN_TIMEOUT_S,
    assert_matches_reference,
    assert_same_mlflow_history,
    emergence_command,
    fault_spec,
    finished_sweep_parent,
    last_value_step,
    mlflow_lost_and_duplicated,
    mlflow_tracking,
    read_json,
    record_fault,
    run_here,
    start_run,
    status_of,
    stop,
    subprocess_env,
    wait_for,
    write_spec,
)
from tests.faults.test_mlflow_server_restart import kill_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

GRID_PARAMS = ("grid_point", "sweep_key")  # params of a grid run that the session's lone reference run has not
REFERENCE_EXPERIMENT = "sweep-reference"


def sweep_spec(tmp_path: Path, tracking_uri: str, experiment: str) -> dict[str, Any]:
    spec = fault_spec(tmp_path / "runs", mlflow_tracking(tracking_uri, experiment))
    spec["grid"] = {"seed": [0, 1]}
    spec["execution"]["workers"] = 2  # the local process pool, both runs at once
    return spec


@pytest.fixture(scope="module")
def seed_one_reference(tmp_path_factory: pytest.TempPathFactory, reference: Any) -> tuple[Path, str]:
    """Seed 1 of the grid, run undisturbed in this process (the same grid run, so its params are the sweep's),
    into a copy of the session reference's SQLite store; its run directory and that store's URI."""
    root = tmp_path_factory.mktemp("sweep-reference")
    shutil.copyfile(reference.tracking_uri.removeprefix("sqlite:///"), root / "mlflow.db")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    spec = sweep_spec(root, tracking_uri, REFERENCE_EXPERIMENT)
    spec["execution"]["workers"] = None
    run = resolve(str(write_spec(root / "spec.yaml", spec)))[1]
    assert run_here(run).state == "completed"
    return run_directory(run), tracking_uri


@contextmanager
def paused(process: subprocess.Popen[bytes]) -> Iterator[None]:
    """The sweep's driver and its pool workers (its process group) held, then let go."""
    os.killpg(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(process.pid, signal.SIGCONT)


def assert_sweep_in_mlflow(
    runs: list[RunSpec], tracking_uri: str, experiment: str, reference: Any, seed_one_reference: tuple[Path, str]
) -> tuple[int, int]:
    """Both runs their references, in MLflow too, nested under a FINISHED parent that holds the summary of
    ``sweep.json`` (each value once) and its report; returns (values lost, duplicated) over both runs."""
    lost = duplicated = 0
    references = [(reference.run_dir, reference.tracking_uri, "faults"), (seed_one_reference[0], seed_one_reference[1], REFERENCE_EXPERIMENT)]
    for run, (against, against_uri, against_experiment) in zip(runs, references, strict=True):
        run_dir = run_directory(run)
        assert "trackers_behind" not in status_of(run_dir), status_of(run_dir)
        assert_matches_reference(run_dir, against)
        assert_same_mlflow_history(tracking_uri, against_uri, run.run_key, experiment, against_experiment, GRID_PARAMS)
        counted = mlflow_lost_and_duplicated(tracking_uri, run.run_key, run_dir, experiment)
        lost, duplicated = lost + counted[0], duplicated + counted[1]

    client = MlflowClient(tracking_uri)
    parent = finished_sweep_parent(tracking_uri, experiment, runs)
    assert parent.data.tags["emergence.sweep_size"] == "2"

    directory = sweep_directory(runs)
    expected = {legal_name(SUMMARY_METRIC_PREFIX + key): value for key, value in summary_values(read_json(directory / "sweep.json")).items()}
    assert expected, "the sweep summary has no values to show"
    assert parent.data.metrics == pytest.approx(expected, nan_ok=True)
    for key in expected:
        history = client.get_metric_history(parent.info.run_id, key)
        assert len(history) == 1, f"{key}: {len(history)} entries in the parent run"
    artifacts = {info.path for info in client.list_artifacts(parent.info.run_id, "sweep")}
    assert "sweep/report.html" in artifacts and "sweep/sweep.json" in artifacts
    assert "trackers_behind" not in read_json(directory / "status.json")
    return lost, duplicated


def start_sweep(tmp_path: Path, server_uri: str, experiment: str) -> tuple[list[RunSpec], list[Path], subprocess.Popen[bytes], Path]:
    """The sweep's ``emergence run`` in a process group of its own; its runs, their directories, the process, its log."""
    spec_path = write_spec(tmp_path / "spec.yaml", sweep_spec(tmp_path, server_uri, experiment))
    runs = resolve(str(spec_path))
    log = tmp_path / "sweep.log"
    return runs, [run_directory(run) for run in runs], start_run(spec_path, log, new_session=True), log


def test_mlflow_server_killed_mid_sweep_and_restarted_before_its_end(tmp_path, reference, seed_one_reference, mlflow_server):
    server, experiment = mlflow_server, "sweep-restart"
    runs, run_dirs, process, log = start_sweep(tmp_path, server.uri, experiment)
    try:
        wait_for(lambda: all((last_value_step(d) or -1) >= 4 for d in run_dirs), process, "both runs measured at step 4")
        kill_server(server)
        wait_for(lambda: all((d / "checkpoints" / "step_00000020.pt").exists() for d in run_dirs), process, "checkpoint 20 of both runs")
        # Held while the server starts again (seconds), so that it is back before the sweep's end.
        with paused(process):
            restarted = time.monotonic()
            server.start()
        assert process.wait(timeout=RUN_TIMEOUT_S) == 0, log.read_text(errors="replace")[-4000:]
    finally:
        stop(process)
    caught_up = time.monotonic() - restarted

    lost, duplicated = assert_sweep_in_mlflow(runs, server.uri, experiment, reference, seed_one_reference)
    record_fault("MLflow server SIGKILLed mid-sweep (2 runs on the pool, parent run open), restarted before its end", 1, 1, lost, duplicated, round(caught_up, 1))


def test_mlflow_server_away_at_the_sweeps_end_then_emergence_sync(tmp_path, reference, seed_one_reference, mlflow_server):
    server, experiment = mlflow_server, "sweep-away"
    runs, run_dirs, process, log = start_sweep(tmp_path, server.uri, experiment)
    try:
        wait_for(lambda: all((last_value_step(d) or -1) >= 4 for d in run_dirs), process, "both runs measured at step 4")
        kill_server(server)
        assert process.wait(timeout=RUN_TIMEOUT_S) == 0, log.read_text(errors="replace")[-4000:]
    finally:
        stop(process)

    directory = sweep_directory(runs)
    for run_dir in run_dirs:
        assert status_of(run_dir)["state"] == "completed"
        assert "mlflow" in status_of(run_dir)["trackers_behind"]
    sweep_status = read_json(directory / "status.json")
    assert sweep_status["state"] == "completed"
    assert "mlflow" in sweep_status["trackers_behind"]
    assert f"emergence sync {directory}" in log.read_text(errors="replace")

    restarted = time.monotonic()
    server.start()
    synced = subprocess.run(
        [*emergence_command(), "sync", str(directory)], env=subprocess_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )  # fmt: skip
    assert synced.returncode == 0, synced.stdout + synced.stderr
    caught_up = time.monotonic() - restarted
    for run_dir in run_dirs:
        assert f"synced {run_dir} -> mlflow" in synced.stdout
    assert f"synced {directory} -> mlflow" in synced.stdout

    lost, duplicated = assert_sweep_in_mlflow(runs, server.uri, experiment, reference, seed_one_reference)
    record_fault(
        "MLflow server SIGKILLed mid-sweep and still away at its end (parent run open); `emergence sync` of the sweep",
        1, 1, lost, duplicated, round(caught_up, 1),
    )  # fmt: skip
