"""The null control end to end: a tiny run with ``analysis.control: shuffled_labels`` trains its twin on
permuted answers first, the twin stays at chance on the test set while the run itself learns, both land in
a real MLflow store linked by tags, and the run's verdicts say whether each onset was specific."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch
from mlflow import MlflowClient

from emergence.analysis import reanalyze
from emergence.orchestrate import execute
from emergence.record import read_journal
from emergence.rundir import read_run_spec, read_status, run_directory
from emergence.spec import resolve
from emergence.spec.controls import CONTROL_OF_TAG, CONTROL_TAG, control_twin, controlled_run_key

pytestmark = pytest.mark.integration

# Copying 3 of 6 symbols: a 2-layer model learns it in 80 steps, and with the answers shuffled there is
# nothing to copy; every answer string is as likely as any other (chance 1/216), so the control cannot even
# gain by learning which answers are common.
SPEC = {
    "name": "control",
    "seed": 0,
    "task": {"name": "copy", "level": 1, "params": {"length": 3, "n_symbols": 6}, "train_size": 150, "test_size": 66, "diagnostic_size": 32},
    "model": {"n_layers": 2, "d_model": 32, "n_heads": 2, "d_mlp": 64},
    "training": {"steps": 80, "batch_size": 32, "optimizer": {"name": "adamw", "lr": 1.0e-2}, "checkpoint_every": 80},
    "measures": [{"name": "rankme", "sites": ["resid_post"], "layers": "all"}],
    "schedule": {"every": 20},
    "analysis": {"control": "shuffled_labels"},
}


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Two tiny runs in seconds: on a shared machine, one torch thread avoids contention that costs far more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_control_twin_stays_at_chance_and_is_linked_to_its_run_in_mlflow(tmp_path, write_spec, sqlite_tracking_uri, one_thread):
    raw = {**SPEC, "execution": {"output_dir": str(tmp_path / "runs")}}
    raw["tracking"] = [{"backend": "mlflow", "tracking_uri": sqlite_tracking_uri, "experiment": "controls"}]
    (run,) = resolve(str(write_spec(raw)), [])
    twin = control_twin(run)
    assert twin is not None and twin.run_key != run.run_key and controlled_run_key(twin.spec) == run.run_key
    (outcome,) = execute([run])
    assert outcome.state == "completed"

    run_dir, control_dir = run_directory(run), run_directory(twin)
    assert read_status(control_dir)["state"] == "completed"
    assert read_run_spec(control_dir).spec.task.shuffle_answers is True  # rerunning its resolved spec gives the control
    chance = 1 / 6**3
    control_exact = read_journal(control_dir).series("behavior/test/exact_match")[1]
    real_exact = read_journal(run_dir).series("behavior/test/exact_match")[1]
    assert real_exact[-1] == 1.0  # the same budget teaches the real run the task ...
    # ... and leaves the control at chance: at most 2 of 66 test examples right (P < 0.05 at chance 1/216).
    assert control_exact.max() <= 2 / 66 + 1e-6 and chance < 2 / 66

    analysis = json.loads((run_dir / "analysis.json").read_text())
    assert analysis["control"]["run_key"] == twin.run_key and analysis["control"]["state"] == "completed"
    assert analysis["control"]["events"] == [{"metric": "behavior/test/exact_match", "step": None}]
    verdicts = [v for v in json.loads((run_dir / "verdicts.json").read_text()) if v["kind"] == "signal"]
    assert verdicts and all("specific" in v and "control_onset_step" in v and "robust" in v for v in verdicts)
    assert {v["specific"] for v in verdicts if v["onset_step"] is not None} <= {True, False}

    client = MlflowClient(sqlite_tracking_uri)
    experiment_id = client.get_experiment_by_name("controls").experiment_id
    (real,) = client.search_runs([experiment_id], filter_string=f"tags.`emergence.run_key` = '{run.run_key}'")
    (control,) = client.search_runs([experiment_id], filter_string=f"tags.`{CONTROL_OF_TAG}` = '{run.run_key}'")
    assert control.data.tags["emergence.run_key"] == twin.run_key and real.data.tags[CONTROL_TAG] == twin.run_key
    assert control.data.params["task.shuffle_answers"] == "True" and control.data.params["analysis.control"] == "shuffled_labels"
    assert control.info.run_name.endswith(":shuffled")
    # The counts reach the run's summary as the verdict counts do (how many are decided depends on the onsets).
    assert {"summary/specific/specific", "summary/specific/nonspecific", "summary/specific/undecided"} <= set(real.data.metrics)
    assert real.data.metrics["summary/robust/verdicts"] <= len(verdicts)

    # The analysis again from the two directories alone gives the same flags (emergence report RUN).
    again = reanalyze(run_dir)
    assert [v["specific"] for v in again["verdicts"]] == [v["specific"] for v in analysis["verdicts"]]

    # emergence compare tells the pair apart, from the run directories as from the MLflow store.
    from emergence.compare import read_runs, render

    for source in (tmp_path / "runs", sqlite_tracking_uri):
        rows = json.loads(render(read_runs(source, "controls" if source == sqlite_tracking_uri else None), "json"))
        assert [(r["run_key"], r["control_of"]) for r in rows] == [(run.run_key, None), (twin.run_key, run.run_key)]
