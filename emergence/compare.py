"""One row per run, from run directories, W&B run folders or an MLflow experiment: what was run and what was found.

Columns: run key, spec, task, level, model size, seed, state, emergence step, then one column per signal
(``verdict (lead)``) and per probed feature (``quiet (lead)``), so runs of a sweep line up side by side.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from emergence.record import ANALYSIS_FILE, SPEC_FILE, VERDICTS_FILE, read_status

FORMATS = ("table", "markdown", "csv", "json")
FIXED_COLUMNS = ("run_key", "spec", "task", "level", "n_layers", "d_model", "n_params", "seed", "state", "emergence_step")


@dataclass
class RunRow:
    run_key: str
    spec: str
    task: str
    level: Any
    n_layers: Any
    d_model: Any
    n_params: Any
    seed: Any
    state: str
    emergence_step: Any
    tags: dict[str, str] = field(default_factory=dict)
    verdicts: list[dict[str, Any]] = field(default_factory=list)

    def cells(self) -> dict[str, Any]:
        """The fixed columns, then ``<signal>`` -> ``verdict (lead)`` for signals and probed features."""
        out: dict[str, Any] = {name: getattr(self, name) for name in FIXED_COLUMNS}
        for verdict in self.verdicts:
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
        if (path / SPEC_FILE).exists():
            found.append(path)
        elif path.is_dir():
            found += sorted(p.parent for p in path.rglob(SPEC_FILE))
        else:
            raise FileNotFoundError(f"{path}: not a run directory and not a folder of runs")
    return found


def row_from_run_dir(run_dir: Path) -> RunRow:
    resolved = yaml.safe_load((run_dir / SPEC_FILE).read_text(encoding="utf-8")) or {}
    status = read_status(run_dir) or {}
    verdicts_path, analysis_path = run_dir / VERDICTS_FILE, run_dir / ANALYSIS_FILE
    verdicts = json.loads(verdicts_path.read_text(encoding="utf-8")) if verdicts_path.exists() else []
    analysis = json.loads(analysis_path.read_text(encoding="utf-8")) if analysis_path.exists() else {}
    events = analysis.get("events") or []
    n_params = None
    journal = run_dir / "journal.jsonl"
    if journal.exists():
        with journal.open(encoding="utf-8") as handle:
            first = handle.readline()
        n_params = json.loads(first).get("n_params") if first.strip() else None
    model, task = resolved.get("model") or {}, resolved.get("task") or {}
    tags = {k: str(v) for tracking in resolved.get("tracking") or [] for k, v in (tracking.get("tags") or {}).items()}
    return RunRow(
        run_key=str(resolved.get("run_key", run_dir.name)),
        spec=str(resolved.get("name", run_dir.parent.name)),
        task=str(task.get("name")),
        level=task.get("level"),
        n_layers=model.get("n_layers"),
        d_model=model.get("d_model"),
        n_params=n_params,
        seed=resolved.get("seed"),
        state=str(status.get("state", "unknown")),
        emergence_step=events[0].get("step") if events else None,
        tags=tags,
        verdicts=verdicts,
    )


def rows_from_mlflow(tracking_uri: str, experiment: str) -> list[RunRow]:
    """Every run of an MLflow experiment that ``emergence`` made, read by the MLflow tracker plugin (the core
    never imports mlflow itself)."""
    from emergence import registry

    tracker_class = registry.trackers.get("mlflow")
    return [RunRow(**row) for row in tracker_class.run_summaries(tracking_uri, experiment)]


def rows_from_wandb(paths: Iterable[Path]) -> list[RunRow]:
    """Every W&B run under ``paths`` (run folders ``wandb/offline-run-...`` or ``wandb/run-...``, run
    directories, or folders of them), read from the runs' record logs by the W&B tracker plugin (the core
    never imports wandb itself); offline runs need no W&B server."""
    from emergence import registry

    tracker_class = registry.trackers.get("wandb")
    return [RunRow(**row) for row in tracker_class.run_summaries_from_dirs([Path(p) for p in paths])]


# -- filtering and rendering ----------------------------------------------------------------------


def select(rows: Sequence[RunRow], spec: str | None = None, task: str | None = None, tags: Mapping[str, str] | None = None) -> list[RunRow]:
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


def render(rows: Sequence[RunRow], fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    cells = [row.cells() for row in sorted(rows, key=lambda r: (r.spec, str(r.task), str(r.level), str(r.d_model), str(r.seed), r.run_key))]
    columns = list(FIXED_COLUMNS) + sorted({key for c in cells for key in c} - set(FIXED_COLUMNS))
    if fmt == "json":
        return json.dumps([{col: c.get(col) for col in columns} for c in cells], indent=2, default=str)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if c.get(col) is None else c.get(col) for col in columns] for c in cells])
        return buffer.getvalue()
    text = [[("" if c.get(col) is None else str(c.get(col))) for col in columns] for c in cells]
    if fmt == "markdown":
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(row) + " |" for row in text]
        return "\n".join(lines) + "\n"
    widths = [max([len(col), *(len(row[i]) for row in text)]) for i, col in enumerate(columns)]
    lines = ["  ".join(col.ljust(w) for col, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in text]
    return "\n".join(line.rstrip() for line in lines) + "\n"
