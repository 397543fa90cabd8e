"""The ``ray`` executor end to end on a real local Ray instance: the same runs give the same journals as the
local process pool, failures stay with their run, progress reaches the driver, Ctrl-C interrupts cleanly,
and a wrong cluster address is reported at once.

One Ray instance (2 CPUs) serves the whole module: starting one costs seconds, and its worker processes,
once they have imported torch, run the later tests' runs without importing it again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from emergence_ray.executor import (
    RayClusterUnreachable,
    TaskResources,
    check_reachable,
    cluster_endpoint,
    local_instance_cpus,
)

from emergence.executors import RunMessage
from emergence.orchestrate import execute
from emergence.record import read_journal
from emergence.rundir import ANALYSIS_FILE, RunOutcome, read_status, run_directory
from emergence.spec import resolve
from emergence.spec.grid import RunSpec
from emergence.spec.schema import ExecutionSpec

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TINY_SPEC = REPO / "specs" / "tiny.yaml"
GRID_STEPS = 30  # a few seconds a run on one thread, past the log-spaced measurements and three regular ones


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    """A local Ray instance for this module; the executor must find and use it rather than start its own."""
    ray = pytest.importorskip("ray")
    # Ray's unix sockets live under its temp dir, and a socket path may not exceed 107 bytes: keep it short.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    # Started as from a driver run in the background (`emergence run ... &`), whose Ray processes all
    # inherit an ignored SIGINT: the hard case for interrupting a run (see run_in_ray_task).
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp_dir)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def tiny(output_dir: Path, **execution: object) -> dict:
    raw = yaml.safe_load(TINY_SPEC.read_text())
    raw["training"].update({"steps": GRID_STEPS, "checkpoint_every": 10})
    raw["tracking"] = []
    raw["execution"] = {"output_dir": str(output_dir), "threads_per_worker": 1, **execution}
    return raw


def resolved(raw: dict, directory: Path, name: str = "spec.yaml") -> list[RunSpec]:
    path = directory / name
    path.write_text(yaml.safe_dump(raw))
    return resolve(str(path))


@dataclass
class Sweep:
    runs: list[RunSpec]
    outcomes: list[RunOutcome]
    messages: list[RunMessage]
    seconds: float


def run_sweep(raw: dict, directory: Path, name: str) -> Sweep:
    runs = resolved(raw, directory, f"{name}.yaml")
    messages: list[RunMessage] = []
    started = time.perf_counter()
    outcomes = execute(runs, progress=messages.append)
    return Sweep(runs, outcomes, messages, time.perf_counter() - started)


@pytest.fixture(scope="module")
def grid_on_both_executors(ray_instance: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Sweep, Sweep]:
    """One grid of four tiny runs, once on Ray and once on the local pool of two processes, into two
    output directories. Both use one torch thread per run, so that float sums add up in the same order."""
    directory = tmp_path_factory.mktemp("grid")
    grid = {"seed": [0, 1], "model.d_model": [16, 32]}
    on_ray = run_sweep({**tiny(directory / "ray", executor="ray"), "grid": grid}, directory, "ray")
    on_pool = run_sweep({**tiny(directory / "pool", executor="local", workers=2), "grid": grid}, directory, "pool")
    print(f"\ngrid of 4 runs: ray {on_ray.seconds:.1f} s, local pool {on_pool.seconds:.1f} s")
    return on_ray, on_pool


def without_timings(values: dict[str, float]) -> dict[str, float]:
    return {key: value for key, value in values.items() if not key.startswith("cost/")}


def test_a_grid_on_ray_gives_the_journals_of_the_local_pool(grid_on_both_executors: tuple[Sweep, Sweep]) -> None:
    on_ray, on_pool = grid_on_both_executors
    assert [run.run_key for run in on_ray.runs] == [run.run_key for run in on_pool.runs]  # executors are not identity
    assert len({run.run_key for run in on_ray.runs}) == 4
    for sweep in (on_ray, on_pool):
        assert [outcome.state for outcome in sweep.outcomes] == ["completed"] * 4, [o.reason for o in sweep.outcomes]
    for ray_outcome, pool_outcome in zip(on_ray.outcomes, on_pool.outcomes, strict=True):
        assert ray_outcome.run_dir != pool_outcome.run_dir
        ray_journal, pool_journal = read_journal(ray_outcome.run_dir), read_journal(pool_outcome.run_dir)
        assert ray_journal.last_step() == GRID_STEPS
        assert [(step, without_timings(values)) for step, values in ray_journal.values] == [
            (step, without_timings(values)) for step, values in pool_journal.values
        ]
        assert ray_journal.tables and ray_journal.tables == pool_journal.tables
        ray_analysis = json.loads((ray_outcome.run_dir / ANALYSIS_FILE).read_text())
        pool_analysis = json.loads((pool_outcome.run_dir / ANALYSIS_FILE).read_text())
        assert ray_analysis["verdicts"] and ray_analysis["verdicts"] == pool_analysis["verdicts"]
        assert ray_analysis == pool_analysis
        assert ray_outcome.verdicts == pool_outcome.verdicts


def test_progress_messages_reach_the_driver(grid_on_both_executors: tuple[Sweep, Sweep]) -> None:
    on_ray, _ = grid_on_both_executors
    for run in on_ray.runs:
        own = [message for message in on_ray.messages if message.run_key == run.run_key]
        kinds = [message.kind for message in own]
        assert kinds[0] == "started" and kinds[-1] == "finished" and "step" in kinds, kinds
        assert own[-1].state == "completed"
        steps = [message.step for message in own if message.kind == "step"]
        assert steps == sorted(steps) and steps[-1] == GRID_STEPS  # in the order the run sent them
        assert all(message.total == GRID_STEPS for message in own)


def test_a_failing_run_is_reported_and_does_not_stop_the_others(ray_instance: None, tmp_path: Path) -> None:
    raw = tiny(tmp_path / "runs", executor="ray")
    raw["grid"] = {"training.device": ["cpu", "cuda:7"]}  # no machine here has an eighth GPU
    sweep = run_sweep(raw, tmp_path, "failing")
    by_device = {run.spec.training.device: outcome for run, outcome in zip(sweep.runs, sweep.outcomes, strict=True)}
    assert by_device["cpu"].state == "completed"
    failed = by_device["cuda:7"]
    assert failed.state == "failed" and "cuda" in (failed.reason or "").lower(), failed.reason
    assert read_status(failed.run_dir)["state"] == "failed"
    finished = {m.run_key: m for m in sweep.messages if m.kind == "finished"}
    assert finished[failed.run_key].state == "failed" and finished[failed.run_key].reason == failed.reason


def ray_processes_running(function_name: str) -> list[int]:
    """Pids of Ray workers executing ``function_name`` now: Ray titles such a process ``ray::<name>``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if title.startswith(f"ray::{function_name}"):
            found.append(int(entry.name))
    return found


