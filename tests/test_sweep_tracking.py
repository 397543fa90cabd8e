"""The sweep's parent run in its trackers: what ``finish_sweep_trackers`` records in the sweep directory when a
tracker cannot show the sweep, and what a later sync (``only`` some trackers) keeps of that. The trackers here
are stand-ins that record their calls; ``tests/faults/test_mlflow_server_sweep.py`` is the same with a real
MLflow server taken away."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from emergence import sweep_tracking
from emergence.spec import resolve
from emergence.spec.grid import RunSpec
from emergence.tracking import SweepSummary

CALLS: list[tuple[str, str]] = []


class Showing:
    @classmethod
    def prepare_sweep(cls, options: Mapping[str, Any], sweep_key: str, name: str, run_keys: Sequence[str]) -> None:
        CALLS.append((options["backend"], "prepare"))

    @classmethod
    def finish_sweep(cls, options: Mapping[str, Any], sweep_key: str, status: str, summary: SweepSummary | None = None) -> None:
        CALLS.append((options["backend"], f"finish {status} {sorted(summary.values) if summary else None}"))


class Away(Showing):
    @classmethod
    def finish_sweep(cls, options: Mapping[str, Any], sweep_key: str, status: str, summary: SweepSummary | None = None) -> None:
        raise ConnectionError("server at 127.0.0.1:9 refused the connection")


@pytest.fixture
def first(monkeypatch: pytest.MonkeyPatch) -> RunSpec:
    CALLS.clear()
    monkeypatch.setattr(sweep_tracking, "sweep_trackers", lambda _first: [(Showing, {"backend": "up"}), (Away, {"backend": "down"})])
    return resolve(Path(__file__).parent.parent / "specs" / "tiny.yaml", ["grid.seed=[0,1]"])[0]


def status(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "status.json").read_text(encoding="utf-8"))


def test_a_tracker_away_at_the_sweeps_end_is_listed_behind_with_the_command(first, tmp_path, caplog):
    summary = {"counts": {"runs": 2, "completed": 2}}
    with caplog.at_level(logging.WARNING):
        behind = sweep_tracking.finish_sweep_trackers(first, ["a", "b"], tmp_path, "completed", summary, [], prepare=["up"])
    assert list(behind) == ["down"] and "refused the connection" in behind["down"]
    assert status(tmp_path) == {"state": "completed", "trackers_behind": behind}
    assert CALLS == [("up", "prepare"), ("up", "finish completed ['runs/completed', 'runs/runs']")]
    assert f"emergence sync {tmp_path}" in caplog.text


def test_a_sync_of_some_trackers_keeps_the_others_behind(first, tmp_path):
    (tmp_path / "status.json").write_text(json.dumps({"state": "failed", "trackers_behind": {"up": "was away", "down": "was away"}}))
    behind = sweep_tracking.finish_sweep_trackers(first, ["a", "b"], tmp_path, "failed", None, [], only=["up"])
    assert behind == {"down": "was away"}  # not tried now: still behind; "up" showed the sweep
    assert status(tmp_path) == {"state": "failed", "trackers_behind": {"down": "was away"}}
    assert CALLS == [("up", "finish failed None")]


def test_a_sweep_whose_trackers_all_showed_it_has_nothing_behind(first, tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_tracking, "sweep_trackers", lambda _first: [(Showing, {"backend": "up"})])
    (tmp_path / "status.json").write_text(json.dumps({"state": "completed", "trackers_behind": {"up": "was away"}}))
    assert sweep_tracking.finish_sweep_trackers(first, ["a", "b"], tmp_path, "completed", None, []) == {}
    assert status(tmp_path) == {"state": "completed"}
