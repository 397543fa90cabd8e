"""The W&B tracker against real offline W&B runs, read back from the ``run-<id>.wandb`` files they write.

There is no W&B server here, and ``wandb.Api`` needs one. What an offline run holds is its record log:
the same protobuf records that ``wandb sync`` uploads later, so reading them back (``emergence_wandb.records``)
shows exactly what the W&B server would receive. The same reader is the tracker's RunReader capability,
which serves ``emergence compare wandb:PATH`` (or ``compare PATH``) and ``emergence run --from-run``, tested
at the end against a real tiny run.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wandb
from emergence_wandb import WandbTracker
from emergence_wandb.records import RunLog, read_run, read_run_folder, record_ends, run_file_of, run_folders
from emergence_wandb.tracker import artifact_name, has_credentials, resolve_mode
from typer.testing import CliRunner
from wandb.proto import wandb_internal_pb2 as pb

from emergence import registry
from emergence.cli import app
from emergence.compare import FIXED_COLUMNS, cells
from emergence.record import JournalContents, read_journal
from emergence.rundir import RunResult, read_resolved, read_status, run_directory, spec_fields
from emergence.runner import run_one
from emergence.spec import resolve
from emergence.tracking import (
    RUN_RECORD_FIELDS,
    RunReader,
    TrackerFanout,
    TrackerStart,
    replay_journal,
    run_readers,
)

pytestmark = pytest.mark.integration

CONFIG = {"seed": 0, "model": {"n_layers": 2, "d_model": 64}, "task": {"name": "addition", "digits": 3}}

def the_offline_run(run_dir: Path, run_key: str) -> RunLog:
    # run.finish() only asks wandb-core to close the run's file, without waiting, and the last records
    # can still sit in its write buffer when finish returns; teardown waits until every file is closed.
    wandb.teardown()
    (folder,) = run_folders(run_dir / "wandb", run_key)
    return read_run_folder(folder)


def manifest_paths(artifact: pb.ArtifactRecord) -> set[str]:
    return {entry.path for entry in artifact.manifest.contents}


def new_run_key() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Offline W&B with every file it writes in tmp_path, and no login from the developer's machine."""
    home = tmp_path / "wandb-home"
    home.mkdir()
    for name in (
        "WANDB_API_KEY",
        "WANDB_IDENTITY_TOKEN_FILE",
        "WANDB_BASE_URL",
        "WANDB_PROJECT",
        "WANDB_ENTITY",
        "WANDB_RUN_ID",
        "WANDB_RESUME",
        "WANDB_RUN_GROUP",
        "WANDB_TAGS",
        "WANDB_NAME",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(home))
    for name in ("WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(home / name.lower()))
    monkeypatch.setenv("NETRC", str(home / "netrc"))  # absent
    return home


def test_entry_point_finds_the_tracker() -> None:
    assert registry.trackers.get("wandb") is WandbTracker


def test_the_tracker_reads_runs_back() -> None:
    assert isinstance(WandbTracker, RunReader)
    assert run_readers()["wandb"] is WandbTracker


def test_claims_wandb_folders_and_what_holds_them(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "tiny" / "284df4c97a16"
    folder = run_dir / "wandb" / "offline-run-20250101_120000-284df4c97a16"
    folder.mkdir(parents=True)
    (folder / "run-284df4c97a16.wandb").write_bytes(b"")  # only its name is looked at
    for source in (folder, folder / "run-284df4c97a16.wandb", run_dir / "wandb", run_dir, tmp_path / "runs", tmp_path):
        assert WandbTracker.claims(str(source)), source
    plain = tmp_path / "plain" / "tiny" / "0123456789ab"  # a run directory without W&B files
    plain.mkdir(parents=True)
    (plain / "spec.resolved.yaml").write_text("name: tiny\n")
    stray = tmp_path / "stray"  # a .wandb file that is not in a W&B run folder
    stray.mkdir()
    (stray / "run-abc.wandb").write_bytes(b"")
    for source in (
        str(plain), str(tmp_path / "plain"), str(stray), str(tmp_path / "nowhere"), "runs/tiny",
        "sqlite:///mlflow.db", "http://127.0.0.1:5000", "runs:/abc", f"file://{folder}",
    ):  # fmt: skip
        assert not WandbTracker.claims(source), source


def test_every_method_reads_back_from_the_wandb_file(tmp_path: Path) -> None:
    run_key = new_run_key()
    run_dir = tmp_path / "run"
    tracker = WandbTracker(
        {"backend": "wandb", "project": "tests", "tags": {"team": "interp"}}, run_dir=run_dir
    )
    tracker.start(run_key, "addition-2L", "addition", {"spec": "addition.yaml"}, CONFIG)
    tracker.log_params({"seed": 0, "model.n_layers": 2, "run.device": "cpu", "run.n_params": 1234})
    logged = {
        step: {"geometry/rankme/resid_post/L1": step / 10, "behavior/test/exact_match": step / 20}
        for step in (0, 1, 2)
    }
    for step, values in logged.items():
        tracker.log_metrics(values, step)
    # A step measured again, with new values, after a later one: W&B's own step= would drop it.
    replayed = {"geometry/rankme/resid_post/L1": 0.125, "behavior/test/exact_match": 0.0625}
    tracker.log_metrics(replayed, 1)
    tracker.log_metrics(logged[2], 2)  # the same values again: nothing new to send
    tracker.log_table(
        "verdicts",
        ["signal", "precursor", "lead"],
        [["rankme", True, 120], ["probe", False, math.nan], ["stable_rank", None, np.float32(0.25)]],
    )
    tracker.log_table("probes", ["feature", "accuracy"], [["carry", 0.75]], step=2)
    report = tmp_path / "report.html"
    report.write_text("<html>report</html>")
    plot = tmp_path / "rankme.png"
    plot.write_bytes(b"\x89PNG fake")
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "loss.png").write_bytes(b"\x89PNG fake too")
    spec_file = tmp_path / "spec.resolved.yaml"
    spec_file.write_text("seed: 0\n")
    tracker.log_artifact(report, "report")
    tracker.log_artifact(plot, "report")
    tracker.log_artifact(plots)
    tracker.log_artifact(spec_file, None)
    tracker.set_summary({"precursors": 1, "verdict": "rankme leads", "lead": 12.5, "unknown": None})
    tracker.finish("completed")

    offline = the_offline_run(run_dir, run_key)
    assert offline.run is not None
    assert offline.run.run_id == run_key
    assert offline.run.project == "tests"
    assert offline.run.display_name == "addition-2L"
    assert offline.run.run_group == "addition"
    assert offline.run.job_type == "train"
    assert set(offline.run.tags) == {"team=interp", "spec=addition.yaml"}
    assert offline.exit_code == 0

    assert offline.config["seed"] == 0
    assert offline.config["model"] == CONFIG["model"]
    assert offline.config["task"] == CONFIG["task"]
    # Params already in the nested config are not repeated as flat keys; new ones are added.
    assert offline.config["run.device"] == "cpu" and offline.config["run.n_params"] == 1234
    assert set(offline.config) == {"_wandb", "seed", "model", "task", "run.device", "run.n_params"}

    # Every metric is plotted against our own step key, which W&B fills into every row.
    by_glob = {metric.glob_name: metric for metric in offline.metrics if metric.glob_name}
    assert by_glob["*"].step_metric == "step" and by_glob["*"].options.step_sync
    assert any(metric.name == "step" for metric in offline.metrics)
    for key in replayed:
        expected = [(step, values[key]) for step, values in logged.items()] + [(1, replayed[key])]
        assert offline.values_of(key) == expected, key

    (verdicts_row,) = [row for row in offline.history if "tables/verdicts" in row]
    assert offline.table("tables/verdicts", verdicts_row)["columns"] == ["signal", "precursor", "lead"]
    assert offline.table("tables/verdicts", verdicts_row)["data"] == [
        ["rankme", True, 120],
        ["probe", False, None],
        ["stable_rank", None, 0.25],
    ]
    (probes_row,) = [row for row in offline.history if "tables/probes" in row]
    assert probes_row["step"] == 2
    assert offline.table("tables/probes", probes_row)["data"] == [["carry", 0.75]]

    assert offline.summary["precursors"] == 1
    assert offline.summary["verdict"] == "rankme leads"
    assert offline.summary["lead"] == 12.5
    assert "unknown" not in offline.summary

    # One artifact version per name, holding every file logged under it.
    report_artifact = offline.artifact(artifact_name(run_key, "report"))
    assert report_artifact.type == "emergence-run"
    assert manifest_paths(report_artifact) == {"report.html", "rankme.png"}
    assert manifest_paths(offline.artifact(artifact_name(run_key, None))) == {
        "plots/loss.png",
        "spec.resolved.yaml",
    }


def test_a_run_logged_into_through_run_id_is_its_owners(tmp_path: Path) -> None:
    """run_id: the tracker adopts the W&B run a host opened in this process (a Trainer's WandbCallback, a
    WandbLogger), keeps off its step axis and config keys, and leaves ending it to the host."""
    host = wandb.init(mode="offline", dir=str(tmp_path / "host"), project="host", reinit="finish_previous")  # sets wandb.run, as hosts do
    host.define_metric("train/global_step")
    host.define_metric("*", step_metric="train/global_step", step_sync=True)
    host.config.update({"learning_rate": 0.1})
    host.log({"train/loss": 2.0, "train/global_step": 1})
    run_key = new_run_key()
    spec = {**CONFIG, "name": "addition", "run_key": run_key}
    tracker = WandbTracker({"backend": "wandb", "run_id": host.id}, run_dir=tmp_path / "run")
    tracker.start(run_key, "addition-2L", "addition", {"emergence.spec": "addition"}, spec)
    tracker.log_params({"seed": 0, "run.device": "cpu"})
    tracker.log_metrics({"geometry/rankme/L0": 3.5, "train/loss": 2.0}, 1)
    tracker.log_table("verdicts", ["signal", "precursor"], [["rankme", True]])
    tracker.set_summary({"emergence_step/test/exact_match": 1})
    tracker.finish("completed")
    host.log({"train/loss": 1.0, "train/global_step": 2})
    host.finish()
    wandb.teardown()

    assert not (tmp_path / "run" / "wandb").exists()  # no run of our own
    (folder,) = run_folders(tmp_path / "host" / "wandb", host.id)
    offline = read_run_folder(folder)
    assert offline.run is not None and offline.run.project == "host" and offline.run.display_name != "addition-2L"
    assert [row["train/loss"] for row in offline.history if "train/loss" in row] == [2.0, 1.0]  # the host's only
    assert offline.values_of("emergence/geometry/rankme/L0") == [(1, 3.5)]
    assert offline.values_of("emergence/train/loss") == [(1, 2.0)]
    assert offline.config["learning_rate"] == 0.1
    assert offline.config["emergence"] == {**spec, "run.device": "cpu"}
    assert "emergence.spec=addition" in offline.tags
    # The host's "*" is left as it was; our keys are defined against our step by name.
    by_glob = {metric.glob_name: metric.step_metric for metric in offline.metrics if metric.glob_name}
    assert by_glob == {"*": "train/global_step"}
    by_name = {metric.name: metric.step_metric for metric in offline.metrics if metric.name}
    assert by_name["emergence/geometry/rankme/L0"] == "step" and by_name["tables/verdicts"] == "step"
    assert offline.exit_code == 0
    kinds = [record.WhichOneof("record_type") for record, _ in record_ends(run_file_of(folder))]
    last_history = max(i for i, kind in enumerate(kinds) if kind == "history")
    assert kinds.index("exit") > last_history  # the host ended the run, after its last value

    (row,) = WandbTracker.read_runs(str(folder))
    assert row["run_key"] == run_key and row["spec"] == "addition" and row["emergence_step"] == 1
    assert row["verdicts"] == [{"signal": "rankme", "precursor": True}]
    assert WandbTracker.fetch_resolved_spec(str(folder)) == spec


def test_run_id_without_that_run_open_fails_at_start(tmp_path: Path) -> None:
    tracker = WandbTracker({"backend": "wandb", "run_id": "notopen"}, run_dir=tmp_path)
    with pytest.raises(RuntimeError, match="run_id is notopen"):
        tracker.start(new_run_key(), "run", "group", {}, CONFIG)
    assert not (tmp_path / "wandb").exists()


def test_replaying_the_journal_into_the_open_run_adds_nothing(tmp_path: Path) -> None:
    """A tracker that fell behind is caught up with the whole journal, from start() on (the core's
    replay_journal); what W&B already has must not arrive twice."""
    run_key = new_run_key()
    journal = JournalContents(
        values=[
            (step, {"behavior/loss": 1.0 / (step + 1), "geometry/rankme/L0": math.nan}) for step in range(3)
        ],
        tables=[{"table": "probes", "columns": ["feature", "accuracy"], "rows": [["carry", 0.5]], "step": 2}],
    )
    start = TrackerStart(run_key, "run", "group", {}, CONFIG, {"seed": 0, "run.device": "cpu"})
    tracker = WandbTracker({"backend": "wandb", "mode": "offline"}, run_dir=tmp_path)
    replay_journal(tracker, start, journal)  # the run so far, as it was sent live
    replay_journal(tracker, start, journal)  # the catch-up
    tracker.log_metrics({"behavior/loss": 0.2}, 3)
    tracker.finish("completed")

    offline = the_offline_run(tmp_path, run_key)
    assert offline.values_of("behavior/loss") == [(0, 1.0), (1, 0.5), (2, 1 / 3), (3, 0.2)]
    assert [step for step, _ in offline.values_of("geometry/rankme/L0")] == [0, 1, 2]
    assert len([row for row in offline.history if "tables/probes" in row]) == 1
    assert offline.config["run.device"] == "cpu"


def test_a_resumed_run_continues_under_the_same_id(tmp_path: Path) -> None:
    """A run resumed in a new process starts a new tracker: its steps go in even where W&B had later
    ones. Offline, each process writes its own offline-run directory for the same run id."""
    run_key = new_run_key()
    first = WandbTracker({"backend": "wandb", "mode": "offline"}, run_dir=tmp_path)
    first.start(run_key, "run", "group", {}, CONFIG)
    for step in (0, 10, 20):
        first.log_metrics({"behavior/loss": 1.0 / (step + 1)}, step)
    first.finish("interrupted")

    resumed = WandbTracker({"backend": "wandb", "mode": "offline"}, run_dir=tmp_path)
    resumed.start(run_key, "run", "group", {}, CONFIG)
    for step in (10, 20, 30):  # from the checkpoint at step 10
        resumed.log_metrics({"behavior/loss": 1.0 / (step + 1)}, step)
    resumed.finish("completed")

    wandb.teardown()
    folders = run_folders(tmp_path / "wandb", run_key)
    assert len(folders) == 2
    runs = [read_run_folder(folder) for folder in folders]
    assert all(offline.run is not None and offline.run.run_id == run_key for offline in runs)
    assert [offline.exit_code for offline in runs] == [1, 0]
    assert [step for step, _ in runs[1].values_of("behavior/loss")] == [10, 20, 30]

    # Read as one run: both folders, oldest first; the newest process says how the run ended.
    whole = read_run(tmp_path / "wandb", run_key)
    assert whole.folders == folders and whole.exit_code == 0
    assert [step for step, _ in whole.values_of("behavior/loss")] == [0, 10, 20, 10, 20, 30]
    # Either folder stands for the whole run.
    (row,) = WandbTracker.read_runs(str(folders[0]))
    assert row["run_key"] == run_key and row["state"] == "completed" and row["seed"] == 0


@pytest.mark.parametrize("status", ["failed", "interrupted"])
def test_finish_marks_the_run_failed(tmp_path: Path, status: str) -> None:
    run_key = new_run_key()
    tracker = WandbTracker({"backend": "wandb", "mode": "offline"}, run_dir=tmp_path)
    tracker.start(run_key, "run", "group", {}, {})
    with pytest.raises(ValueError, match="unknown run status"):
        tracker.finish("done")
    tracker.finish(status)
    assert the_offline_run(tmp_path, run_key).exit_code == 1


def test_disabled_mode_writes_nothing(tmp_path: Path) -> None:
    tracker = WandbTracker({"backend": "wandb", "mode": "disabled"}, run_dir=tmp_path)
    tracker.start(new_run_key(), "run", "group", {}, CONFIG)
    tracker.log_params({"run.device": "cpu"})
    tracker.log_metrics({"behavior/loss": 1.0}, 0)
    tracker.log_table("verdicts", ["signal"], [["rankme"]])
    tracker.set_summary({"precursors": 0})
    tracker.finish("completed")
    assert not list(tmp_path.rglob("*.wandb"))


def test_mode_comes_from_spec_then_environment_then_credentials(tmp_path: Path) -> None:
    no_netrc = {"NETRC": str(tmp_path / "absent")}
    assert (
        resolve_mode("disabled", {**no_netrc, "WANDB_MODE": "online", "WANDB_API_KEY": "k"}).mode
        == "disabled"
    )
    assert resolve_mode(None, {**no_netrc, "WANDB_MODE": "offline", "WANDB_API_KEY": "k"}).mode == "offline"
    assert resolve_mode(None, {**no_netrc, "WANDB_MODE": "dryrun"}).mode == "offline"
    assert resolve_mode(None, {**no_netrc, "WANDB_API_KEY": "k"}) == (
        "online",
        "W&B credentials were found",
        True,
    )
    fallback = resolve_mode(None, no_netrc)
    assert fallback.mode == "offline" and fallback.guessed

    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    assert has_credentials({"NETRC": str(netrc)})
    assert resolve_mode(None, {"NETRC": str(netrc)}).mode == "online"
    # A self-hosted server needs its own entry; the cloud one does not log in there.
    assert not has_credentials({"NETRC": str(netrc), "WANDB_BASE_URL": "https://wandb.example.org"})
    netrc.write_text("machine wandb.example.org login user password secret\n")
    assert has_credentials({"NETRC": str(netrc), "WANDB_BASE_URL": "https://wandb.example.org"})
    assert not has_credentials({"NETRC": str(netrc)})


def test_without_credentials_the_run_goes_offline_and_says_how_to_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("WANDB_MODE")
    run_key = new_run_key()
    tracker = WandbTracker({"backend": "wandb"}, run_dir=tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="emergence_wandb.tracker"):
        tracker.start(run_key, "run", "group", {}, {})
    tracker.log_metrics({"behavior/loss": 0.5}, 0)
    tracker.finish("completed")
    assert tracker.mode == "offline"
    offline = the_offline_run(tmp_path / "run", run_key)
    assert f"wandb sync {offline.sync_dir}" in caplog.text
    assert offline.values_of("behavior/loss") == [(0, 0.5)]


def test_online_without_credentials_fails_at_once_instead_of_prompting(tmp_path: Path) -> None:
    tracker = WandbTracker({"backend": "wandb", "mode": "online"}, run_dir=tmp_path)
    fanout = TrackerFanout([("wandb", tracker)])
    fanout.start(new_run_key(), "run", "group", {}, CONFIG)
    assert "wandb login" in fanout.failed["wandb"]
    assert not list(tmp_path.rglob("*.wandb"))


def test_an_offline_run_contacts_no_server(tmp_path: Path, offline_wandb: Path) -> None:
    """wandb 0.31 sends telemetry to its server at exit unless the *process* is offline, even when the
    run is; the tracker makes it so. Only a fresh process shows this, since it happens at exit."""
    lookups = tmp_path / "lookups.txt"
    script = textwrap.dedent(
        f"""
        import os, socket
        from pathlib import Path

        real_getaddrinfo = socket.getaddrinfo

        def recording_getaddrinfo(host, *args, **kwargs):
            with open({str(lookups)!r}, "a") as out:
                out.write(f"{{host}}\\n")
            return real_getaddrinfo(host, *args, **kwargs)

        socket.getaddrinfo = recording_getaddrinfo
        os.environ.pop("WANDB_MODE")
        from emergence_wandb import WandbTracker

        tracker = WandbTracker({{"backend": "wandb", "mode": "offline"}}, run_dir=Path({str(tmp_path / "run")!r}))
        tracker.start("nonetwork01", "run", "group", {{}}, {{"seed": 0}})
        tracker.log_metrics({{"behavior/loss": 0.5}}, 0)
        tracker.finish("completed")
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert the_offline_run(tmp_path / "run", "nonetwork01").exit_code == 0
    assert not lookups.exists() or lookups.read_text() == ""


def test_tiny_run_lands_in_an_offline_wandb_run(tiny_raw: dict, write_spec: Any) -> None:
    tiny_raw["tracking"] = [{"backend": "wandb", "mode": "offline", "project": "e2e"}]
    (run_spec,) = resolve(str(write_spec(tiny_raw)), [])
    outcome = run_one(run_spec)
    assert outcome.state == "completed", outcome.reason
    run_dir = run_directory(run_spec)
    assert "trackers_behind" not in read_status(run_dir)
    offline = the_offline_run(run_dir, run_spec.run_key)

    assert offline.run is not None and offline.run.run_id == run_spec.run_key
    assert offline.run.project == "e2e" and offline.run.run_group == "tiny"
    assert "emergence.spec=tiny" in offline.run.tags and "emergence.task=binary_addition" in offline.run.tags
    assert offline.exit_code == 0
    assert offline.config["run_key"] == run_spec.run_key
    assert offline.config["task"]["name"] == "binary_addition"
    assert offline.config["model"]["d_model"] == 32
    assert offline.config["training"]["optimizer"]["lr"] == 0.003
    assert offline.config["run.device"] == "cpu" and offline.config["run.n_params"] > 0

    journal = read_journal(run_dir)
    expected: dict[str, dict[int, float]] = {}
    for step, values in journal.values:
        for key, value in values.items():
            expected.setdefault(key, {})[step] = value
    assert len(expected) > 20
    for key, by_step in expected.items():
        logged = offline.values_of(key)
        assert [step for step, _ in logged] == list(by_step), key  # every value once, in step order
        for step, value in logged:
            assert value == pytest.approx(by_step[step], rel=1e-6, abs=1e-9, nan_ok=True), (key, step)

    verdicts = [v for v in json.loads((run_dir / "verdicts.json").read_text()) if v["kind"] == "signal"]
    (verdicts_row,) = [row for row in offline.history if "tables/verdicts" in row]
    table = offline.table("tables/verdicts", verdicts_row)
    assert [row[table["columns"].index("verdict")] for row in table["data"]] == [
        v["verdict"] for v in verdicts
    ]
    counts: dict[str, int] = {}
    for verdict in verdicts:
        counts[verdict["verdict"]] = counts.get(verdict["verdict"], 0) + 1
    assert {key: offline.summary[f"verdicts/{key}"] for key in counts} == counts

    assert {"report.html", "behavior.png"} <= manifest_paths(
        offline.artifact(artifact_name(run_spec.run_key, "report"))
    )
    assert manifest_paths(offline.artifact(artifact_name(run_spec.run_key, None))) == {"spec.resolved.yaml", "journal.jsonl"}


# -- reading runs back: `emergence compare wandb:PATH` and `emergence run --from-run` --------------------


def test_read_runs_reads_verdict_tables_summary_state_and_tags(tmp_path: Path) -> None:
    run_key = new_run_key()
    config = {"run_key": run_key, "name": "addition", "seed": 3, **{k: v for k, v in CONFIG.items() if k != "seed"}}
    config["task"] = {"name": "addition", "level": 2}
    tracker = WandbTracker({"backend": "wandb", "tags": {"team": "interp"}}, run_dir=tmp_path / "run")
    tracker.start(run_key, "run", "addition", {"emergence.spec": "addition"}, config)
    tracker.log_params({"run.device": "cpu", "run.n_params": 1234})
    columns = ["kind", "signal", "verdict", "lead_steps"]
    tracker.log_table("verdicts", columns, [["signal", "llc/mean", "lagging", -10]])
    # Analysed again (a resumed run): the latest table holds the run's verdicts.
    tracker.log_table("verdicts", columns, [["signal", "llc/mean", "precursor", 120], ["signal", "rankme", "no_signal", None]])
    tracker.log_table("feature_verdicts", ["kind", "feature", "verdict", "lead_steps"], [["feature", "carry", "quiet", 650]])
    tracker.log_table("probes", ["feature", "accuracy"], [["carry", 0.75]], step=2)  # not a verdict table
    # The first emergence step set is the first event's (not the first in sorted order).
    tracker.set_summary({"emergence_step/behavior/z_first": 40, "emergence_step/behavior/a_second": -1})
    tracker.finish("failed")
    wandb.teardown()

    (row,) = WandbTracker.read_runs(str(tmp_path))
    assert tuple(row) == (*RUN_RECORD_FIELDS, "ref")
    assert WandbTracker.read_runs(str(tmp_path), "emergence") == [row]  # an experiment is a W&B project
    assert WandbTracker.fetch_resolved_spec(row.pop("ref")) == config  # a record's ref fetches its spec
    with pytest.raises(LookupError, match="no W&B run of project 'another'"):
        WandbTracker.read_runs(str(tmp_path), "another")
    assert row == {
        "run_key": run_key,
        "spec": "addition",
        "task": "addition",
        "level": 2,
        "n_layers": 2,
        "d_model": 64,
        "n_params": 1234,
        "seed": 3,
        "state": "failed",
        "emergence_step": 40,
        "tags": {"team": "interp", "emergence.spec": "addition"},
        "verdicts": [
            {"kind": "signal", "signal": "llc/mean", "verdict": "precursor", "lead_steps": 120},
            {"kind": "signal", "signal": "rankme", "verdict": "no_signal", "lead_steps": None},
            {"kind": "feature", "feature": "carry", "verdict": "quiet", "lead_steps": 650},
        ],
    }
    columns = cells(RunResult(**row))
    assert columns["llc/mean"] == "precursor (120)" and columns["feature/carry"] == "quiet (650)"
    assert WandbTracker.fetch_resolved_spec(str(tmp_path / "run")) == config

    # A run whose last record is cut off (still being written, or its process killed) has no exit
    # record: it reads as running, and the cut-off record is left out.
    (folder,) = run_folders(tmp_path / "run" / "wandb", run_key)
    copy = tmp_path / "copy" / "wandb" / folder.name
    shutil.copytree(folder, copy)
    wandb_file = copy / f"run-{run_key}.wandb"
    ends = [0] + [end for _, end in record_ends(wandb_file)]
    kinds = [record.WhichOneof("record_type") for record, _ in record_ends(wandb_file)]
    exit_start = ends[kinds.index("exit")]
    with wandb_file.open("r+b") as handle:
        handle.truncate(exit_start + 8)  # the exit record's chunk header and one byte of it
    (running,) = WandbTracker.read_runs(str(copy))
    assert running["state"] == "running" and running["verdicts"] == row["verdicts"]


def test_reading_back_names_what_is_missing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LookupError, match="no W&B run folder"):
        WandbTracker.read_runs(str(empty))
    with pytest.raises(FileNotFoundError):
        WandbTracker.read_runs(str(tmp_path / "nowhere"))
    with pytest.raises(LookupError):  # what the core's RunReader protocol asks for, too
        WandbTracker.fetch_resolved_spec(str(tmp_path / "nowhere"))
    for _ in range(2):
        tracker = WandbTracker({"backend": "wandb"}, run_dir=tmp_path / "two")
        tracker.start(new_run_key(), "run", "group", {}, {})
        tracker.finish("completed")
    wandb.teardown()
    with pytest.raises(LookupError, match="give the run folder of one"):
        WandbTracker.fetch_resolved_spec(str(tmp_path / "two"))
    (one, _) = sorted((tmp_path / "two" / "wandb").glob("offline-run-*"))
    with pytest.raises(LookupError, match="no emergence spec"):
        WandbTracker.fetch_resolved_spec(str(one))
    runner = CliRunner()
    result = runner.invoke(app, ["compare", f"wandb:{empty}"])
    assert result.exit_code == 2 and "no W&B run folder" in result.output
    assert len(json.loads(runner.invoke(app, ["compare", f"wandb:{tmp_path / 'two'}", "--format", "json"]).stdout)) == 2
    # A folder of W&B runs and no run directories is W&B's without naming it.
    assert len(json.loads(runner.invoke(app, ["compare", str(tmp_path / "two"), "--format", "json"]).stdout)) == 2


def test_compare_and_from_run_read_the_offline_run_back(tiny_raw: dict, write_spec: Any, tmp_path: Path) -> None:
    """A real run, read back from its W&B run folder alone: the same row as its run directory gives, and
    the same spec, so that `--from-run` finds the same (completed) run."""
    tiny_raw["tracking"] = [{"backend": "wandb", "mode": "offline", "project": "e2e"}]
    (run_spec,) = resolve(str(write_spec(tiny_raw)), [])
    assert run_one(run_spec).state == "completed"
    wandb.teardown()
    run_dir = run_directory(run_spec)
    (folder,) = run_folders(run_dir / "wandb", run_spec.run_key)

    runner = CliRunner()

    def compare(*args: str) -> list[dict[str, Any]]:
        result = runner.invoke(app, ["compare", *args, "--format", "json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    (from_dir,) = compare(str(run_dir))
    (from_wandb,) = compare(f"wandb:{run_dir}")
    verdict_columns = set(from_dir) - set(FIXED_COLUMNS)
    assert len(verdict_columns) > 5 and verdict_columns == set(from_wandb) - set(FIXED_COLUMNS)
    for column in ("run_key", "spec", "task", "seed", "emergence_step", *sorted(verdict_columns)):
        assert from_wandb[column] == from_dir[column], column
    assert from_wandb == from_dir  # the other columns too: level, model size, n_params, state
    assert compare(f"wandb:{folder}") == [from_dir]
    assert compare(str(folder)) == [from_dir]  # a W&B run folder is W&B's without naming it
    assert compare(f"wandb:{tmp_path / 'runs'}") == [from_dir]
    assert compare(str(run_dir), f"wandb:{folder}") == [from_dir, from_dir]

    again = runner.invoke(app, ["run", "--from-run", str(folder), "--quiet"])
    assert again.exit_code == 0, again.output
    assert f"skipped {run_dir}" in again.output.replace("\n", "")  # the same run key: already completed
    # A run directory with only its wandb/ folder (no spec.resolved.yaml) is read through W&B too.
    bare = tmp_path / "bare"
    shutil.copytree(run_dir / "wandb", bare / "wandb", symlinks=True)
    assert WandbTracker.claims(str(bare))

    def spec_from_wandb(ref: Path) -> dict[str, Any]:
        return spec_fields(WandbTracker.fetch_resolved_spec(str(ref)))

    assert spec_from_wandb(bare) == spec_from_wandb(folder) == spec_fields(read_resolved(run_dir))


def test_a_sweep_summary_is_a_wandb_run_of_its_own_in_the_sweeps_group(tiny_raw: dict, write_spec: Any) -> None:
    """The runs of a grid share their group; after the last one the sweep summary is one more W&B run
    (id sweep-<key>, job type sweep) with the summary values, tables and report, and `compare` leaves it out."""
    from emergence.orchestrate import execute, sweep_directory

    tiny_raw["grid"] = {"seed": [0, 1]}
    tiny_raw["training"]["steps"] = 20
    tiny_raw["tracking"] = [{"backend": "wandb", "mode": "offline", "project": "e2e-sweep"}]
    runs = resolve(str(write_spec(tiny_raw)), [])
    assert [o.state for o in execute(runs)] == ["completed", "completed"]
    wandb.teardown()

    sweep_id = f"sweep-{runs[0].sweep_key}"
    (folder,) = run_folders(sweep_directory(runs) / "wandb", sweep_id)
    summary_run = read_run_folder(folder)
    assert summary_run.run is not None and summary_run.exit_code == 0
    assert (summary_run.run.run_id, summary_run.run.job_type, summary_run.run.run_group) == (sweep_id, "sweep", "tiny")
    assert summary_run.summary["runs/completed"] == 2
    tables = {entry.name for entry in summary_run.tables}
    assert "sweep_runs" in tables, tables
    (runs_table,) = [entry for entry in summary_run.tables if entry.name == "sweep_runs"]
    assert {row[runs_table.columns.index("run_key")] for row in runs_table.rows} == {r.run_key for r in runs}
    report = summary_run.artifact(artifact_name(sweep_id, "sweep"))
    assert {"report.html", "sweep.json"} <= manifest_paths(report)

    result = CliRunner().invoke(app, ["compare", f"wandb:{run_directory(runs[0]).parent}", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert sorted(row["run_key"] for row in json.loads(result.stdout)) == sorted(r.run_key for r in runs)
