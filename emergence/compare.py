"""Runs from anywhere, side by side: run directories, or any tracker store that can read runs back.

A source is a run directory or a folder of them (read here), or a reference that a tracker plugin with the
``RunReader`` capability takes (``<backend>:<location>``, or a location a reader claims, such as an MLflow
tracking URI or a W&B run folder). ``emergence compare`` prints one row per run; ``emergence.load_runs``
returns the same runs as ``RunResult``s.

Columns: run key, spec, task, level, model size, seed, state, emergence step, the run a null control
controls (``control_of``: empty for a real run; a control sorts right after its run), then one column per
signal (``verdict (lead)``) and per probed feature (``quiet (lead)``), so runs of a sweep line up side by side.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from emergence.rundir import SPEC_FILE, RunResult, is_run_directory, read_run_result
from emergence.spec.controls import CONTROL_OF_TAG
from emergence.tracking import RUN_RECORD_FIELDS, RUN_RECORD_REF, named_reader, store_reader

FORMATS = ("table", "markdown", "csv", "json")
RUN_COLUMNS = ("run_key", "spec", "task", "level", "n_layers", "d_model", "n_params", "seed", "state", "emergence_step")
FIXED_COLUMNS = (*RUN_COLUMNS, "control_of")
DEFAULT_SOURCE = "runs"


def cells(run: RunResult) -> dict[str, Any]:
    """The fixed columns, then ``<signal>`` -> ``verdict (lead)`` for signals and probed features."""
    out: dict[str, Any] = {name: getattr(run, name) for name in RUN_COLUMNS}
    out["control_of"] = run.tags.get(CONTROL_OF_TAG)
    for verdict in run.verdicts:
        name = verdict.get("signal") or f"feature/{verdict.get('feature')}"
        lead = verdict.get("lead_steps")
        out[name] = f"{verdict.get('verdict')} ({lead})" if lead is not None else str(verdict.get("verdict"))
    return out


# -- sources --------------------------------------------------------------------------------------


def run_directories(paths: Iterable[Path]) -> list[Path]:
    """Each path itself if it is a run directory, else every run directory below it."""
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if is_run_directory(path):
            found.append(path)
        elif path.is_dir():
            found += sorted(p.parent for p in path.rglob(SPEC_FILE))
        else:
            raise FileNotFoundError(f"{path}: not a run directory and not a folder of runs")
    return found


def read_runs(source: str | Path, experiment: str | None = None) -> list[RunResult]:
    """Every run at ``source``: ``<tracker>:<location>`` through that tracker; a run directory or a folder
    holding some, read here; else whatever store a ``RunReader`` plugin claims it for. Raises
    ``FileNotFoundError`` or ``LookupError``, saying what was tried."""
    text = str(source)
    path = Path(source)
    if named_reader(text) is None and (is_run_directory(path) or (path.is_dir() and any(path.rglob(SPEC_FILE)))):
        return [read_run_result(d) for d in run_directories([path])]
    tracker_class, location = store_reader(text)
    return [_from_record(record, text) for record in tracker_class.read_runs(location, experiment)]


def _from_record(record: Mapping[str, Any], source: str) -> RunResult:
    missing = [name for name in RUN_RECORD_FIELDS if name not in record]
    if missing:
        raise LookupError(f"{source}: the tracker's run record lacks {', '.join(missing)}")
    ref = record.get(RUN_RECORD_REF)
    return RunResult(**{name: record[name] for name in RUN_RECORD_FIELDS}, source=source, ref=None if ref is None else str(ref))


# -- filtering and rendering ----------------------------------------------------------------------


def select(
    rows: Sequence[RunResult], spec: str | None = None, task: str | None = None, tags: Mapping[str, str] | None = None
) -> list[RunResult]:
    chosen = []
    for row in rows:
        if spec is not None and row.spec != spec:
            continue
        if task is not None and row.task != task:
            continue
        if tags and any(row.tags.get(k) != v for k, v in tags.items()):
            continue
        chosen.append(row)
    return chosen


def render(rows: Sequence[RunResult], fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    def order(run: RunResult) -> tuple[str, ...]:
        controlled = run.tags.get(CONTROL_OF_TAG)  # a control sorts right after the run it controls
        return (run.spec, str(run.task), str(run.level), str(run.n_layers), str(run.d_model), str(run.seed), controlled or run.run_key, "1" if controlled else "0")

    table_cells = [cells(row) for row in sorted(rows, key=order)]
    columns = list(FIXED_COLUMNS) + sorted({key for c in table_cells for key in c} - set(FIXED_COLUMNS))
    if fmt == "json":
        return json.dumps([{col: c.get(col) for col in columns} for c in table_cells], indent=2, default=str)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if c.get(col) is None else c.get(col) for col in columns] for c in table_cells])
        return buffer.getvalue()
    text = [[("" if c.get(col) is None else str(c.get(col))) for col in columns] for c in table_cells]
    if fmt == "markdown":
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(row) + " |" for row in text]
        return "\n".join(lines) + "\n"
    widths = [max([len(col), *(len(row[i]) for row in text)]) for i, col in enumerate(columns)]
    lines = ["  ".join(col.ljust(w) for col, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in text]
    return "\n".join(line.rstrip() for line in lines) + "\n"
