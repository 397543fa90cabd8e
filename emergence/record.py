"""The run journal: every value a run logs, appended durably to ``journal.jsonl``.

The journal is the durable truth of a run; trackers are views of it. Three kinds of line:

- ``{"step": s, "values": {key: float}}``: measured values at a training step
- ``{"table": name, "step": s | null, "columns": [...], "rows": [[...]]}``: a table
- ``{"event": kind, ...}``: run lifecycle (``start``, ``resume``, ``failed`` ...)

Each line is flushed and fsynced as it is written, so a killed run loses at most the line in flight.
A torn last line (a process killed, or a disk that filled, in the middle of a write) is ignored when
reading and cut off before the next append, so it never swallows the line written after it.
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


_TAIL_BLOCK = 1 << 16  # bytes read at a time, backwards, to find where a torn last line starts

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
        self._tail_checked = False
        self._data_records: int | None = None  # value and table lines so far; counted on first use

    def _cut_torn_tail(self) -> None:
        """Cut a last line that has no newline: appending after it would glue the next record onto it, and
        both would be unreadable."""
        if not self.path.exists():
            return
        with self.path.open("rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return
            start = max(0, size - _TAIL_BLOCK)
            while True:  # back to the last newline, a block at a time
                handle.seek(start)
                cut = handle.read(size - start).rfind(b"\n")
                if cut >= 0 or start == 0:
                    handle.truncate(start + cut + 1)
                    break
                start = max(0, start - _TAIL_BLOCK)
            handle.flush()
            os.fsync(handle.fileno())

    def _append(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=False)
        if not self._tail_checked:
            self._cut_torn_tail()
            self._tail_checked = True
        try:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            self._tail_checked = False  # part of the line may be on disk (a full disk): cut it before the next
            raise
        if self._data_records is not None and ("values" in record or "table" in record):
            self._data_records += 1

    def position(self) -> int:
        """How many value and table lines the journal holds: a checkpoint keeps it, so that a run resumed from
        that checkpoint drops exactly what was recorded after it (``truncate_after``)."""
        if self._data_records is None:
            self._data_records = sum(1 for r in _records(self.path) if "values" in r or "table" in r) if self.path.exists() else 0
        return self._data_records

    def append_values(self, step: int, values: Mapping[str, float]) -> None:
        self._append({"step": int(step), "values": {k: encode_nonfinite(float(v)) for k, v in values.items()}})

    def append_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int | None = None) -> None:
        safe_rows = [[encode_nonfinite(cell) for cell in row] for row in rows]
        self._append({"table": name, "step": step, "columns": list(columns), "rows": safe_rows})

    def append_event(self, kind: str, **data: Any) -> None:
        self._append({"event": kind, **{k: encode_nonfinite(v) for k, v in data.items()}})

    def read(self) -> JournalContents:
        return read_journal(self.path)

    def truncate_after(self, step: int, position: int | None = None) -> None:
        """Drop value and table lines logged after ``step``, and, given the checkpoint's ``position``, every
        value and table line past it: what a resumed run records again (the values after its checkpoint, and the
        after-run values and verdict tables of a run killed during its analysis). Events stay: they are the
        run's history, faults included. A torn last line goes too."""
        self._tail_checked = True  # the rewrite below leaves only whole lines
        if not self.path.exists():
            self._data_records = 0
            return
        kept, data_records = [], 0
        for record in _records(self.path):
            is_data = "values" in record or "table" in record
            if is_data:
                record_step = record.get("step")
                if record_step is not None and record_step > step:
                    continue
                if position is not None and data_records >= position:
                    continue
                data_records += 1
            kept.append(json.dumps(record, separators=(",", ":")))
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, self.path)
        self._data_records = data_records


def _records(path: Path) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.endswith("\n"):
                break  # a torn last line (its write never finished), even one that happens to parse
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a crash of an older version, with lines appended after it
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
