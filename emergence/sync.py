"""``emergence sync RUN_DIR``: bring trackers up to date from a run directory, afterwards; ``emergence sync
SWEEP_DIR`` does it for each run of a sweep and then finishes the sweep's parent run from ``sweep.json``.

The journal is the record, a tracker is a view of it. A running run catches up a tracker that fell
behind by itself (``tracking.replay_journal``); this is for a run whose tracker never came back, or to send
an old run to a new tracker. Replays are only as idempotent as the tracker: the MLflow tracker skips every
value, param and tag it already holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emergence.record import read_journal
from emergence.rundir import (
    JOURNAL_FILE,
    REPORT_FILE,
    SPEC_FILE,
    read_analysis,
    read_run_spec,
    read_status,
    write_status,
)
from emergence.spec.controls import control_twin
from emergence.sweep_tracking import finish_sweep_trackers, sweep_trackers
from emergence.tracking import TrackerStart, build_trackers, replay_journal, tracker_summary


@dataclass
class SyncResult:
    run_dir: Path
    synced: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    note: str = "no trackers in its spec"  # what to say when nothing was synced and nothing failed


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
    run_dir = Path(run_dir)
    run_spec = read_run_spec(run_dir)
    journal = read_journal(run_dir)
    status = read_status(run_dir)
    started = [e for e in journal.events if e.get("event") == "start"]
    last_start = started[-1] if started else {}
    start = TrackerStart.of(
        run_spec, str(last_start.get("device", "unknown")), int(last_start.get("n_params", 0)), last_start.get("environment")
    )
    options = [t.model_dump() for t in run_spec.spec.tracking if only is None or t.backend in only]
    built, broken = build_trackers(options, run_dir)
    result = SyncResult(run_dir, failed=dict(broken))
    analysis = read_analysis(run_dir)
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


def behind_of(directory: Path) -> list[str]:
    """The trackers a run or sweep directory's ``status.json`` lists as behind."""
    return list((read_status(directory) or {}).get("trackers_behind") or {})


def sync_sweep(sweep_dir: Path, only: list[str] | None = None) -> list[SyncResult]:
    """Bring a sweep's trackers up to date from its directory: each run of its ``sweep.json`` (and its null
    control, when it has one), then the sweep's parent run, made or found, nested over them and finished with the
    summary and report as the directory holds them. Without ``only``, each run and the parent are synced into
    the trackers their ``status.json`` lists as behind, no others: a W&B run that is not behind would get its
    history twice. With ``only``, into those trackers whatever the status says. One result per directory synced
    or refused, the sweep directory's last."""
    from emergence.reports.sweep_page import SWEEP_FILE, load_sweep

    sweep_dir = Path(sweep_dir)
    summary = load_sweep(sweep_dir)
    runs_root = sweep_dir.parent.parent  # <output_dir>/<name>/sweeps/<key> -> <output_dir>/<name>
    results: list[SyncResult] = []
    first = None
    run_keys = [str(row["run_key"]) for row in summary.get("runs") or []]
    for run_key in run_keys:
        run_dir = runs_root / run_key
        if not (run_dir / JOURNAL_FILE).exists():
            results.append(SyncResult(run_dir, failed={"sweep": f"no {JOURNAL_FILE} in {run_dir}: the run directory is gone"}))
            continue
        run_spec = read_run_spec(run_dir)
        first = first or run_spec
        twin = control_twin(run_spec)
        for directory in (run_dir, *([runs_root / twin.run_key] if twin is not None else [])):
            wanted = only if only is not None else behind_of(directory)
            if wanted and (directory / JOURNAL_FILE).exists():
                results.append(sync_run(directory, wanted))
    sweep_result = SyncResult(sweep_dir, note="nothing behind (--tracker NAME replays into one anyway)")
    if first is not None:
        # A sweep directory from before sweeps had a status: its state from its runs', as the sweep's end decides it.
        all_done = all(row.get("state") in ("completed", "skipped") for row in summary["runs"])
        state = (read_status(sweep_dir) or {}).get("state") or ("completed" if all_done else "failed")
        files = [path for path in (sweep_dir / SWEEP_FILE, sweep_dir / REPORT_FILE, *sorted(sweep_dir.glob("*.png"))) if path.exists()]
        wanted = only if only is not None else behind_of(sweep_dir)
        backends = [options["backend"] for _, options in sweep_trackers(first) if options["backend"] in wanted]
        if backends:
            behind = finish_sweep_trackers(first, run_keys, sweep_dir, state, summary, files, prepare=backends, only=backends)
            sweep_result.failed.update(behind)
            sweep_result.synced.extend(backend for backend in backends if backend not in behind)
    return [*results, sweep_result]
