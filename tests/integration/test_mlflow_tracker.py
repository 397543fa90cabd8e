"""The MLflow tracker against a real SQLite store and a real ``mlflow server``, read back with MlflowClient
and with the tracker's own RunReader capability (what ``emergence compare`` and ``--from-run`` use)."""

from __future__ import annotations

import json
import logging
import math
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from emergence_mlflow import MlflowTracker
from emergence_mlflow.store import CUSTOM_MODEL_DEVELOPMENT, EXPERIMENT_KIND_TAG
from emergence_mlflow.tracker import FAIL_FAST_HTTP_SETTINGS, legal_name
from mlflow import MlflowClient
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

from emergence import registry
from emergence.tracking import (
    RUN_RECORD_FIELDS,
    ForgetsRuns,
    RunReader,
    SweepParent,
    TrackerFanout,
    run_readers,
)

if TYPE_CHECKING:
    from conftest import MlflowServer

pytestmark = pytest.mark.integration

CONFIG = {"seed": 0, "model": {"n_layers": 2, "d_model": 64}, "task": {"name": "addition", "digits": 3}}


def options(tracking_uri: str | None, experiment: str = "emergence-tests", **extra: Any) -> dict[str, Any]:
    return {"backend": "mlflow", "experiment": experiment, "tracking_uri": tracking_uri, "tags": {}, **extra}


def new_run_key() -> str:
    return uuid.uuid4().hex[:12]


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((metric.step, metric.value) for metric in client.get_metric_history(run_id, key))


def runs_with_key(client: MlflowClient, experiment: str, run_key: str) -> list[Any]:
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs([experiment_id], filter_string=f"tags.`emergence.run_key` = '{run_key}'")


def download(client: MlflowClient, run_id: str, path: str, scratch: Path) -> Path:
    scratch.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, path, dst_path=str(scratch)))


def read_artifact_json(client: MlflowClient, run_id: str, path: str, scratch: Path) -> Any:
    return json.loads(download(client, run_id, path, scratch).read_text())


