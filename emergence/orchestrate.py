"""Spec -> resolved runs -> executor -> ``run_one`` for each; completed runs are skipped, interrupted ones
resume, and a grid of more than one run ends with its sweep summary (``sweep.json``, a report, the parent
tracker run)."""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emergence import registry
from emergence.executors import ProgressSink, RunMessage
from emergence.numbers import as_float
from emergence.resources import check_memory
from emergence.rundir import RunOutcome, completed_outcome, is_completed, run_directory
from emergence.spec.controls import control_twin
from emergence.spec.grid import RunSpec
from emergence.spec.load import NOT_GIVEN, SpecError, SpecProblem
from emergence.spec.schema import CheckpointSeriesSpec
from emergence.tracking import (
    ChecksOptions,
    ForgetsRuns,
    SweepParent,
    SweepSummary,
    TrackerOptionError,
    sanitize_key,
    tracker_classes_with,
)

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
    sweep_trackers = _sweep_trackers(runs)
    for tracker_class, options in sweep_trackers:
        _quietly(tracker_class.prepare_sweep, options, runs[0].sweep_key, runs[0].spec.name, [r.run_key for r in runs])
    if pending:
        execution = runs[0].spec.execution
        executor = registry.executors.get(execution.executor)(execution)
        for outcome in executor.execute(pending, progress):
            outcomes[outcome.run_key] = outcome
    ordered = [outcomes[run.run_key] for run in runs]
    _finish_sweep(runs, ordered, sweep_trackers)
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


def _finish_sweep(runs: Sequence[RunSpec], outcomes: Sequence[RunOutcome], sweep_trackers: list[tuple[Any, dict[str, Any]]]) -> None:
    directory = sweep_directory(runs)
    if directory is None:
        return
    status = "completed" if all(o.state in ("completed", "skipped") for o in outcomes) else "failed"
    summary: SweepSummary | None = None
    try:
        from emergence.analysis.sweep import summarize_sweep, sweep_entries
        from emergence.reports import write_sweep_report

        across_runs = summarize_sweep(sweep_entries(runs, outcomes), runs[0].sweep_key or "", runs[0].spec.name)
        files = write_sweep_report(directory, across_runs)
        summary = SweepSummary(directory, summary_values(across_runs), summary_tables(across_runs), files)
    except Exception:  # noqa: BLE001 - the runs are done and kept; a summary problem must not hide them
        log.exception("could not write the sweep summary to %s", directory)
    for tracker_class, options in sweep_trackers:
        _quietly(tracker_class.finish_sweep, options, runs[0].sweep_key, status, summary)


def summary_tables(across_runs: dict[str, Any]) -> dict[str, tuple[list[str], list[list[Any]]]]:
    """Every list of rows in the sweep summary (``runs``, ``precursor_rate.by_family`` ...) as a tracker
    table named ``sweep_runs``, ``sweep_precursor_rate_by_family`` ...; nested cells as JSON text."""
    found: dict[str, list[dict[str, Any]]] = {}
    for name in SUMMARY_TABLES:
        value = across_runs.get(name)
        if _rows(value):
            found[name] = value
        elif isinstance(value, dict):
            found.update({f"{name}_{part}": rows for part, rows in value.items() if _rows(rows)})
    tables = {}
    for name, rows in found.items():
        columns = [c for c in dict.fromkeys(column for row in rows for column in row) if c not in LEFT_OUT_COLUMNS]
        tables[f"sweep_{name}"] = (columns, [[_cell(row.get(column)) for column in columns] for row in rows])
    return tables


SUMMARY_TABLES = ("runs", "precursor_rate", "top_down", "collapse_floor", "concordance", "by_condition", "summaries")
LEFT_OUT_COLUMNS = ("items",)  # every (run, event) point of a concordance plot: sweep.json has them


def _rows(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(row, dict) for row in value)


def _cell(value: Any) -> Any:
    return json.dumps(value, default=str) if isinstance(value, dict | list | tuple) else value


