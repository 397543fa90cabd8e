"""The MLflow tracking server (a real ``mlflow server`` on 127.0.0.1, the session's) killed with SIGKILL in the
middle of a run and started again later: training never stops, the tracker catches up from the journal once the
server is back, and the server's history is the reference run's, every value once."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.faults.harness import (
    RUN_TIMEOUT_S,
    assert_mlflow_caught_up,
    fault_spec,
    last_value_step,
    mlflow_tracking,
    record_fault,
    run_dir_of,
    start_run,
    stop,
    wait_for,
    write_spec,
)
from tests.integration.conftest import MlflowServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def kill_server(server: MlflowServer) -> None:
    """SIGKILL to the server and the uvicorn worker it forked (its own process group): no clean shutdown."""
    process = server._process
    assert process is not None and process.poll() is None
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    server._process = None
    server._wait_until_port_free()


EXPERIMENT = "restart"  # the session's server is shared by the cases; each keeps to an experiment of its own


def test_mlflow_server_killed_mid_run_and_restarted_is_caught_up_from_the_journal(tmp_path, reference, mlflow_server):
    server = mlflow_server
    spec_path = write_spec(tmp_path / "spec.yaml", fault_spec(tmp_path / "runs", mlflow_tracking(server.uri, EXPERIMENT)))
    run_dir = run_dir_of(spec_path)
    log = tmp_path / "run.log"
    process = start_run(spec_path, log)
    try:
        wait_for(lambda: (last_value_step(run_dir) or -1) >= 4, process, "the measurement at step 4")
        kill_server(server)
        # The run trains on without its tracker, to checkpoint 20 at least.
        wait_for((run_dir / "checkpoints" / "step_00000020.pt").exists, process, "checkpoint 20")
        assert process.poll() is None
        # Held while the server starts again (seconds), so that it is back before the run's end.
        os.kill(process.pid, signal.SIGSTOP)
        restarted = time.monotonic()
        try:
            server.start()
        finally:
            os.kill(process.pid, signal.SIGCONT)
        assert process.wait(timeout=RUN_TIMEOUT_S) == 0, log.read_text(errors="replace")[-4000:]
    finally:
        stop(process)
    caught_up = time.monotonic() - restarted

    lost, duplicated = assert_mlflow_caught_up(run_dir, reference, server.uri, EXPERIMENT)
    record_fault("MLflow server SIGKILLed mid-run, restarted", 1, 1, lost, duplicated, round(caught_up, 1))
