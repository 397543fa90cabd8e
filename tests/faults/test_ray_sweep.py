"""A sweep on a real local Ray cluster, with a worker and then the driver killed, and the sweep run again.

The cluster is a Ray instance started by this module (``ray.init`` in the test process, 2 CPUs); the sweep's
driver is a real ``emergence run`` process that joins it by address (``execution.address``), as a sweep joins
a cluster. Two runs (seeds 0 and 1), one CPU each, run at once:

1. the Ray worker running the run that is ahead is SIGKILLed mid-run: the driver turns the lost task into a
   ``failed`` run (the worker could not say so) and the sweep goes on with the other;
2. the driver itself is SIGKILLed while that other run trains: Ray kills the driver's workers with it, and the
   run is left ``running``, its lock released;
3. the sweep runs again (``orchestrate.execute``, what ``emergence run`` calls, from the test process): both
   runs resume from their last checkpoints and complete.

Each run is then its undisturbed reference run (seed 0: the session's; seed 1: one made here), journal,
analysis, verdicts, weights and MLflow history, each run once in MLflow under a finished sweep parent.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from emergence.orchestrate import execute, sweep_directory
from emergence.rundir import run_directory
from emergence.spec import resolve
from tests.faults.harness import (
    assert_matches_reference,
    assert_same_mlflow_history,
    count_lost_and_duplicated,
    events,
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
    wait_for,
    write_spec,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]

EXPERIMENT = "ray"
REFERENCE_EXPERIMENT = "ray-reference"
GRID_PARAMS = ("grid_point", "sweep_key")  # params of a grid run that a lone run of the same spec has not


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A local Ray instance of 2 CPUs for this module; its address, for drivers in other processes to join."""
    import ray

    # Ray's unix sockets live under its temp dir, and a socket path may not exceed 107 bytes: keep it short.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def holders_of(run_dir: Path) -> list[int]:
    """Pids of the processes holding the run directory's lock file open: the Ray worker running that run."""
    lock = str(run_dir / ".lock")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) == lock for fd in (entry / "fd").iterdir()):
                found.append(int(entry.name))
        except OSError:  # gone, or not ours to look into
            continue
    return found


def state_of(run_dir: Path) -> str | None:
    return status_of(run_dir)["state"] if (run_dir / "status.json").exists() else None


def test_a_ray_sweep_survives_a_killed_worker_and_a_killed_driver(tmp_path, reference, ray_cluster):
    # A copy of the reference's store: migrated already (seconds less for the driver); the cases use experiments of their own.
    shutil.copyfile(reference.tracking_uri.removeprefix("sqlite:///"), tmp_path / "mlflow.db")
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = fault_spec(tmp_path / "runs", mlflow_tracking(tracking_uri, EXPERIMENT))
    spec["grid"] = {"seed": [0, 1]}
    spec["execution"].update({"executor": "ray", "address": ray_cluster})
    spec_path = write_spec(tmp_path / "spec.yaml", spec)
    runs = resolve(str(spec_path))
    run_dirs = [run_directory(run) for run in runs]
    assert run_dirs[0].name == reference.run_key  # seed 0 of the grid is the session's reference run

    log = tmp_path / "driver.log"
    driver = start_run(spec_path, log)
    try:
        # Seed 1's reference, made here while the driver starts (one thread each on two cores); the same grid run,
        # so that its params are the sweep's, into an experiment of its own.
        reference_spec = {**spec, "tracking": mlflow_tracking(tracking_uri, REFERENCE_EXPERIMENT)}
        reference_spec["execution"] = {**spec["execution"], "executor": "local", "output_dir": str(tmp_path / "reference")}
        reference_run = resolve(str(write_spec(tmp_path / "reference.yaml", reference_spec)))[1]
        assert reference_run.run_key == runs[1].run_key
        assert run_here(reference_run).state == "completed"

        # 1. The worker of whichever run first gets past checkpoint 10: the other is then certainly still running.
        wait_for(lambda: any((last_value_step(d) or -1) >= 15 for d in run_dirs), driver, "a run at step 15")
        first, second = sorted(run_dirs, key=lambda d: -(last_value_step(d) or -1))
        (worker,) = holders_of(first)
        assert worker != driver.pid
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: state_of(first) == "failed", driver, "the driver recording the killed run failed")
        assert "Ray task gave no outcome" in status_of(first)["reason"]

        # 2. The driver, while the other run trains past checkpoint 20.
        wait_for(lambda: (last_value_step(second) or -1) >= 25, driver, "the other run at step 25")
        stop(driver)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{log.read_text(errors='replace')[-3000:]}") from error
    finally:
        stop(driver)
    assert state_of(second) == "running", "the other run ended before its driver was killed"
    wait_for(lambda: not holders_of(second), None, "Ray to stop the dead driver's workers", timeout=60)
    assert state_of(second) == "running" and (last_value_step(second) or 0) < 40

    # 3. The sweep again, from this process: both runs resume and complete. (No progress sink: it would cost the
    # sweep an actor process; a thread watches the journals for the time to resume.)
    started = time.monotonic()
    resumed_after: list[float] = []
    finished = threading.Event()

    def until_both_resumed() -> None:
        while not finished.is_set():
            if all(events(run_dir, "resume") for run_dir in run_dirs):
                resumed_after.append(time.monotonic() - started)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=until_both_resumed, daemon=True)
    watcher.start()
    try:
        outcomes = execute(runs)
    finally:
        finished.set()
        watcher.join()
    assert [outcome.state for outcome in outcomes] == ["completed", "completed"], [o.reason for o in outcomes]
    assert [e["step"] for e in events(first, "resume")] in ([10], [20])
    assert [e["step"] for e in events(second, "resume")] in ([20], [30])

    reference_dir = run_directory(reference_run)
    lost = duplicated = 0
    for run_dir, (against, against_uri, against_experiment) in (
        (run_dirs[0], (reference.run_dir, reference.tracking_uri, "faults")),
        (run_dirs[1], (reference_dir, tracking_uri, REFERENCE_EXPERIMENT)),
    ):
        assert_matches_reference(run_dir, against)
        assert_same_mlflow_history(tracking_uri, against_uri, run_dir.name, EXPERIMENT, against_experiment, GRID_PARAMS)
        for counted in (count_lost_and_duplicated(run_dir, against), mlflow_lost_and_duplicated(tracking_uri, run_dir.name, run_dir, EXPERIMENT)):
            lost, duplicated = lost + counted[0], duplicated + counted[1]
    assert (lost, duplicated) == (0, 0)
    assert read_json(sweep_directory(runs) / "sweep.json")
    finished_sweep_parent(tracking_uri, EXPERIMENT, runs)
    record_fault(
        "Ray sweep (2 runs): a worker SIGKILLed mid-run, then the driver (`emergence run`) SIGKILLed; rerun",
        2, 2, lost, duplicated, resumed_after[0] if resumed_after else None,
    )  # fmt: skip
