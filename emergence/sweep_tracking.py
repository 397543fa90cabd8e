"""A sweep as its trackers show it: one parent run, made before the sweep's runs start (so that runs in
parallel find it rather than race to make it) and finished with the sweep's summary after they end.

The sweep directory (``<output_dir>/<name>/sweeps/<key>/``) is the record, the parent run a view of it, as a run
directory is for its runs. A tracker that cannot show the sweep at its end (a server away) does not fail the
sweep: the directory's ``status.json`` lists it under ``trackers_behind``, and ``emergence sync`` on the sweep
directory finishes the parent later from ``sweep.json``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from emergence.numbers import as_float
from emergence.rundir import read_status, write_status
from emergence.spec.grid import RunSpec
from emergence.tracking import SweepParent, SweepSummary, sanitize_key, tracker_classes_with

log = logging.getLogger(__name__)


def sweep_trackers(first: RunSpec) -> list[tuple[Any, dict[str, Any]]]:
    """The tracker classes of a sweep's spec that show it as a parent run (``SweepParent``), each with its
    ``tracking`` entry; none for a single run."""
    if first.sweep_key is None:
        return []
    return tracker_classes_with(SweepParent, [tracking.model_dump() for tracking in first.spec.tracking])


def prepare_sweep_trackers(first: RunSpec, run_keys: Sequence[str]) -> dict[str, str]:
    """Each tracker's parent run made (or found) before the runs start; returns the trackers that failed, by
    backend, with the error (the runs go on and log on their own; the sweep's end tries again)."""
    failed: dict[str, str] = {}
    for tracker_class, options in sweep_trackers(first):
        try:
            tracker_class.prepare_sweep(options, first.sweep_key, first.spec.name, list(run_keys))
        except Exception as error:  # noqa: BLE001 - a server away must not stop the sweep
            failed[options["backend"]] = f"{type(error).__name__}: {error}"
            log.warning("%s could not make the sweep's parent run yet (%s); the runs are unaffected", options["backend"], error)
    return failed


def finish_sweep_trackers(
    first: RunSpec,
    run_keys: Sequence[str],
    directory: Path,
    status: str,
    across_runs: Mapping[str, Any] | None,
    files: Sequence[Path],
    prepare: Collection[str] = (),
    only: Collection[str] | None = None,
) -> dict[str, str]:
    """Each tracker's parent run (of ``only`` those backends) shows the summary and ends; those in ``prepare``
    (whose parent the sweep's start could not make) make or find it first. Writes the sweep directory's
    ``status.json``: ``status``, and the trackers behind (those that failed now, and those behind before and not
    tried now), which it returns by backend."""
    summary = None if across_runs is None else SweepSummary(directory, summary_values(dict(across_runs)), summary_tables(dict(across_runs)), list(files))
    tried: set[str] = set()
    failed: dict[str, str] = {}
    for tracker_class, options in sweep_trackers(first):
        backend = options["backend"]
        if only is not None and backend not in only:
            continue
        tried.add(backend)
        try:
            if backend in prepare:
                tracker_class.prepare_sweep(options, first.sweep_key, first.spec.name, list(run_keys))
            tracker_class.finish_sweep(options, first.sweep_key, status, summary)
        except Exception as error:  # noqa: BLE001 - the runs are done and kept; the directory holds the summary
            failed[backend] = f"{type(error).__name__}: {error}"
            log.warning(
                "%s could not show the sweep's summary (%s): its parent run is not finished. Once it is back, run "
                "`emergence sync %s`",
                backend, error, directory,
            )  # fmt: skip
    earlier = (read_status(directory) or {}).get("trackers_behind") or {}
    behind = {**{k: v for k, v in earlier.items() if k not in tried}, **failed}
    write_status(directory, status, **({"trackers_behind": behind} if behind else {}))
    return behind


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