def test_a_worker_that_dies_becomes_a_failed_run_and_the_next_run_goes_on(ray_instance: None, tmp_path: Path) -> None:
    # Two CPUs a run on a two-CPU instance: one run at a time, so the one Ray worker running a run is the victim.
    raw = tiny(tmp_path / "runs", executor="ray", resources={"cpus": 2})
    raw["training"]["steps"] = 150  # long enough to be still running when its step-10 message reaches the driver
    raw["grid"] = {"seed": [0, 1]}
    runs = resolved(raw, tmp_path)
    victims: list[str] = []

    def kill_the_first_run_past_step_10(message: RunMessage) -> None:
        if message.kind == "step" and message.step >= 10 and not victims:
            running = ray_processes_running("run_in_ray_task")
            assert len(running) <= 1, running
            for pid in running:  # none: between two runs; the next step message tries again
                victims.append(message.run_key)
                os.kill(pid, signal.SIGKILL)

    outcomes = {outcome.run_key: outcome for outcome in execute(runs, progress=kill_the_first_run_past_step_10)}
    (victim,) = victims
    killed = outcomes[victim]
    assert killed.state == "failed" and "Ray task gave no outcome" in (killed.reason or ""), killed.reason
    assert read_status(killed.run_dir)["state"] == "failed"  # recorded by the driver: the worker could not
    (survivor,) = [outcome for key, outcome in outcomes.items() if key != victim]
    assert survivor.state == "completed"