def summary_values(across_runs: dict[str, Any]) -> dict[str, float]:
    """The sweep's headline numbers for a tracker's summary: run counts; per signal family, difficulty and
    size the precursor rate with its Wilson interval, the median lead with its bootstrap interval, the robust
    and specific shares and the trusted rate; the top-down rate per family and size; the collapse floor's
    coefficient of variation across sizes with its interval; and concordance."""
    values = {f"runs/{state}": float(n) for state, n in across_runs.get("counts", {}).items() if _is_number(n)}
    for row in across_runs.get("precursor_rate", {}).get("by_family", []):
        cell = f"{row['family']}/{row['difficulty']}/{row['size']}"
        # Each rate beside its interval and its trust: the same names with _low/_high, as the sweep table has them.
        for column, name in RATE_VALUES.items():
            if _is_number(row.get(column)):
                values[f"{name}/{cell}"] = float(row[column])
    for row in across_runs.get("top_down", []):
        for column in ("rate", "rate_low", "rate_high"):
            if _is_number(row.get(column)):
                values[f"top_down_{column}/{row['family']}/{row['size']}"] = float(row[column])
    for row in across_runs.get("collapse_floor", {}).get("rows", []):
        for column in ("cv", "cv_low", "cv_high"):
            if _is_number(row.get(column)):
                values[f"collapse_floor_{column}/{row['task']}/{row['difficulty']}/{row['signal']}"] = float(row[column])
    for row in across_runs.get("concordance", {}).get("by_family", []):
        if _is_number(row.get("concordance")):
            values[f"concordance/{row['family']}"] = float(row["concordance"])
    for row in across_runs.get("by_condition", []):
        where = f"{row['signal']}/{row['condition']}"
        values[f"precursors/{where}"] = float(row["precursor"])
        values[f"false_alarms/{where}"] = float(row["false_alarms"])
        if _is_number(row.get("mean_lead_steps")):
            values[f"mean_lead_steps/{where}"] = float(row["mean_lead_steps"])
    for row in across_runs.get("summaries", []):  # e.g. spectral/k_star/mode/training.optimizer.name=muon
        if _is_number(row.get("value")):
            values[f"{row['key']}/{row['statistic']}/{row['condition']}"] = float(row["value"])
    return {sanitize_key(key): value for key, value in values.items()}


# The precursor-rate columns a sweep's parent run shows per family, difficulty and size, by summary name.
RATE_VALUES = {
    "rate": "precursor_rate", "rate_low": "precursor_rate_low", "rate_high": "precursor_rate_high",
    "median_lead_steps": "median_lead_steps", "median_lead_low": "median_lead_low", "median_lead_high": "median_lead_high",
    "robust_share": "robust_share", "specific_share": "specific_share",
    "trusted_rate": "trusted_rate", "trusted_low": "trusted_rate_low", "trusted_high": "trusted_rate_high",
}


def _is_number(value: Any) -> bool:
    """A number a tracker can show: not a bool, not NaN."""
    number = as_float(value)
    return number is not None and not isinstance(value, bool) and not math.isnan(number)


def _sweep_trackers(runs: Sequence[RunSpec]) -> list[tuple[Any, dict[str, Any]]]:
    """The tracker classes of a sweep that show it as a parent run (``SweepParent``), each with its spec
    entry: set up once here, before any run starts, so that parallel runs do not race to create the same
    experiment or parent run."""
    if runs[0].sweep_key is None:
        return []
    return _trackers_with(runs, SweepParent)


def _trackers_with(runs: Sequence[RunSpec], capability: type) -> list[tuple[Any, dict[str, Any]]]:
    return tracker_classes_with(capability, [tracking.model_dump() for tracking in runs[0].spec.tracking])


def _quietly(call: Any, *args: Any) -> None:
    """A tracker's sweep bookkeeping may fail (a server away); the runs go on and log on their own."""
    try:
        call(*args)
    except Exception as error:  # noqa: BLE001
        log.warning("tracker sweep bookkeeping failed (%s); the runs are unaffected", error)
