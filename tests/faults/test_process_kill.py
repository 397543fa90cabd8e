"""SIGKILL (a real ``os.kill(pid, SIGKILL)`` of a real ``emergence run``) at four points of one run, each kill
followed by a rerun of the same spec: in training, inside a measurement, in the middle of writing a checkpoint,
and while the analysis and report are written. A torn journal line is left behind too. The run that finally
completes must be the reference run: the same journal values and tables (none missing, none twice), analysis,
verdicts, final weights, and the same MLflow history."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest

from tests.faults.harness import (
    CHECKPOINT_EVERY,
    SLOW_MEASURE_EVERY,
    STEPS,
    assert_matches_reference,
    assert_same_mlflow_history,
    count_lost_and_duplicated,
    events,
    fault_spec,
    last_value_step,
    mlflow_tracking,
    record_fault,
    records,
    run_dir_of,
    seconds_until_resumed,
    start_run,
    status_of,
    stop,
    wait_for,
    write_spec,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

IN_MEASUREMENT_S = 0.3  # after checkpoint 30 appears: past training steps 31-35 (ms), inside the slow measurement


def checkpoint(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:08d}.pt"


def kill_while_writing_into(pipe: Path, process, at_least: int) -> bytes:
    """Read ``at_least`` bytes of what the run writes into ``pipe``, stop reading (the writer blocks, mid-checkpoint,
    once the pipe's buffer is full), SIGKILL the run, and only then close the pipe: closed first, the run's next
    write would fail with a broken pipe instead."""
    reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
    taken = b""
    try:
        deadline = time.monotonic() + 180
        while len(taken) < at_least:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the run never wrote its checkpoint into {pipe} (exit {process.returncode})")
            with contextlib.suppress(BlockingIOError):  # the run has not written into it yet
                taken += os.read(reader, at_least - len(taken))
            time.sleep(0.005)
        time.sleep(0.2)  # the writer fills the pipe's buffer and blocks inside torch.save
        assert process.poll() is None, "the run stopped writing its checkpoint by itself"
        stop(process)
        return taken
    finally:
        os.close(reader)


def test_sigkill_at_four_points_then_rerun_is_the_reference_run(tmp_path, reference):
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec_path = write_spec(tmp_path / "spec.yaml", fault_spec(tmp_path / "runs", mlflow_tracking(tracking_uri)))
    run_dir = run_dir_of(spec_path)
    log = tmp_path / "runs.log"
    resume_times: list[float] = []

    # 1. In training: as soon as the measurement at step 25 is journaled (checkpoint 20 on disk), the run is in
    #    steps 26-29. Then a torn line, as a kill in the middle of a journal write leaves one.
    process = start_run(spec_path, log)
    wait_for(lambda: (last_value_step(run_dir) or -1) >= 25, process, "the measurement at step 25")
    stop(process)
    assert last_value_step(run_dir) == 25 and checkpoint(run_dir, 20).exists() and not checkpoint(run_dir, 30).exists()
    with (run_dir / "journal.jsonl").open("a", encoding="utf-8") as journal:
        journal.write('{"step":26,"values":{"behavior/test/lo')

    # 2. Inside a measurement: the rerun resumes from checkpoint 20, writes checkpoint 30, trains to step 35 and
    #    spends a second in the Hutchinson trace due there.
    started = time.monotonic()
    process = start_run(spec_path, log)
    resume_times.append(seconds_until_resumed(run_dir, process, started, 0))
    wait_for(checkpoint(run_dir, 30).exists, process, "checkpoint 30")
    time.sleep(IN_MEASUREMENT_S)
    stop(process)
    assert last_value_step(run_dir) == 30, "the kill missed the measurement at step 35"
    assert SLOW_MEASURE_EVERY == 35

    # 3. In the middle of writing checkpoint 40: its temporary file is a pipe that the test reads 4 KiB of, so
    #    the run is certainly inside torch.save when it dies; the pipe then becomes the torn file a kill leaves.
    partial = checkpoint(run_dir, STEPS).with_suffix(".tmp")
    os.mkfifo(partial)
    process = start_run(spec_path, log)
    torn = kill_while_writing_into(partial, process, 4096)
    partial.unlink()
    partial.write_bytes(torn)
    assert last_value_step(run_dir) == STEPS and not checkpoint(run_dir, STEPS).exists()
    assert STEPS % CHECKPOINT_EVERY == 0

    # 4. During the analysis and report: as soon as analysis.json is written. The status, written last, is not
    #    `completed` yet, so the rerun does the end again instead of skipping a run without its report.
    started = time.monotonic()
    process = start_run(spec_path, log)
    resume_times.append(seconds_until_resumed(run_dir, process, started, 2))
    wait_for((run_dir / "analysis.json").exists, process, "analysis.json")
    stop(process)
    assert status_of(run_dir)["state"] == "running"

    # 5. The last rerun completes it.
    started = time.monotonic()
    process = start_run(spec_path, log)
    resume_times.append(seconds_until_resumed(run_dir, process, started, 3))
    assert process.wait(timeout=180) == 0, log.read_text(errors="replace")[-4000:]

    assert_matches_reference(run_dir, reference.run_dir)
    assert [e["step"] for e in events(run_dir, "resume")] == [20, 30, 30, 40]
    assert not any("values" in r and r["step"] == 26 and len(r["values"]) < 3 for r in records(run_dir))
    assert_same_mlflow_history(tracking_uri, reference.tracking_uri, reference.run_key)
    lost, duplicated = count_lost_and_duplicated(run_dir, reference.run_dir)
    record_fault("SIGKILL of `emergence run` (training, measurement, checkpoint write, analysis/report) + torn journal line",
                 4, 4, lost, duplicated, max(resume_times))
