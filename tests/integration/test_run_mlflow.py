"""The tiny spec end to end into real MLflow stores, read back and compared with the run journal."""

from __future__ import annotations

import json
import threading
import time

import pytest
from mlflow import MlflowClient

from emergence.record import read_journal
from emergence.rundir import read_status, run_directory
from emergence.runner import run_one
from emergence.spec import resolve

pytestmark = pytest.mark.integration


def tiny_run_spec(tiny_raw, write_spec, tracking_uri, experiment="e2e", overrides=()):
    tiny_raw["tracking"] = [{"backend": "mlflow", "tracking_uri": tracking_uri, "experiment": experiment}]
    (run_spec,) = resolve(str(write_spec(tiny_raw)), list(overrides))
    return run_spec


def the_mlflow_run(client, experiment, run_key):
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id], filter_string=f"tags.`emergence.run_key` = '{run_key}'")
    assert len(runs) == 1, f"expected one MLflow run for {run_key}, found {len(runs)}"
    return runs[0]


def assert_mlflow_matches_journal(client, run, run_dir):
    journal = read_journal(run_dir)
    expected: dict[str, dict[int, float]] = {}
    for step, values in journal.values:
        for key, value in values.items():
            expected.setdefault(key, {})[step] = value
    assert len(expected) > 20
    for key, by_step in expected.items():
        history = client.get_metric_history(run.info.run_id, key)
        got = {m.step: m.value for m in history}
        assert len(history) == len(by_step), key  # every value once, no duplicates
        for step, value in by_step.items():
            assert got[step] == pytest.approx(value, rel=1e-6, abs=1e-9), (key, step)


