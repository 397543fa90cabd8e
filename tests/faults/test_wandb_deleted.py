"""The W&B offline directory deleted in the middle of a run (``rm -rf runs/.../wandb`` while it trains).

Offline, W&B appends the whole run to one record file, ``run-<id>.wandb``. Before the fix, a deleted one was
written on (unlinked) without a word: the run ended ``completed``, no tracker behind, and nothing of it left in
W&B's files, while the log still said ``wandb sync <the deleted folder>``. Now the tracker notices the file is
gone, the run counts it behind, and its catch-up starts the W&B run again (same id, a new folder) and replays
the journal into it. Training never stops; the new folder holds the whole run: every value the reference run
journaled, once, its tables, summary and artifacts, and a clean exit.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from emergence.numbers import json_safe
from emergence.rundir import run_directory
from emergence.spec import resolve
from emergence.tracking import tracker_summary
from tests.faults.harness import (
    SPEC_NAME,
    assert_history_is_the_journals,
    assert_matches_reference,
    events,
    fault_spec,
    read_json,
    record_fault,
    records,
    run_here,
    status_of,
    write_spec,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DELETE_AT = 15  # after the measurement at step 15: values and a checkpoint already in W&B's file


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Offline W&B with its own files in tmp_path and no login of the developer's."""
    home = tmp_path / "wandb-home"
    home.mkdir()
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(home / name.lower()))
    monkeypatch.setenv("NETRC", str(home / "netrc"))  # absent
    yield home
    import wandb

    wandb.teardown()


def test_wandb_offline_directory_deleted_mid_run_is_written_again_whole(tmp_path, reference, offline_wandb):
    import wandb
    from emergence_wandb.records import read_run, run_folders
    from emergence_wandb.tracker import artifact_name

    tracking = [{"backend": "wandb", "mode": "offline", "project": SPEC_NAME}]
    (run_spec,) = resolve(str(write_spec(tmp_path / "spec.yaml", fault_spec(tmp_path / "runs", tracking))), [])
    run_dir = run_directory(run_spec)
    deleted: list[list[Path]] = []

    def delete_wandb_files(result, values):
        if result.step == DELETE_AT and values:
            deleted.append(run_folders(run_dir / "wandb", run_spec.run_key))
            shutil.rmtree(run_dir / "wandb")

    outcome = run_here(run_spec, delete_wandb_files)
    wandb.teardown()  # every record written and closed before it is read

    assert outcome.state == "completed", outcome.reason
    assert len(deleted) == 1 and len(deleted[0]) == 1, "the run's W&B folder existed when it was deleted"
    status = status_of(run_dir)
    assert "trackers_behind" not in status, status
    (caught_up,) = events(run_dir, "tracker_caught_up")
    assert caught_up["tracker"] == "wandb"
    assert_matches_reference(run_dir, reference.run_dir)

    # The W&B run as `wandb sync` would upload it: one folder (the deleted one gone), the whole run in it.
    (folder,) = run_folders(run_dir / "wandb", run_spec.run_key)
    assert folder != deleted[0][0]
    offline = read_run(run_dir / "wandb", run_spec.run_key)
    assert offline.run is not None and offline.run.run_id == run_spec.run_key and offline.exit_code == 0
    history = {key: offline.values_of(key) for row in offline.history for key in row if "/" in key and not key.startswith("tables/")}
    lost, duplicated = assert_history_is_the_journals(history, reference.run_dir)
    tables = [r for r in records(reference.run_dir) if "table" in r]
    assert tables, "the reference journaled its verdict tables"
    for table in tables:
        # A table logged without a step gets the last one in W&B (step_sync fills our step key in).
        found = [entry for entry in offline.tables_named(table["table"]) if table["step"] in (None, entry.step)]
        assert len(found) == 1, (table["table"], table["step"], len(found))
        assert found[0].columns == table["columns"]
        assert found[0].rows == [[json_safe(cell) for cell in row] for row in table["rows"]]
    summary = tracker_summary(read_json(reference.run_dir / "analysis.json"))
    assert {key: offline.summary.get(key) for key in summary} == summary
    assert offline.config["run.torch_threads"] == 1 and offline.config["run_key"] == run_spec.run_key
    assert {"report.html"} <= {entry.path for entry in offline.artifact(artifact_name(run_spec.run_key, "report")).manifest.contents}
    record_fault("W&B offline run directory deleted mid-run", 1, 1, lost, duplicated, None)
