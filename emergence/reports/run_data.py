"""What a run's report shows, loaded from its directory.

The report reads only what a run leaves on disk (journal, ``analysis.json``, ``verdicts.json``, spec,
status). Whatever is missing or unreadable is noted rather than raised: a run that failed in its first
step still gets a page that shows why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from emergence.record import JournalContents, read_journal
from emergence.rundir import SPEC_FILE, read_analysis, read_status, read_verdicts


@dataclass
class RunData:
    """Everything the report shows, with ``None`` or empty for whatever the run did not leave behind."""

    run_dir: Path
    spec_name: str
    run_key: str
    status: dict[str, Any] | None
    spec_text: str | None
    journal: JournalContents
    analysis: dict[str, Any] | None
    verdicts: list[dict[str, Any]]
    feature_verdicts: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def analysis_list(self, key: str) -> list[dict[str, Any]]:
        """``analysis.json``'s list under ``key`` (events, collapse, top_down), objects only."""
        items = (self.analysis or {}).get(key) or []
        return [item for item in items if isinstance(item, dict)]


# --- loading -------------------------------------------------------------------------------------


def load_run_data(run_dir: Path) -> RunData:
    notes: list[str] = []
    spec_text = _read_text(run_dir / SPEC_FILE)
    spec_name = _spec_name(spec_text) or run_dir.parent.name
    try:
        status = read_status(run_dir)
    except (OSError, json.JSONDecodeError):
        status = None
        notes.append("status.json could not be read.")
    analysis = read_analysis(run_dir, notes) or None
    # verdicts.json is the contract; analysis.json carries the same list, so fall back to it.
    verdicts = read_verdicts(run_dir, notes) or (analysis or {}).get("verdicts") or []
    return RunData(
        run_dir=run_dir,
        spec_name=spec_name,
        run_key=run_dir.name,
        status=status,
        spec_text=spec_text,
        journal=read_journal(run_dir),
        analysis=analysis,
        verdicts=[v for v in verdicts if isinstance(v, dict) and v.get("kind") != "feature"],
        feature_verdicts=[v for v in verdicts if isinstance(v, dict) and v.get("kind") == "feature"],
        notes=notes,
    )


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _spec_name(spec_text: str | None) -> str | None:
    if not spec_text:
        return None
    try:
        spec = yaml.safe_load(spec_text)
    except yaml.YAMLError:
        return None
    name = spec.get("name") if isinstance(spec, dict) else None
    return str(name) if name else None


