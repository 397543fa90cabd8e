"""The W&B tracker against real offline W&B runs, read back from the ``run-<id>.wandb`` files they write.

There is no W&B server here, and ``wandb.Api`` needs one. What an offline run holds is its record log:
the same protobuf records that ``wandb sync`` uploads later, so reading them back shows exactly what
the W&B server would receive.
"""

from __future__ import annotations

import json
import logging
import math
import struct
import subprocess
import sys
import textwrap
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wandb
from emergence_wandb import WandbTracker
from emergence_wandb.tracker import artifact_name, has_credentials, resolve_mode
from wandb.proto import wandb_internal_pb2 as pb

from emergence import registry
from emergence.record import JournalContents, read_journal, read_status
from emergence.run import TrackerStart, run_directory, run_one
from emergence.spec import resolve
from emergence.sync import replay_journal
from emergence.tracking import TrackerFanout

pytestmark = pytest.mark.integration

CONFIG = {"seed": 0, "model": {"n_layers": 2, "d_model": 64}, "task": {"name": "addition", "digits": 3}}

# The record log W&B writes (LevelDB's log format with its own file header): a 7-byte header
# ":W&B", 0xBEE1 little-endian, version 0; then 32 KiB blocks of chunks, each with a 7-byte header
# (CRC-32 of the type byte and payload, payload length, type) and a payload. A record too long for the
# rest of its block is split into first/middle/last chunks; a block tail under 7 bytes is padding.
FILE_HEADER = struct.Struct("<4sHB")
CHUNK_HEADER = struct.Struct("<IHB")
BLOCK_SIZE = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> Iterator[pb.Record]:
    data = path.read_bytes()
    ident, magic, version = FILE_HEADER.unpack_from(data)
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), f"{path} is not a W&B record log"
    offset, pieces = FILE_HEADER.size, []
    while offset + CHUNK_HEADER.size <= len(data):
        left_in_block = BLOCK_SIZE - offset % BLOCK_SIZE
        if left_in_block < CHUNK_HEADER.size:
            offset += left_in_block
            continue
        checksum, length, kind = CHUNK_HEADER.unpack_from(data, offset)
        payload = data[offset + CHUNK_HEADER.size : offset + CHUNK_HEADER.size + length]
        offset += CHUNK_HEADER.size + length
        if kind == 0 and length == 0:
            continue  # zero fill at a block's end
        assert zlib.crc32(bytes([kind]) + payload) == checksum, f"corrupt chunk in {path}"
        if kind in (FULL, FIRST):
            pieces = [payload]
        else:
            pieces.append(payload)
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(b"".join(pieces))
            yield record


def item_path(item: Any) -> tuple[str, ...]:
    return tuple(item.nested_key) or (item.key,)


def put(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value


def drop(target: dict[str, Any], path: tuple[str, ...]) -> None:
    for part in path[:-1]:
        target = target.get(part, {})
    target.pop(path[-1], None)


@dataclass
class OfflineRun:
    """What one ``run-<id>.wandb`` file says about its run."""

    sync_dir: Path
    run: pb.RunRecord | None = None
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: list[pb.MetricRecord] = field(default_factory=list)
    artifacts: list[pb.ArtifactRecord] = field(default_factory=list)
    exit_code: int | None = None

    def apply_config(self, record: pb.ConfigRecord) -> None:
        for item in record.update:
            put(self.config, item_path(item), json.loads(item.value_json))
        for item in record.remove:
            drop(self.config, item_path(item))

    def values_of(self, key: str) -> list[tuple[int, Any]]:
        """(our step key, value) for every history row that holds ``key``, in logging order."""
        return [(row["step"], row[key]) for row in self.history if key in row]

    def table(self, key: str, row: dict[str, Any]) -> dict[str, Any]:
        """The table a history row refers to, from the file W&B wrote into the run's files."""
        reference = row[key]
        assert reference["_type"] == "table-file"
        return json.loads((self.sync_dir / "files" / reference["path"]).read_text())

    def artifact(self, name: str) -> pb.ArtifactRecord:
        (found,) = [artifact for artifact in self.artifacts if artifact.name == name]
        return found


def read_offline_run(wandb_file: Path) -> OfflineRun:
    offline = OfflineRun(sync_dir=wandb_file.parent)
    for record in read_records(wandb_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            offline.run = record.run
            offline.apply_config(record.run.config)
        elif kind == "config":
            offline.apply_config(record.config)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                put(row, item_path(item), json.loads(item.value_json))
            offline.history.append(row)
        elif kind == "summary":
            for item in record.summary.update:
                put(offline.summary, item_path(item), json.loads(item.value_json))
            for item in record.summary.remove:
                drop(offline.summary, item_path(item))
        elif kind == "metric":
            offline.metrics.append(record.metric)
        elif kind == "artifact":
            offline.artifacts.append(record.artifact)
        elif kind == "exit":
            offline.exit_code = record.exit.exit_code
    return offline


def offline_run_files(run_dir: Path, run_key: str) -> list[Path]:
    """Oldest first. W&B names the directory by the second the run started and appends "-1", "-2" when
    a run with the same id already started in that second."""
    return sorted(run_dir.glob(f"wandb/offline-run-*-{run_key}*/run-{run_key}.wandb"))


def the_offline_run(run_dir: Path, run_key: str) -> OfflineRun:
    # run.finish() only asks wandb-core to close the run's file, without waiting, and the last records
    # can still sit in its write buffer when finish returns; teardown waits until every file is closed.
    wandb.teardown()
    (wandb_file,) = offline_run_files(run_dir, run_key)
    return read_offline_run(wandb_file)


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
    files = offline_run_files(tmp_path, run_key)
    assert len(files) == 2
    runs = [read_offline_run(path) for path in files]
    assert all(offline.run is not None and offline.run.run_id == run_key for offline in runs)
    assert [offline.exit_code for offline in runs] == [1, 0]
    assert [step for step, _ in runs[1].values_of("behavior/loss")] == [10, 20, 30]


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
    assert manifest_paths(offline.artifact(artifact_name(run_spec.run_key, None))) == {"spec.resolved.yaml"}
