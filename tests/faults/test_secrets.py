"""Credentials in the environment never reach what a run writes: params, tags, artifacts, the journal, the report,
the MLflow store or the W&B run. The test sets each to a unique string, runs a spec into a real SQLite MLflow
store and a W&B offline run, and searches every file the run left, binary ones included."""

from __future__ import annotations

import uuid

import pytest

from tests.faults.harness import (
    RUN_TIMEOUT_S,
    fault_spec,
    files_under,
    mlflow_tracking,
    run_dir_of,
    start_run,
    status_of,
    stop,
    write_spec,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SECRET_NAMES = (
    "WANDB_API_KEY",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "HF_TOKEN",
    "GITHUB_TOKEN",
    "EMERGENCE_FAULTS_SERVICE_TOKEN",
)


def test_credentials_in_the_environment_reach_no_output_of_a_run(tmp_path):
    secrets = {name: f"secret{uuid.uuid4().hex}" for name in SECRET_NAMES}
    secrets["WANDB_API_KEY"] = uuid.uuid4().hex + uuid.uuid4().hex[:8]  # the 40 hex digits a W&B key has
    wandb_dir = tmp_path / "wandb"
    wandb_dir.mkdir()
    tracking = [*mlflow_tracking(f"sqlite:///{tmp_path / 'mlflow.db'}"), {"backend": "wandb", "mode": "offline", "project": "faults"}]
    spec = fault_spec(tmp_path / "runs", tracking)
    spec["training"]["steps"] = 10
    spec["measures"] = [m for m in spec["measures"] if m["name"] != "hessian_trace"]
    spec_path = write_spec(tmp_path / "spec.yaml", spec)
    log = tmp_path / "run.log"
    env = {**secrets, "WANDB_MODE": "offline", "WANDB_DIR": str(wandb_dir), "WANDB_CONFIG_DIR": str(wandb_dir / "config"),
           "WANDB_CACHE_DIR": str(wandb_dir / "cache"), "WANDB_DATA_DIR": str(wandb_dir / "data")}  # fmt: skip
    process = start_run(spec_path, log, env=env)
    try:
        assert process.wait(timeout=RUN_TIMEOUT_S) == 0, log.read_text(errors="replace")[-4000:]
    finally:
        stop(process)
    run_dir = run_dir_of(spec_path)
    status = status_of(run_dir)
    assert status["state"] == "completed" and "trackers_behind" not in status, status
    outputs = list(files_under(tmp_path))
    assert any(path.suffix == ".wandb" for path in outputs), "no W&B run file was written"
    assert any(path.name == "mlflow.db" for path in outputs) and any(path.name == "report.html" for path in outputs)
    assert len(outputs) > 20
    leaks = [
        f"{name} in {path.relative_to(tmp_path)}"
        for path in outputs
        for name, secret in secrets.items()
        if secret.encode() in path.read_bytes()
    ]
    assert not leaks, leaks
