"""Bring trackers up to date from a run directory: the journal is the record, a tracker is a view of it.

A running run uses :func:`replay_journal` to catch up a tracker that fell behind (a server that went away
and came back); ``emergence sync RUN_DIR`` uses :func:`sync_run` afterwards, for a run whose tracker never
came back, or to send an old run to a new tracker. Replays are only as idempotent as the tracker: the
MLflow tracker skips every value, param and tag it already holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from emergence.record import (
    ANALYSIS_FILE,
    SPEC_FILE,
    JournalContents,
    read_journal,
    read_status,
    write_status,
)
from emergence.spec.grid import RunSpec
from emergence.spec.identity import run_key
from emergence.spec.schema import Spec
from emergence.tracking import Tracker, build_trackers

if TYPE_CHECKING:
    from emergence.run import TrackerStart

REPORT_FILE = "report.html"
JOURNAL_FILE = "journal.jsonl"


def replay_journal(tracker: Tracker, start: TrackerStart, journal: JournalContents) -> None:
    """Start (or reattach) ``tracker`` and send it every param, value and table in ``journal``."""
    tracker.start(*start.arguments)
    tracker.log_params(start.params)
    for step, values in journal.values:
        tracker.log_metrics(values, step)
    for table in journal.tables:
        tracker.log_table(table["table"], table["columns"], table["rows"], table.get("step"))


def run_spec_of(run_dir: Path) -> RunSpec:
    """The run's spec, from its ``spec.resolved.yaml``; refuses a file whose run key does not match it."""
    path = Path(run_dir) / SPEC_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no resolved spec; is {run_dir} a run directory?")
    resolved = yaml.safe_load(path.read_text(encoding="utf-8"))
    spec = Spec.model_validate({k: v for k, v in resolved.items() if k in Spec.model_fields})
    key = resolved.get("run_key") or run_key(spec)
    return RunSpec(
        spec=spec, run_key=key, source=str(path), grid_point=resolved.get("grid_point") or {}, sweep_key=resolved.get("sweep_key")
    )


@dataclass
class SyncResult:
    run_dir: Path
    synced: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def tracker_status_of(status: dict[str, Any] | None) -> str | None:
    """The status to finish tracker runs with, or None for a run that has not ended."""
    state = (status or {}).get("state")
    if state == "completed":
        return "completed"
    if state == "failed":
        return "interrupted" if str((status or {}).get("reason", "")).startswith("interrupted") else "failed"
    return None


def sync_run(run_dir: Path, only: list[str] | None = None) -> SyncResult:
    """Replay a run directory into its spec's trackers (or ``only`` those backends): start or reattach,
    params, every journal value and table, summary, report and spec, and the final status."""
    from emergence.run import (  # emergence.run imports the measures: keep this light
        TrackerStart,
        tracker_summary,
    )

    run_dir = Path(run_dir)
    run_spec = run_spec_of(run_dir)
    journal = read_journal(run_dir)
    status = read_status(run_dir)
    started = [e for e in journal.events if e.get("event") == "start"]
    last_start = started[-1] if started else {}
    start = TrackerStart.of(run_spec, str(last_start.get("device", "unknown")), int(last_start.get("n_params", 0)))
    options = [t.model_dump() for t in run_spec.spec.tracking if only is None or t.backend in only]
    built, broken = build_trackers(options, run_dir)
    result = SyncResult(run_dir, failed=dict(broken))
    analysis_path = run_dir / ANALYSIS_FILE
    analysis = json.loads(analysis_path.read_text(encoding="utf-8")) if analysis_path.exists() else None
    final = tracker_status_of(status)
    for name, tracker in built:
        try:
            replay_journal(tracker, start, journal)
            if analysis:
                tracker.set_summary(tracker_summary(analysis))
            if (run_dir / REPORT_FILE).exists():
                tracker.log_artifact(run_dir / REPORT_FILE, "report")
                for png in sorted(run_dir.glob("*.png")):
                    tracker.log_artifact(png, "report")
            tracker.log_artifact(run_dir / SPEC_FILE, None)
            tracker.log_artifact(run_dir / JOURNAL_FILE, None)
            if final is not None:
                tracker.finish(final)
        except Exception as error:  # noqa: BLE001 - report it; the journal still holds everything
            result.failed[name] = f"{type(error).__name__}: {error}"
            continue
        result.synced.append(name)
    if status is not None and result.synced:
        behind = {k: v for k, v in (status.get("trackers_behind") or {}).items() if k not in result.synced}
        details = {k: v for k, v in status.items() if k not in ("state", "trackers_behind", "updated")}
        if behind:
            details["trackers_behind"] = behind
        write_status(run_dir, status["state"], **details)
    return result
