"""The undisturbed reference run every fault case is compared with, made once per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.harness import fault_spec, mlflow_tracking, run_dir_of, run_to_end, status_of, write_spec


@dataclass(frozen=True)
class Reference:
    run_dir: Path
    tracking_uri: str  # a SQLite store holding the reference's MLflow run
    run_key: str


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    root = tmp_path_factory.mktemp("reference")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    spec_path = write_spec(root / "spec.yaml", fault_spec(root / "runs", mlflow_tracking(tracking_uri)))
    log = root / "run.log"
    assert run_to_end(spec_path, log) == 0, log.read_text(errors="replace")[-4000:]
    run_dir = run_dir_of(spec_path)
    assert status_of(run_dir)["state"] == "completed"
    return Reference(run_dir, tracking_uri, run_dir.name)