@pytest.fixture(params=["sqlite", "server"])
def tracking_uri(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_tracking_uri")
    return request.getfixturevalue("mlflow_server").uri


def test_entry_point_finds_the_tracker() -> None:
    assert registry.trackers.get("mlflow") is MlflowTracker


def test_the_tracker_offers_its_capabilities() -> None:
    assert isinstance(MlflowTracker, RunReader)
    assert isinstance(MlflowTracker, SweepParent)
    assert isinstance(MlflowTracker, ForgetsRuns)


def test_claims_tracking_uris_and_run_references_never_paths(tmp_path: Path) -> None:
    for source in (
        "sqlite:///mlflow.db",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "http://127.0.0.1:5000",
        "https://mlflow.example.org",
        "postgresql+psycopg2://user@db/mlflow",
        "mysql://user@db/mlflow",
        "file:///tmp/mlruns",
        "databricks",
        "databricks://profile",
        "runs:/abc",
    ):
        assert MlflowTracker.claims(source), source
    run_dir = tmp_path / "runs" / "tiny" / "284df4c97a16"  # a run directory without W&B files
    run_dir.mkdir(parents=True)
    (run_dir / "spec.resolved.yaml").write_text("name: tiny\n")
    wandb_folder = tmp_path / "wandb" / "offline-run-20250101_120000-284df4c97a16"  # a W&B run folder
    wandb_folder.mkdir(parents=True)
    (wandb_folder / "run-284df4c97a16.wandb").write_bytes(b"")
    for source in ("runs/tiny", "mlflow.db", "./mlflow.db", str(run_dir), str(wandb_folder), "C:\\runs", "s3://bucket/x"):
        assert not MlflowTracker.claims(source), source


def test_the_core_finds_the_tracker_as_a_run_reader() -> None:
    assert run_readers()["mlflow"] is MlflowTracker


def test_experiments_it_makes_or_joins_are_of_the_model_training_kind(sqlite_tracking_uri: str, tmp_path: Path) -> None:
    """MLflow 3's UI files an experiment without ``mlflow.experimentKind`` under GenAI "Evaluations"."""
    client = MlflowClient(sqlite_tracking_uri)
    tracker = MlflowTracker(options(sqlite_tracking_uri, experiment="kind-new"), run_dir=tmp_path)
    tracker.start(new_run_key(), "run", "group", {}, {})
    tracker.finish("completed")
    assert EXPERIMENT_KIND_TAG == "mlflow.experimentKind" and CUSTOM_MODEL_DEVELOPMENT == "custom_model_development"
    assert client.get_experiment_by_name("kind-new").tags[EXPERIMENT_KIND_TAG] == CUSTOM_MODEL_DEVELOPMENT

    client.create_experiment("kind-untagged")  # made before there was a kind, or by someone else
    client.create_experiment("kind-chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    for name in ("kind-untagged", "kind-chosen"):
        joining = MlflowTracker(options(sqlite_tracking_uri, experiment=name), run_dir=tmp_path)
        joining.start(new_run_key(), "run", "group", {}, {})
        joining.finish("completed")
    assert client.get_experiment_by_name("kind-untagged").tags[EXPERIMENT_KIND_TAG] == CUSTOM_MODEL_DEVELOPMENT
    assert client.get_experiment_by_name("kind-chosen").tags[EXPERIMENT_KIND_TAG] == "genai_development"

    # A sweep's parent is made before any run: its experiment is of the same kind.
    MlflowTracker.prepare_sweep(options(sqlite_tracking_uri, experiment="kind-sweep"), "sweep0001", "tiny", ["a"])
    assert client.get_experiment_by_name("kind-sweep").tags[EXPERIMENT_KIND_TAG] == CUSTOM_MODEL_DEVELOPMENT


def test_every_method_reads_back(tracking_uri: str, tmp_path: Path) -> None:
    run_key = new_run_key()
    tracker = MlflowTracker(options(tracking_uri, tags={"team": "interp"}), run_dir=tmp_path)
    tracker.start(run_key, "addition-2L", "addition", {"spec": "addition.yaml"}, CONFIG)
    tracker.log_params({"model.n_layers": 2, "task.name": "addition", "measures": ["rankme", "probe"]})
    for step in (0, 10, 20):
        tracker.log_metrics(
            {"geometry/rankme/resid_post/L1": step / 10, "behavior/test/exact_match": step / 20}, step
        )
    tracker.log_table(
        "verdicts", ["signal", "precursor", "lead"], [["rankme", True, 120], ["probe", False, math.nan]]
    )
    tracker.log_table("events", ["step"], [[10]], step=20)
    report = tmp_path / "report.html"
    report.write_text("<html>report</html>")
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "rankme.png").write_bytes(b"\x89PNG fake")
    tracker.log_artifact(report)
    tracker.log_artifact(plots)
    tracker.log_artifact(report, name="reports")
    tracker.set_summary(
        {"precursors": 1, "first_event_step": 20, "verdict": "rankme leads", "converged": True}
    )
    tracker.finish("completed")

    client = MlflowClient(tracking_uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "addition-2L"
    if tracking_uri.startswith("sqlite:"):
        # Artifacts live beside the SQLite file, not in whatever directory the process ran in.
        assert run.info.artifact_uri.startswith(Path(tracking_uri.removeprefix("sqlite:///")).parent.as_uri())
    assert run.data.tags["emergence.run_key"] == run_key
    assert run.data.tags["emergence.group"] == "addition"
    assert run.data.tags["mlflow.runName"] == "addition-2L"
    assert run.data.tags["spec"] == "addition.yaml"
    assert run.data.tags["team"] == "interp"
    assert run.data.tags["emergence.summary.verdict"] == "rankme leads"
    assert run.data.params == {
        "model.n_layers": "2",
        "task.name": "addition",
        "measures": '["rankme", "probe"]',
    }

    assert history(client, tracker.run_id, "geometry/rankme/resid_post/L1") == [
        (0, 0.0),
        (10, 1.0),
        (20, 2.0),
    ]
    assert history(client, tracker.run_id, "behavior/test/exact_match") == [(0, 0.0), (10, 0.5), (20, 1.0)]
    # Summaries sit at the last logged step, so MLflow's latest value is the summary.
    assert history(client, tracker.run_id, "summary/precursors") == [(20, 1.0)]
    assert run.data.metrics["summary/first_event_step"] == 20.0
    assert run.data.metrics["summary/converged"] == 1.0

    verdicts = read_artifact_json(client, tracker.run_id, "tables/verdicts.json", tmp_path / "dl")
    assert verdicts == {
        "columns": ["signal", "precursor", "lead"],
        "data": [["rankme", True, 120], ["probe", False, None]],
    }
    # Written in MlflowClient.log_table's layout, so MLflow's reader (pandas "split") understands it.
    # (MlflowClient.load_table itself cannot be used here: it searches the fluent global store.)
    import pandas
    loaded = pandas.read_json(
        download(client, tracker.run_id, "tables/verdicts.json", tmp_path / "pd"), orient="split"
    )
    assert list(loaded["signal"]) == ["rankme", "probe"]
    assert read_artifact_json(
        client, tracker.run_id, "tables/events_step00000020.json", tmp_path / "dl2"
    ) == {
        "columns": ["step"],
        "data": [[10]],
    }
    assert {"path": "tables/verdicts.json", "type": "table"} in json.loads(
        run.data.tags[MLFLOW_LOGGED_ARTIFACTS]
    )

    assert {artifact.path for artifact in client.list_artifacts(tracker.run_id)} == {
        "report.html",
        "plots",
        "reports",
        "tables",
        "spec.resolved.json",
    }
    assert [artifact.path for artifact in client.list_artifacts(tracker.run_id, "plots")] == [
        "plots/rankme.png"
    ]
    assert [artifact.path for artifact in client.list_artifacts(tracker.run_id, "reports")] == [
        "reports/report.html"
    ]
    assert read_artifact_json(client, tracker.run_id, "spec.resolved.json", tmp_path / "dl3") == CONFIG


@pytest.mark.parametrize(("status", "expected"), [("failed", "FAILED"), ("interrupted", "KILLED")])
def test_finish_maps_status(sqlite_tracking_uri: str, tmp_path: Path, status: str, expected: str) -> None:
    tracker = MlflowTracker(options(sqlite_tracking_uri), run_dir=tmp_path)
    tracker.start(new_run_key(), "run", "group", {}, {})
    tracker.finish(status)
    assert MlflowClient(sqlite_tracking_uri).get_run(tracker.run_id).info.status == expected
    with pytest.raises(ValueError, match="unknown run status"):
        tracker.finish("done")


def test_reattach_continues_one_run_and_replay_is_idempotent(tracking_uri: str, tmp_path: Path) -> None:
    run_key = new_run_key()
    first = MlflowTracker(options(tracking_uri), run_dir=tmp_path)
    first.start(run_key, "run", "group", {"attempt": "1"}, CONFIG)
    first.log_params({"seed": 0, "model.n_layers": 2})
    for step in (0, 10):
        first.log_metrics({"behavior/loss": 1.0 / (step + 1), "geometry/rankme/L0": float(step)}, step)
    first.log_table("verdicts", ["signal"], [["rankme"]])
    first.finish("interrupted")
    assert first.reattached is False

    second = MlflowTracker(options(tracking_uri), run_dir=tmp_path)
    second.start(run_key, "run", "group", {"attempt": "2"}, CONFIG)
    assert second.reattached is True
    assert second.run_id == first.run_id
    client = MlflowClient(tracking_uri)
    assert client.get_run(second.run_id).info.status == "RUNNING"

    # The core replays the journal from the start, then goes on training.
    second.log_params({"seed": 0, "model.n_layers": 2, "training.steps": 30})
    for step in (0, 10, 20):
        second.log_metrics({"behavior/loss": 1.0 / (step + 1), "geometry/rankme/L0": float(step)}, step)
    second.log_table("verdicts", ["signal"], [["rankme"], ["probe"]])
    second.finish("completed")

    assert len(runs_with_key(client, "emergence-tests", run_key)) == 1
    run = client.get_run(second.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["attempt"] == "2"
    assert run.data.params == {"seed": "0", "model.n_layers": "2", "training.steps": "30"}
    assert history(client, run.info.run_id, "geometry/rankme/L0") == [(0, 0.0), (10, 10.0), (20, 20.0)]
    assert history(client, run.info.run_id, "behavior/loss") == [(0, 1.0), (10, 1 / 11), (20, 1 / 21)]
    # A table is a snapshot: logging it again replaces it rather than appending rows.
    verdicts = read_artifact_json(client, run.info.run_id, "tables/verdicts.json", tmp_path / "dl")
    assert verdicts["data"] == [["rankme"], ["probe"]]
    logged = json.loads(run.data.tags[MLFLOW_LOGGED_ARTIFACTS])
    assert logged.count({"path": "tables/verdicts.json", "type": "table"}) == 1


def test_changed_param_value_warns_and_keeps_the_first(
    sqlite_tracking_uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = MlflowTracker(options(sqlite_tracking_uri), run_dir=tmp_path)
    tracker.start(new_run_key(), "run", "group", {}, {})
    tracker.log_params({"execution.output_dir": "runs"})
    with caplog.at_level(logging.WARNING, logger="emergence_mlflow.tracker"):
        tracker.log_params({"execution.output_dir": "elsewhere"})
    assert "already 'runs'" in caplog.text
    assert MlflowClient(sqlite_tracking_uri).get_run(tracker.run_id).data.params == {
        "execution.output_dir": "runs"
    }


def test_thousands_of_metrics_in_one_call_are_chunked(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    tracker = MlflowTracker(options(mlflow_server.uri), run_dir=tmp_path)
    tracker.start(new_run_key(), "wide", "group", {}, {})
    batches: list[int] = []
    log_batch = tracker.client.log_batch

    def counting_log_batch(run_id: str, metrics: Any = (), **kwargs: Any) -> None:
        batches.append(len(metrics))
        log_batch(run_id, metrics=metrics, **kwargs)

    tracker.client.log_batch = counting_log_batch  # type: ignore[method-assign]
    values = {f"probe/feature{i}/L{i % 4}/acc": i / 2500 for i in range(2500)}
    tracker.log_metrics(values, step=7)

    assert batches == [1000, 1000, 500]
    run = MlflowClient(mlflow_server.uri).get_run(tracker.run_id)
    assert run.data.metrics == pytest.approx(values)
    assert {metric.step for metric in run.data._metric_objs} == {7}


def test_long_params_stay_under_the_request_size_limit(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    # 100 values of 6000 non-ASCII characters escape to ~3.6 MB of JSON, over MLflow's 1 MB batch limit.
    tracker = MlflowTracker(options(mlflow_server.uri), run_dir=tmp_path)
    tracker.start(new_run_key(), "long-params", "group", {}, {})
    request_sizes: list[int] = []
    log_batch = tracker.client.log_batch

    def measuring_log_batch(run_id: str, params: Any = (), **kwargs: Any) -> None:
        request_sizes.append(len(json.dumps({"params": [{"key": p.key, "value": p.value} for p in params]})))
        log_batch(run_id, params=params, **kwargs)

    tracker.client.log_batch = measuring_log_batch  # type: ignore[method-assign]
    values = {f"notes.{i}": "é" * 6000 for i in range(100)}
    tracker.log_params(values)
    assert len(request_sizes) > 1
    assert max(request_sizes) < 1_000_000
    assert MlflowClient(mlflow_server.uri).get_run(tracker.run_id).data.params == values


def test_params_are_sanitised_truncated_and_batched(sqlite_tracking_uri: str, tmp_path: Path) -> None:
    tracker = MlflowTracker(options(sqlite_tracking_uri), run_dir=tmp_path)
    tracker.start(new_run_key(), "run", "group", {}, {})
    long_key = "grid." + "x" * 300
    awkward = {
        long_key: 1,
        "tags.owner:name": "ada",
        "tags.owner;name": "bob",  # sanitises to the same characters; must not collide
        "../escape": 2,
        "a//b/./c": 3,
        "..hidden": 4,
        "weird key!?": 5,
        "": 6,
        "description": "y" * 7000,
    }
    plenty = {f"grid.values.{i}": i for i in range(230)}
    tracker.log_params({**awkward, **plenty})

    params = MlflowClient(sqlite_tracking_uri).get_run(tracker.run_id).data.params
    assert len(params) == len(awkward) + len(plenty)
    for raw in awkward:
        key = legal_name(raw)
        assert key in params
        assert len(key) <= 250
        assert all(character.isalnum() or character in "/_.- " for character in key)
        assert not key.startswith(("/", "..")) and "//" not in key and "/./" not in key
    assert legal_name("tags.owner:name") != legal_name("tags.owner;name")
    assert legal_name("model.n_layers") == "model.n_layers"
    assert params[legal_name(long_key)] == "1"
    assert params["description"] == "y" * 6000
    assert params["grid.values.229"] == "229"
    # Logging the same params again (a replay) is a no-op, not an MLflow "already logged" error.
    tracker.log_params({**awkward, **plenty})


def test_non_finite_and_non_numeric_metrics(sqlite_tracking_uri: str, tmp_path: Path) -> None:
    import numpy as np
    tracker = MlflowTracker(options(sqlite_tracking_uri), run_dir=tmp_path)
    tracker.start(new_run_key(), "run", "group", {}, {})
    tracker.log_metrics(
        {"a/nan": math.nan, "a/inf": math.inf, "a/numpy": np.float32(0.25), "a/text": "n/a", "a/none": None},  # type: ignore[dict-item]
        step=3,
    )
    metrics = MlflowClient(sqlite_tracking_uri).get_run(tracker.run_id).data.metrics
    assert set(metrics) == {"a/nan", "a/inf", "a/numpy"}
    assert math.isnan(metrics["a/nan"])
    assert metrics["a/inf"] >= 1.7e308  # MLflow stores infinities as the largest double
    assert metrics["a/numpy"] == 0.25


def test_trackers_coexist_in_one_process(sqlite_tracking_uri: str, tmp_path: Path) -> None:
    left = MlflowTracker(options(sqlite_tracking_uri), run_dir=tmp_path / "left")
    right = MlflowTracker(options(sqlite_tracking_uri, experiment="other"), run_dir=tmp_path / "right")
    left.start(new_run_key(), "left", "g", {}, {})
    right.start(new_run_key(), "right", "g", {}, {})
    for step in range(3):
        left.log_metrics({"m": float(step)}, step)
        right.log_metrics({"m": -float(step)}, step)
    left.finish("completed")
    right.finish("failed")
    client = MlflowClient(sqlite_tracking_uri)
    assert history(client, left.run_id, "m") == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert history(client, right.run_id, "m") == [(0, 0.0), (1, -1.0), (2, -2.0)]
    assert client.get_run(right.run_id).info.experiment_id != client.get_run(left.run_id).info.experiment_id


def test_experiment_created_concurrently_is_reused(sqlite_tracking_uri: str, tmp_path: Path) -> None:
    MlflowClient(sqlite_tracking_uri).create_experiment("raced")
    tracker = MlflowTracker(options(sqlite_tracking_uri, experiment="raced"), run_dir=tmp_path)
    lookup = tracker.client.get_experiment_by_name
    answers = iter([None])  # the first lookup misses: another process creates it in between

    def racing_lookup(name: str) -> Any:
        return next(answers, None) or lookup(name)

    tracker.client.get_experiment_by_name = racing_lookup  # type: ignore[method-assign]
    tracker.start(new_run_key(), "run", "group", {}, {})
    assert tracker.client.get_run(tracker.run_id).info.experiment_id == lookup("raced").experiment_id


def test_default_tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert (
        MlflowTracker(options(None), run_dir=tmp_path).tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert MlflowTracker(options(None), run_dir=tmp_path).tracking_uri == "http://127.0.0.1:1"
    assert (
        MlflowTracker(options("sqlite:///elsewhere.db"), run_dir=tmp_path).tracking_uri
        == "sqlite:///elsewhere.db"
    )


def test_fail_fast_settings_apply_only_during_calls(
    sqlite_tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in FAIL_FAST_HTTP_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "33")  # the user's own choice wins
    tracker = MlflowTracker(options(sqlite_tracking_uri), run_dir=tmp_path)
    seen: dict[str, str | None] = {}
    create_run = tracker.client.create_run

    def spying_create_run(*args: Any, **kwargs: Any) -> Any:
        seen.update({name: os.environ.get(name) for name in FAIL_FAST_HTTP_SETTINGS})
        return create_run(*args, **kwargs)

    tracker.client.create_run = spying_create_run  # type: ignore[method-assign]
    tracker.start(new_run_key(), "run", "group", {}, {})
    assert seen == {**FAIL_FAST_HTTP_SETTINGS, "MLFLOW_HTTP_REQUEST_TIMEOUT": "33"}
    assert os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES") is None
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "33"


def test_dead_server_raises_quickly(dead_tracking_uri: str, tmp_path: Path) -> None:
    tracker = MlflowTracker(options(dead_tracking_uri), run_dir=tmp_path)
    began = time.monotonic()
    with pytest.raises(MlflowException):
        tracker.start(new_run_key(), "run", "group", {}, {})
    assert time.monotonic() - began < 15


def test_server_goes_away_mid_run_and_comes_back(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    run_key = new_run_key()
    journal: list[tuple[int, dict[str, float]]] = [
        (step, {"behavior/loss": 1.0 / (step + 1)}) for step in range(6)
    ]
    tracker = MlflowTracker(options(mlflow_server.uri), run_dir=tmp_path)
    fanout = TrackerFanout([("mlflow", tracker)])
    fanout.start(run_key, "flaky", "group", {}, CONFIG)
    for step, values in journal[:3]:
        fanout.log_metrics(values, step)
    assert fanout.failed == {}

    mlflow_server.stop()
    try:
        began = time.monotonic()
        step, values = journal[3]
        fanout.log_metrics(values, step)
        assert time.monotonic() - began < 15
        assert "log_metrics" in fanout.failed["mlflow"]
    finally:
        mlflow_server.start()

    # Catching up after the outage: a fresh tracker reattaches and the whole journal is replayed.
    caught_up = MlflowTracker(options(mlflow_server.uri), run_dir=tmp_path)
    caught_up.start(run_key, "flaky", "group", {}, CONFIG)
    assert caught_up.run_id == tracker.run_id
    for step, values in journal:
        caught_up.log_metrics(values, step)
    caught_up.finish("completed")

    client = MlflowClient(mlflow_server.uri)
    assert history(client, tracker.run_id, "behavior/loss") == [(step, 1.0 / (step + 1)) for step in range(6)]
    assert client.get_run(tracker.run_id).info.status == RunStatus.to_string(RunStatus.FINISHED)


# -- reading runs back: the RunReader capability ---------------------------------------------------------


def logged_run(tracking_uri: str, tmp_path: Path, experiment: str = "emergence-tests") -> tuple[MlflowTracker, str, dict[str, Any]]:
    """A finished emergence run as the core logs one: params, verdict tables, summary, resolved spec."""
    run_key = new_run_key()
    config = {"run_key": run_key, "name": "addition", **CONFIG}
    tracker = MlflowTracker(options(tracking_uri, experiment), run_dir=tmp_path)
    tracker.start(run_key, "addition-2L", "addition", {"emergence.spec": "addition", "emergence.task": "addition"}, config)
    tracker.log_params({"seed": 3, "task.name": "addition", "task.level": 2, "model.n_layers": 2, "model.d_model": 64, "run.n_params": 1234})
    tracker.log_metrics({"behavior/loss": 0.5}, 40)
    tracker.log_table("verdicts", ["kind", "signal", "verdict", "lead_steps"], [["signal", "llc/mean", "precursor", 120]])
    tracker.log_table("feature_verdicts", ["kind", "feature", "verdict", "lead_steps"], [["feature", "carry", "quiet", math.nan]])
    tracker.set_summary({"emergence_step/behavior/test/exact_match": 40, "verdicts/precursor": 1})
    tracker.finish("completed")
    return tracker, run_key, config


def test_read_runs_gives_one_record_per_emergence_run(sqlite_tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tracker, run_key, _ = logged_run(sqlite_tracking_uri, tmp_path)
    MlflowTracker.prepare_sweep(options(sqlite_tracking_uri), "sweep0001", "addition", [run_key])  # a parent: left out
    (record,) = MlflowTracker.read_runs(sqlite_tracking_uri, "emergence-tests")
    assert tuple(record) == (*RUN_RECORD_FIELDS, "ref")
    assert record["ref"] == tracker.run_id and MlflowTracker.fetch_resolved_spec(record["ref"], sqlite_tracking_uri)["name"] == "addition"
    assert {key: value for key, value in record.items() if key not in ("tags", "ref")} == {
        "run_key": run_key,
        "spec": "addition",
        "task": "addition",
        "level": "2",
        "n_layers": "2",
        "d_model": "64",
        "n_params": "1234",
        "seed": "3",
        "state": "FINISHED",
        "emergence_step": 40,
        "verdicts": [
            {"kind": "signal", "signal": "llc/mean", "verdict": "precursor", "lead_steps": 120},
            {"kind": "feature", "feature": "carry", "verdict": "quiet", "lead_steps": None},
        ],
    }
    assert record["tags"]["emergence.run_key"] == run_key
    # One run by its reference, from the store $MLFLOW_TRACKING_URI names.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_tracking_uri)
    assert MlflowTracker.read_runs(f"runs:/{tracker.run_id}") == [record]


def test_read_runs_defaults_to_the_trackers_experiment(sqlite_tracking_uri: str, tmp_path: Path) -> None:
    _, run_key, _ = logged_run(sqlite_tracking_uri, tmp_path, experiment="emergence")
    assert [record["run_key"] for record in MlflowTracker.read_runs(sqlite_tracking_uri)] == [run_key]


def test_fetch_resolved_spec_by_run_id_or_runs_uri(sqlite_tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tracker, _, config = logged_run(sqlite_tracking_uri, tmp_path)
    assert MlflowTracker.fetch_resolved_spec(tracker.run_id, sqlite_tracking_uri) == config
    assert MlflowTracker.fetch_resolved_spec(f"runs:/{tracker.run_id}", sqlite_tracking_uri) == config
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_tracking_uri)  # no store given: the environment's
    assert MlflowTracker.fetch_resolved_spec(f"runs:/{tracker.run_id}") == config


def test_reading_back_names_what_is_missing(sqlite_tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LookupError, match="no experiment 'nope'"):
        MlflowTracker.read_runs(sqlite_tracking_uri, "nope")
    MlflowClient(sqlite_tracking_uri).create_experiment("empty")
    with pytest.raises(LookupError, match="holds no emergence run"):
        MlflowTracker.read_runs(sqlite_tracking_uri, "empty")
    with pytest.raises(LookupError, match="mlflow run 0123abcd"):
        MlflowTracker.fetch_resolved_spec("0123abcd", sqlite_tracking_uri)
    with pytest.raises(LookupError, match="not an MLflow run id"):
        MlflowTracker.fetch_resolved_spec("runs:/", sqlite_tracking_uri)
    # A mistyped SQLite path is an error, not a new empty store made there.
    typo = tmp_path / "typo" / "mlflow.db"
    with pytest.raises(LookupError, match="no MLflow store"):
        MlflowTracker.read_runs(f"sqlite:///{typo}", "emergence-tests")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(LookupError, match="no MLflow store"):
        MlflowTracker.fetch_resolved_spec("0123abcd")  # the default store, ./mlflow.db, is not there
    assert not typo.exists() and not (elsewhere / "mlflow.db").exists()


def test_reading_back_from_a_server(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    tracker, run_key, config = logged_run(mlflow_server.uri, tmp_path, experiment=f"read-{uuid.uuid4().hex[:6]}")
    (record,) = MlflowTracker.read_runs(mlflow_server.uri, tracker.experiment_name)
    assert record["run_key"] == run_key and record["verdicts"][0]["verdict"] == "precursor"
    assert MlflowTracker.fetch_resolved_spec(tracker.run_id, mlflow_server.uri) == config


def test_a_run_logged_into_through_run_id_is_its_owners(sqlite_tracking_uri: str, tmp_path: Path) -> None:
    """run_id: our values go into someone else's run (a Trainer's), our params under emergence., the run is
    left for its owner to end, and a later run of the same run key without run_id makes its own run."""
    client = MlflowClient(sqlite_tracking_uri)
    experiment_id = client.create_experiment("hosted")
    host = client.create_run(experiment_id, run_name="trainer-run")
    client.log_param(host.info.run_id, "seed", "42")
    joined = MlflowTracker(options(sqlite_tracking_uri, "hosted", run_id=host.info.run_id), tmp_path)
    joined.start("k1", "monitor", "group", {}, {"seed": 0})
    joined.log_params({"seed": 0, "schedule.every": 5})
    joined.log_metrics({"geometry/rankme/x/L0": 2.0}, 0)
    joined.finish("completed")
    run = client.get_run(host.info.run_id)
    assert run.info.status == "RUNNING" and run.info.run_name == "trainer-run"  # its owner ends it
    assert run.data.params == {"seed": "42", "emergence.seed": "0", "emergence.schedule.every": "5"}
    assert run.data.metrics == {"geometry/rankme/x/L0": 2.0} and run.data.tags["emergence.run_key"] == "k1"
    client.set_terminated(host.info.run_id)

    own = MlflowTracker(options(sqlite_tracking_uri, "hosted"), tmp_path)
    own.start("k1", "monitor", "group", {}, {})
    assert own.run_id != host.info.run_id and not own.reattached
    assert client.get_run(host.info.run_id).info.status == "FINISHED"
    MlflowTracker.forget_runs(options(sqlite_tracking_uri, "hosted"), ["k1"])  # --force never deletes a host's run
    assert client.get_run(host.info.run_id).info.lifecycle_stage == "active"