def test_ctrl_c_in_the_driver_interrupts_every_run(ray_instance: None, tmp_path: Path) -> None:
    raw = tiny(tmp_path / "runs", executor="ray")
    raw["training"]["steps"] = 400
    raw["grid"] = {"seed": [0, 1, 2]}  # two runs on the two CPUs, the third waits for one
    runs = resolved(raw, tmp_path)
    interrupted_by: list[str] = []

    def press_ctrl_c_at_step_10(message: RunMessage) -> None:
        if message.kind == "step" and message.step >= 10:
            interrupted_by.append(message.run_key)
            raise KeyboardInterrupt  # where the driver's progress display would get it

    with pytest.raises(KeyboardInterrupt):
        execute(runs, progress=press_ctrl_c_at_step_10)
    states = {run.run_key: (read_status(run_directory(run)) or {}) for run in runs}
    marked = states[interrupted_by[0]]
    assert marked.get("state") == "failed" and "interrupted" in marked.get("reason", ""), marked
    assert marked["step"] < 400
    assert not any(status.get("state") == "completed" for status in states.values()), states
    # Two CPUs, one a run: the third run was still queued, and a queued run is cancelled before it starts.
    assert sum(1 for status in states.values() if not status) == 1, states


def test_an_unreachable_cluster_address_is_a_clear_error_at_once(tmp_path: Path) -> None:
    """Through the real CLI in a process of its own (this module's Ray instance would otherwise be reused):
    what a user sees, and how soon. ray.init alone would try the address for minutes."""
    raw = tiny(tmp_path / "runs", executor="ray", address="127.0.0.1:1")
    spec_path = tmp_path / "unreachable.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "emergence.cli", "run", str(spec_path), "--quiet"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    seconds = time.monotonic() - started
    print(f"\nunreachable address reported after {seconds:.1f} s")
    assert result.returncode == 2, result.stderr
    (said,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f"error: {spec_path}: execution: " in said and "Traceback" not in result.stderr, result.stderr
    assert "no Ray cluster answers at 127.0.0.1:1" in said and "ray start --head" in said, result.stderr
    assert not (tmp_path / "runs").exists()  # no run was started, so none is marked failed
    # Not a speed check: ray.init alone retries an address for minutes; on a loaded 2-core machine the CLI's own
    # start (torch, Ray) can take 20 s or more, so the bound only tells "at once" from "after minutes".
    assert seconds < 90


# -- the executor's own arithmetic, no Ray needed ----------------------------------------------------------


def test_threads_follow_the_cpus_a_run_reserves() -> None:
    def of(**execution: object) -> TaskResources:
        return TaskResources.of(ExecutionSpec(executor="local", **execution))

    assert of(resources={"cpus": 2.5}).threads == 2
    assert of(resources={"cpus": 0.5}).threads == 1
    assert of(resources={"cpus": 4}, threads_per_worker=1).threads == 1
    assert of(resources={"cpus": 1, "gpus": 0.25}).task_options() == {
        "num_cpus": 1.0, "num_gpus": 0.25, "max_retries": 0, "max_calls": 1,
    }
    assert "max_calls" not in of().task_options()  # CPU runs reuse warm workers


def test_a_local_instance_holds_workers_runs() -> None:
    def cpus(**execution: object) -> int | None:
        return local_instance_cpus(ExecutionSpec(executor="local", **execution))

    assert cpus() is None  # Ray counts the cores
    assert cpus(workers=3) == 3
    assert cpus(workers=3, resources={"cpus": 2}) == 6
    assert cpus(workers=3, resources={"cpus": 0.5}) == 2  # whole CPUs only: 1.5 rounds up


def test_cluster_addresses_parse_or_say_what_is_expected() -> None:
    assert cluster_endpoint("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert cluster_endpoint("ray://head.example:10001") == ("head.example", 10001)
    assert cluster_endpoint("ray://head.example") == ("head.example", 10001)
    assert cluster_endpoint("[::1]:6379") == ("::1", 6379)
    with pytest.raises(ValueError, match="host:port"):
        cluster_endpoint("head.example")
    started = time.monotonic()
    with pytest.raises(RayClusterUnreachable, match="127.0.0.1:1"):
        check_reachable("127.0.0.1:1")
    assert time.monotonic() - started < 10
