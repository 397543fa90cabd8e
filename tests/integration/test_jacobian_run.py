"""A training-Jacobian spec end to end: `emergence run` into the run directory, the report and a real MLflow
SQLite store, read back and compared with ``jacobian.json``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow import MlflowClient

from emergence.rundir import JACOBIAN_FILE, read_status, run_directory
from emergence.runner import run_one
from emergence.spec import resolve

pytestmark = pytest.mark.integration


def small_digits_raw(tmp_path, tracking_uri: str) -> dict:
    return {
        "name": "jacobian-small",
        "task": {"name": "digits", "train_size": 160, "test_size": 64, "diagnostic_size": 8},
        "model": {"kind": "mlp", "sizes": [64, 5, 10], "act": "gelu_new"},
        "training": {"steps": 20, "batch_size": 32, "grad_clip": None, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
                     "lr_schedule": {"name": "cosine"}},
        "schedule": {"every": 5},
        "jacobian": {"mode": "exact", "chunk_size": 128, "retrain": {"points": 3}},
        "tracking": [{"backend": "mlflow", "tracking_uri": tracking_uri, "experiment": "jacobian"}],
        "execution": {"output_dir": str(tmp_path / "runs")},
    }


def test_exact_study_lands_in_run_directory_report_and_mlflow(tmp_path, sqlite_tracking_uri):
    (run_spec,) = resolve(small_digits_raw(tmp_path, sqlite_tracking_uri))
    outcome = run_one(run_spec)
    assert outcome.state == "completed", outcome.reason
    run_dir = run_directory(run_spec)
    study = json.loads((run_dir / JACOBIAN_FILE).read_text())
    n = 64 * 5 + 5 + 5 * 10 + 10
    assert study["n_params"] == n and len(study["singular_values"]) == len(study["cos_uv"]) == n
    s = np.array(study["singular_values"])
    assert np.all(np.diff(s) <= 0) and study["sigma_max"] == s[0]
    for count in study["counts"]:
        assert count["chaotic"] + count["bulk"] + count["stable"] == n
        assert count["bulk"] == int(np.sum(np.abs(s - 1) <= count["delta"]))
    assert study["checks"]["tangent_free_equals_ordinary"] and study["checks"]["jvp_primal_equals_ordinary"]
    retraining = study["retraining"]
    assert set(retraining["curves"]) == {"chaotic", "bulk", "stable"} and retraining["dims"][-1] == n
    # All of parameter space is every kind of subspace at k = n: each curve ends at full training's loss.
    for losses in retraining["curves"].values():
        assert losses[-1] == pytest.approx(study["final_test_loss"], rel=1e-4)
    assert read_status(run_dir)["jacobian"]["jacobian/sigma_max"] == study["sigma_max"]

    page = (run_dir / "report.html").read_text()
    assert "Training Jacobian" in page and "jacobian_spectrum.png" in page and "jacobian_retraining.png" in page
    assert (run_dir / "jacobian_spectrum.png").stat().st_size > 0

    client = MlflowClient(sqlite_tracking_uri)
    experiment = client.get_experiment_by_name("jacobian")
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`emergence.run_key` = '{run_spec.run_key}'")
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert metrics["jacobian/sigma_max"] == pytest.approx(study["sigma_max"])
    assert metrics["jacobian/count/bulk/delta_0.01"] == study["counts"][1]["bulk"]
    assert "behavior/test/exact_match" in metrics  # ordinary training's behaviour, as any run logs it
    tables = {a.path for a in client.list_artifacts(run.info.run_id, "tables")}
    spectrum_table = next(path for path in tables if path.startswith("tables/jacobian_spectrum"))
    assert any(path.startswith("tables/jacobian_retraining") for path in tables)
    with open(client.download_artifacts(run.info.run_id, spectrum_table, str(tmp_path / "downloaded"))) as handle:
        spectrum = json.load(handle)
    assert spectrum["columns"] == ["index", "sigma", "cos_uv"]
    assert [row[1] for row in spectrum["data"]] == pytest.approx(study["singular_values"])
    report = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/jacobian_spectrum.png", "report/jacobian_retraining.png"} <= report

    again = run_one(run_spec)  # the same spec again: the completed study is left alone
    assert again.state == "skipped"