def assert_run_complete(client, run, run_spec, run_dir):
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["emergence.run_key"] == run_spec.run_key
    assert tags["emergence.spec"] == "tiny" and tags["emergence.task"] == "binary_addition"
    assert "emergence.version" in tags
    params = run.data.params
    assert params["task.name"] == "binary_addition"
    assert params["model.d_model"] == "32"
    assert params["training.optimizer.lr"] == "0.003"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    artifacts |= {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    artifacts |= {a.path for a in client.list_artifacts(run.info.run_id, "tables")}
    assert "spec.resolved.yaml" in artifacts and "journal.jsonl" in artifacts
    assert "report/report.html" in artifacts and "report/behavior.png" in artifacts
    table_path = next(p for p in artifacts if p.startswith("tables/verdicts"))
    local = client.download_artifacts(run.info.run_id, table_path, str(run_dir / "downloaded"))
    with open(local) as handle:
        table = json.load(handle)
    verdicts = [v for v in json.loads((run_dir / "verdicts.json").read_text()) if v["kind"] == "signal"]
    rows = table.get("data", table)
    assert len(rows) == len(verdicts)
    assert [row[table["columns"].index("verdict")] for row in rows] == [v["verdict"] for v in verdicts]
    assert_mlflow_matches_journal(client, run, run_dir)


def test_tiny_run_into_sqlite_store(tiny_raw, write_spec, sqlite_tracking_uri):
    run_spec = tiny_run_spec(tiny_raw, write_spec, sqlite_tracking_uri)
    outcome = run_one(run_spec)
    assert outcome.state == "completed"
    client = MlflowClient(sqlite_tracking_uri)
    run = the_mlflow_run(client, "e2e", run_spec.run_key)
    assert_run_complete(client, run, run_spec, run_directory(run_spec))

    # `emergence compare` reads the same run back from the store (a tracking URI is the MLflow tracker's),
    # and agrees with the run directory.
    from typer.testing import CliRunner

    from emergence.cli import app

    from_store = CliRunner().invoke(app, ["compare", sqlite_tracking_uri, "--experiment", "e2e", "--format", "json"])
    from_dir = CliRunner().invoke(app, ["compare", str(run_directory(run_spec)), "--format", "json"])
    assert from_store.exit_code == 0 and from_dir.exit_code == 0, from_store.output + from_dir.output
    (store_row,), (dir_row,) = json.loads(from_store.stdout), json.loads(from_dir.stdout)
    assert store_row["run_key"] == dir_row["run_key"] == run_spec.run_key
    assert store_row["state"] == "FINISHED" and dir_row["state"] == "completed"
    for column in ("spec", "task", "emergence_step", *[k for k in dir_row if "/" in k]):
        assert str(store_row[column]) == str(dir_row[column]), column
    named = CliRunner().invoke(app, ["compare", f"mlflow:{sqlite_tracking_uri}", "--experiment", "e2e", "--format", "json"])
    assert named.exit_code == 0, named.output
    assert json.loads(named.stdout) == json.loads(from_store.stdout)
    missing = CliRunner().invoke(app, ["compare", sqlite_tracking_uri, "--experiment", "nope"])
    assert missing.exit_code == 2 and "no experiment 'nope'" in missing.output

    # A colleague reruns it from the MLflow run id alone, into a directory of their own: the same run key.
    elsewhere = run_directory(run_spec).parents[2] / "colleague"
    again = CliRunner().invoke(
        app, ["run", "--from-run", f"mlflow:{run.info.run_id}", "--store", sqlite_tracking_uri,
              f"execution.output_dir={elsewhere}", "tracking=[]", "--quiet"],
    )
    assert again.exit_code == 0, again.output
    assert (elsewhere / "tiny" / run_spec.run_key / "status.json").exists()
    # runs:/<run_id> is MLflow's too: the same spec, so the same (now completed) run.
    by_uri = CliRunner().invoke(
        app, ["run", "--from-run", f"runs:/{run.info.run_id}", "--store", sqlite_tracking_uri,
              f"execution.output_dir={elsewhere}", "tracking=[]", "--quiet"],
    )
    assert by_uri.exit_code == 0, by_uri.output
    assert f"skipped {elsewhere / 'tiny' / run_spec.run_key}" in by_uri.output.replace("\n", "")
    assert run.data.metrics.get("summary/verdicts/no_emergence", 0) + run.data.metrics.get("summary/verdicts/precursor", 0) >= 0


def test_tiny_run_into_real_server_and_rerun_reattaches(tiny_raw, write_spec, mlflow_server):
    run_spec = tiny_run_spec(tiny_raw, write_spec, mlflow_server.uri, experiment="e2e-server")
    assert run_one(run_spec).state == "completed"
    client = MlflowClient(mlflow_server.uri)
    first = the_mlflow_run(client, "e2e-server", run_spec.run_key)
    assert_run_complete(client, first, run_spec, run_directory(run_spec))
    # The same spec again, from scratch (as after `--force`): one MLflow run, reattached.
    import shutil

    shutil.rmtree(run_directory(run_spec))
    assert run_one(run_spec).state == "completed"
    again = the_mlflow_run(client, "e2e-server", run_spec.run_key)
    assert again.info.run_id == first.info.run_id


def test_server_that_goes_away_never_stops_training(tiny_raw, write_spec, mlflow_server):
    run_spec = tiny_run_spec(tiny_raw, write_spec, mlflow_server.uri, experiment="e2e-outage", overrides=["training.steps=80"])
    stopped = threading.Event()

    def stop_server_midway(result, values):
        if result.step == 25 and not stopped.is_set():
            stopped.set()
            mlflow_server.stop()

    started = time.perf_counter()
    try:
        outcome = run_one(run_spec, progress=stop_server_midway)
    finally:
        mlflow_server.start()
    assert outcome.state == "completed"
    run_dir = run_directory(run_spec)
    status = read_status(run_dir)
    assert status["state"] == "completed"
    assert "mlflow" in status["trackers_behind"]
    assert [s for s, _ in read_journal(run_dir).values][-1] == 80  # every value is in the journal
    assert time.perf_counter() - started < 300


def test_probes_ablation_and_feature_verdicts_land_in_mlflow(tiny_raw, write_spec, sqlite_tracking_uri):
    """A tiny run with probes and an ablation: the per-step probe tables, the ablation table, the feature
    verdicts and the scalars are all in the real MLflow store, and agree with the run directory."""
    tiny_raw["measures"] = [
        {"name": "probe", "features": ["carry", "carry_in"], "every": 20},
        {"name": "ablation", "features": ["carry_in"], "n_controls": 2, "n_bootstrap": 200},
    ]
    tiny_raw["analysis"] = {"precursor": {"signals": ["probe/*/accuracy"]}}
    run_spec = tiny_run_spec(tiny_raw, write_spec, sqlite_tracking_uri, experiment="e2e-probes")
    outcome = run_one(run_spec)
    assert outcome.state == "completed", outcome.reason
    client = MlflowClient(sqlite_tracking_uri)
    run = the_mlflow_run(client, "e2e-probes", run_spec.run_key)
    run_dir = run_directory(run_spec)
    assert_mlflow_matches_journal(client, run, run_dir)  # probe/... and ablation/... scalars included
    metrics = run.data.metrics
    assert {"probe/carry/accuracy", "probe/carry/baseline", "probe/carry_in/se", "ablation/carry_in/drop"} <= set(metrics)

    tables = {a.path for a in client.list_artifacts(run.info.run_id, "tables")}
    assert {f"tables/probes_step{step:08d}.json" for step in (0, 20, 40, 60)} <= tables
    assert "tables/ablation_step00000060.json" in tables and "tables/feature_verdicts.json" in tables

    def download(path: str) -> dict:
        with open(client.download_artifacts(run.info.run_id, path, str(run_dir / "downloaded"))) as handle:
            return json.load(handle)

    probes = download("tables/probes_step00000060.json")
    journal_table = next(t for t in read_journal(run_dir).tables if t["table"] == "probes" and t["step"] == 60)
    assert probes["columns"] == journal_table["columns"] and len(probes["data"]) == len(journal_table["rows"]) > 0
    features = download("tables/feature_verdicts.json")
    expected = [v for v in json.loads((run_dir / "verdicts.json").read_text()) if v["kind"] == "feature"]
    assert [row[features["columns"].index("feature")] for row in features["data"]] == [v["feature"] for v in expected]
    assert [row[features["columns"].index("verdict")] for row in features["data"]] == [v["verdict"] for v in expected]
    assert {v["feature"] for v in expected} == {"carry", "carry_in"}
    assert run.data.tags["emergence.summary.feature_verdict/carry_in/verdict"] == expected[-1]["verdict"]
    assert expected[-1]["ablation_drop"] == pytest.approx(metrics["ablation/carry_in/drop"])
    signal_rows = download("tables/verdicts.json")["data"]
    assert len(signal_rows) == 2  # probe/carry/accuracy and probe/carry_in/accuracy as precursor signals
    report = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/probe_carry.png", "report/probe_carry_in.png"} <= report
    assert "Quiet features" in (run_dir / "report.html").read_text()


def test_server_that_comes_back_is_caught_up_mid_run(tiny_raw, write_spec, mlflow_server, monkeypatch):
    """Stop the server at step 25 and start it again at step 45: the run catches the tracker up from its
    journal, and at the end every journal value is in MLflow exactly once."""
    import emergence.recorder

    monkeypatch.setattr(emergence.recorder, "TRACKER_RETRY_SECONDS", 0.0)  # retry at every measurement
    run_spec = tiny_run_spec(tiny_raw, write_spec, mlflow_server.uri, experiment="e2e-comeback", overrides=["training.steps=80"])
    seen: dict[str, bool] = {}

    def outage(result, values):
        if result.step == 25 and "stopped" not in seen:
            seen["stopped"] = True
            mlflow_server.stop()
        if result.step == 45 and "started" not in seen:
            seen["started"] = True
            mlflow_server.start()

    try:
        outcome = run_one(run_spec, progress=outage)
    finally:
        mlflow_server.start()
    assert outcome.state == "completed"
    run_dir = run_directory(run_spec)
    status = read_status(run_dir)
    assert "trackers_behind" not in status, status
    events = [e for e in read_journal(run_dir).events if e.get("event") == "tracker_caught_up"]
    assert len(events) == 1 and events[0]["tracker"] == "mlflow" and 45 <= events[0]["step"] < 80
    client = MlflowClient(mlflow_server.uri)
    assert_mlflow_matches_journal(client, the_mlflow_run(client, "e2e-comeback", run_spec.run_key), run_dir)


def test_emergence_sync_replays_a_run_its_tracker_never_saw(tiny_raw, write_spec, dead_tracking_uri, sqlite_tracking_uri):
    """A run whose tracker was unreachable throughout, then `emergence sync` into a store that works: every
    value arrives once, the run is FINISHED, and a second sync changes nothing."""
    from typer.testing import CliRunner

    from emergence.cli import app

    run_spec = tiny_run_spec(tiny_raw, write_spec, dead_tracking_uri, experiment="e2e-sync")
    assert run_one(run_spec).state == "completed"
    run_dir = run_directory(run_spec)
    assert "mlflow" in read_status(run_dir)["trackers_behind"]

    # The server is gone for good; point the run's resolved spec at a store that works, as a user would.
    spec_file = run_dir / "spec.resolved.yaml"
    spec_file.write_text(spec_file.read_text().replace(dead_tracking_uri, sqlite_tracking_uri))
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(app, ["sync", str(run_dir)])
        assert result.exit_code == 0, result.output
        assert f"synced {run_dir} -> mlflow" in result.output.replace("\n", "")
    assert "trackers_behind" not in read_status(run_dir)
    client = MlflowClient(sqlite_tracking_uri)
    run = the_mlflow_run(client, "e2e-sync", run_spec.run_key)
    assert_run_complete(client, run, run_spec, run_dir)
    assert "summary/emergence_step/behavior/test/exact_match" in run.data.metrics  # the summary was replayed too

    missing = runner.invoke(app, ["sync", str(run_dir / "nope")])
    assert missing.exit_code == 2 and "neither a journal.jsonl nor a sweep.json here" in missing.output


def test_a_sweep_nests_its_runs_under_one_parent_on_a_real_server(tiny_raw, write_spec, mlflow_server):
    from emergence.orchestrate import execute

    tiny_raw["grid"] = {"seed": [0, 1]}
    tiny_raw["training"]["steps"] = 12
    tiny_raw["tracking"] = [{"backend": "mlflow", "tracking_uri": mlflow_server.uri, "experiment": "e2e-sweep"}]
    runs = resolve(str(write_spec(tiny_raw)))
    assert len({r.sweep_key for r in runs}) == 1 and runs[0].sweep_key
    outcomes = execute(runs)
    assert [o.state for o in outcomes] == ["completed", "completed"]

    client = MlflowClient(mlflow_server.uri)
    experiment_id = client.get_experiment_by_name("e2e-sweep").experiment_id
    (parent,) = client.search_runs([experiment_id], filter_string="tags.`emergence.sweep_parent` = 'true'")
    assert parent.data.tags["emergence.sweep"] == runs[0].sweep_key and parent.info.status == "FINISHED"
    assert parent.data.tags["emergence.sweep_size"] == "2"
    children = [the_mlflow_run(client, "e2e-sweep", run.run_key) for run in runs]
    assert all(child.data.tags["mlflow.parentRunId"] == parent.info.run_id for child in children)
    assert {child.data.params["seed"] for child in children} == {"0", "1"}

    # The parent carries the sweep summary: values, tables and the report.
    assert parent.data.metrics["summary/runs/completed"] == 2
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    assert {"sweep/report.html", "sweep/sweep.json"} <= artifacts
    assert "tables/sweep_runs.json" in {a.path for a in client.list_artifacts(parent.info.run_id, "tables")}

    # Nothing fell behind, so a sync of the sweep directory replays nothing (a W&B run would get it twice), until
    # a tracker is named; MLflow then skips every value it holds.
    from emergence.orchestrate import sweep_directory
    from emergence.sync import sync_sweep

    directory = sweep_directory(runs)
    assert json.loads((directory / "status.json").read_text()) == {"state": "completed"}
    results = sync_sweep(directory)
    assert [(r.run_dir, r.synced, r.failed) for r in results] == [(directory, [], {})]
    assert [r.synced for r in sync_sweep(directory, ["mlflow"])] == [["mlflow"], ["mlflow"], ["mlflow"]]
    assert len(client.get_metric_history(parent.info.run_id, "summary/runs/completed")) == 1
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"

    # --force: the old MLflow runs go to the trash and the reruns log into fresh ones; the same parent.
    assert [o.state for o in execute(runs, force=True)] == ["completed", "completed"]
    assert len(client.search_runs([experiment_id])) == 3
    reruns = [the_mlflow_run(client, "e2e-sweep", run.run_key) for run in runs]
    assert {r.info.run_id for r in reruns}.isdisjoint(c.info.run_id for c in children)
    assert all(client.get_run(c.info.run_id).info.lifecycle_stage == "deleted" for c in children)
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in reruns)

    # A grown grid is a new sweep: its parent holds all three runs, the two finished ones moved under it.
    tiny_raw["grid"] = {"seed": [0, 1, 2]}
    grown = resolve(str(write_spec(tiny_raw, "grown.yaml")))
    assert [o.state for o in execute(grown)] == ["skipped", "skipped", "completed"]
    (new_parent,) = client.search_runs(
        [experiment_id], filter_string=f"tags.`emergence.sweep` = '{grown[0].sweep_key}' and tags.`emergence.sweep_parent` = 'true'"
    )
    nested = [the_mlflow_run(client, "e2e-sweep", run.run_key) for run in grown]
    assert all(n.data.tags["mlflow.parentRunId"] == new_parent.info.run_id for n in nested)
    assert new_parent.data.metrics["summary/runs/skipped"] == 2 and new_parent.data.metrics["summary/runs/completed"] == 1
