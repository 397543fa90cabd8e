"""The run journal: every value a run logs, appended durably to ``journal.jsonl``.

The journal is the durable truth of a run; trackers are views of it. Three kinds of line:

- ``{"step": s, "values": {key: float}}``: measured values at a training step
- ``{"table": name, "step": s | null, "columns": [...], "rows": [[...]]}``: a table
- ``{"event": kind, ...}``: run lifecycle (``start``, ``resume``, ``failed`` ...)

Each line is flushed and fsynced as it is written, so a killed run loses at most the line in flight,
and a torn last line is ignored when reading.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emergence.numbers import decode_nonfinite, encode_nonfinite

JOURNAL_FILE = "journal.jsonl"  # in the run directory (rundir.py)


EXCLUDED_STEP_EVENT = "step_excluded"  # {"event": ..., "step": s, "reason": ...}: the analysis leaves step s out


@dataclass
class JournalContents:
    values: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    tables: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def metric_keys(self) -> list[str]:
        seen: dict[str, None] = {}
        for _, values in self.values:
            seen.update(dict.fromkeys(values))
        return list(seen)

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one metric, in step order, the last value winning for a repeated step."""
        by_step: dict[int, float] = {}
        for step, values in self.values:
            if key in values:
                by_step[step] = values[key]
        steps = sorted(by_step)
        return np.array(steps, dtype=np.int64), np.array([by_step[s] for s in steps], dtype=np.float64)

    def last_step(self) -> int | None:
        return max((s for s, _ in self.values), default=None)

    def excluded_steps(self) -> dict[int, str]:
        """Steps an event marks as not to be analysed (a checkpoint whose weights are another step's), with why."""
        return {int(e["step"]): str(e.get("reason", "")) for e in self.events if e.get("event") == EXCLUDED_STEP_EVENT}

    def analysed(self) -> JournalContents:
        """The journal without its excluded steps: what the analysis reads."""
        excluded = self.excluded_steps()
        if not excluded:
            return self
        return JournalContents([(s, v) for s, v in self.values if s not in excluded], self.tables, self.events)


class Journal:
    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / JOURNAL_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _append(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=False)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def append_values(self, step: int, values: Mapping[str, float]) -> None:
        self._append({"step": int(step), "values": {k: encode_nonfinite(float(v)) for k, v in values.items()}})

    def append_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int | None = None) -> None:
        safe_rows = [[encode_nonfinite(cell) for cell in row] for row in rows]
        self._append({"table": name, "step": step, "columns": list(columns), "rows": safe_rows})

    def append_event(self, kind: str, **data: Any) -> None:
        self._append({"event": kind, **{k: encode_nonfinite(v) for k, v in data.items()}})

    def read(self) -> JournalContents:
        return read_journal(self.path)

    def truncate_after(self, step: int) -> None:
        """Drop value and table lines logged after ``step``: a resumed run measures them again."""
        if not self.path.exists():
            return
        kept = []
        for record in _records(self.path):
            record_step = record.get("step")
            if record_step is not None and ("values" in record or "table" in record) and record_step > step:
                continue
            kept.append(json.dumps(record, separators=(",", ":")))
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, self.path)


def _records(path: Path) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line from a killed process
    return records


def read_journal(path: Path) -> JournalContents:
    path = Path(path)
    if path.is_dir():
        path = path / JOURNAL_FILE
    contents = JournalContents()
    if not path.exists():
        return contents
    for record in _records(path):
        if "values" in record:
            contents.values.append((int(record["step"]), {k: float(decode_nonfinite(v)) for k, v in record["values"].items()}))
        elif "table" in record:
            record["rows"] = [[decode_nonfinite(c) for c in row] for row in record["rows"]]
            contents.tables.append(record)
        elif "event" in record:
            contents.events.append(record)
    return contents
