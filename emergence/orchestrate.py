"""Spec -> resolved runs -> executor -> ``run_one`` for each; completed runs are skipped, interrupted ones
resume, and a grid of more than one run ends with its sweep summary (``sweep.json``, a report, the parent
tracker run)."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emergence import registry
from emergence.executors import ProgressSink, RunMessage
from emergence.resources import check_memory
from emergence.rundir import RunOutcome, completed_outcome, is_completed, run_directory
from emergence.spec.controls import control_twin
from emergence.spec.grid import RunSpec
from emergence.spec.load import NOT_GIVEN, SpecError, SpecProblem
from emergence.spec.schema import CheckpointSeriesSpec
from emergence.sweep_tracking import finish_sweep_trackers, prepare_sweep_trackers
from emergence.tracking import ChecksOptions, ForgetsRuns, TrackerOptionError, tracker_classes_with

log = logging.getLogger(__name__)

SWEEP_DIR = "sweeps"  # <output_dir>/<spec name>/sweeps/<sweep key>/: sweep.json, report.html, plots


def sweep_directory(runs: Sequence[RunSpec]) -> Path | None:
    first = runs[0]
    if first.sweep_key is None:
        return None
    return Path(first.spec.execution.output_dir) / first.spec.name / SWEEP_DIR / first.sweep_key


def execute(runs: Sequence[RunSpec], force: bool = False, progress: ProgressSink | None = None) -> list[RunOutcome]:
    """Run every resolved run once: completed ones are read back, not run again (``force`` deletes them
    first); the rest go to the spec's executor. Returns one outcome per run, in order."""
    runs = _unique(runs)
    if not runs:
        return []
    if force:
        # A forced run trains its null control again too: the reason to force (changed code) applies to both.
        forced = [*runs, *(twin for run in runs if (twin := control_twin(run)) is not None)]
        for run in forced:
            shutil.rmtree(run_directory(run), ignore_errors=True)
        for tracker_class, options in _trackers_with(runs, ForgetsRuns):
            _quietly(tracker_class.forget_runs, options, [r.run_key for r in forced])
    outcomes: dict[str, RunOutcome] = {}
    for run in runs:
        if is_completed(run_directory(run)):
            outcomes[run.run_key] = completed_outcome(run, run_directory(run))
            if progress is not None:
                progress(RunMessage(run.run_key, "finished", state="skipped", reason="already completed"))
    pending = [run for run in runs if run.run_key not in outcomes]
    check_inputs(pending)
    unprepared = prepare_sweep_trackers(runs[0], [r.run_key for r in runs])
    if pending:
        execution = runs[0].spec.execution
        executor = registry.executors.get(execution.executor)(execution)
        for outcome in executor.execute(pending, progress):
            outcomes[outcome.run_key] = outcome
    ordered = [outcomes[run.run_key] for run in runs]
    _finish_sweep(runs, ordered, unprepared)
    return ordered


def check_inputs(runs: Sequence[RunSpec]) -> None:
    """What a spec names outside itself and cannot be fixed mid-sweep, checked before any run or tracker run
    starts: the trackers' options (those that can check them), that the runs fit in memory, and every
    checkpoint of a series on disk or in the HF cache. Raises ``SpecError``."""
    check_tracker_options(runs)
    check_memory(runs)
    series = [run for run in runs if isinstance(run.spec.model, CheckpointSeriesSpec)]
    if not series:
        return
    from emergence.models.checkpoints import SeriesError, check_available, series_checkpoints

    for run in series:
        try:
            check_available(series_checkpoints(run.spec.model))  # type: ignore[arg-type]
        except SeriesError as error:
            path, _, message = str(error).partition(": ")
            raise SpecError(run.source, [SpecProblem(path, message, run.spec.model.path or run.spec.model.name)]) from None  # type: ignore[union-attr]


def check_tracker_options(runs: Sequence[RunSpec]) -> None:
    """Each tracking entry that its tracker can check (``ChecksOptions``) checked by its spelling: a tracking URI
    of an unknown scheme is refused now, not when the run starts to log with its directory made."""
    problems: list[SpecProblem] = []
    seen: set[tuple[int, str]] = set()
    for run in runs:
        for index, options in enumerate(run.spec.tracking):
            entry = options.model_dump()
            key = (index, json.dumps(entry, sort_keys=True, default=str))
            if key in seen:
                continue
            seen.add(key)
            for tracker_class, checked in tracker_classes_with(ChecksOptions, [entry]):
                try:
                    tracker_class.check_options(checked)
                except TrackerOptionError as error:
                    given = NOT_GIVEN if error.given is None else error.given
                    problems.append(SpecProblem(f"tracking.{index}.{error.field}", str(error), given, error.allowed))
    if problems:
        raise SpecError(runs[0].source, problems)


def _unique(runs: Sequence[RunSpec]) -> list[RunSpec]:
    """A grid that names the same run twice (``seed: [0, 0]``) runs it once."""
    seen: dict[str, RunSpec] = {}
    for run in runs:
        seen.setdefault(run.run_key, run)
    return list(seen.values())


def _finish_sweep(runs: Sequence[RunSpec], outcomes: Sequence[RunOutcome], unprepared: dict[str, str]) -> None:
    directory = sweep_directory(runs)
    if directory is None:
        return
    status = "completed" if all(o.state in ("completed", "skipped") for o in outcomes) else "failed"
    across_runs: dict[str, Any] | None = None
    files: list[Path] = []
    try:
        from emergence.analysis.sweep import summarize_sweep, sweep_entries
        from emergence.reports import write_sweep_report

        across_runs = summarize_sweep(sweep_entries(runs, outcomes), runs[0].sweep_key or "", runs[0].spec.name)
        files = write_sweep_report(directory, across_runs)
    except Exception:  # noqa: BLE001 - the runs are done and kept; a summary problem must not hide them
        log.exception("could not write the sweep summary to %s", directory)
        across_runs = None
    directory.mkdir(parents=True, exist_ok=True)
    finish_sweep_trackers(runs[0], [r.run_key for r in runs], directory, status, across_runs, files, prepare=unprepared)


def _trackers_with(runs: Sequence[RunSpec], capability: type) -> list[tuple[Any, dict[str, Any]]]:
    return tracker_classes_with(capability, [tracking.model_dump() for tracking in runs[0].spec.tracking])


def _quietly(call: Any, *args: Any) -> None:
    """A tracker's sweep bookkeeping may fail (a server away); the runs go on and log on their own."""
    try:
        call(*args)
    except Exception as error:  # noqa: BLE001
        log.warning("tracker sweep bookkeeping failed (%s); the runs are unaffected", error)
