"""Is an onset specific to the capability? Compare each signal's onset with the same signal's onset in the
run's null control (``analysis.control: shuffled_labels``: the same run on permuted training answers, with
nothing to generalise; ``emergence.spec.controls``).

An onset the control shows too, within the precursor margin (fewer than ``min_lead_intervals`` measurement
intervals apart, the width of "synchronous"), is **nonspecific**: it marks optimisation in general, such as
the collapse and recovery of the representation in the first steps of every run, not the capability.
``specific`` is True when the control has no onset of that signal or one at least the margin away, False
when it shares it, and None when there is nothing to compare (no control, the control did not finish or
never measured the signal, or the run's own signal has no onset).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emergence.analysis.judge import Behavior, Series, find_events, find_onsets
from emergence.analysis.onsets import DeclaredRule
from emergence.analysis.precursor import lead_in_intervals
from emergence.record import JournalContents, read_journal
from emergence.rundir import read_status
from emergence.spec.controls import control_directory
from emergence.spec.schema import AnalysisSpec, MonitorSpec, Spec


@dataclass(frozen=True)
class ControlRun:
    """The control of a run as analysis finds it: its journal only when it completed."""

    kind: str
    run_key: str
    state: str  # completed | failed | running | missing
    journal: JournalContents | None


def find_control(run_dir: Path, spec: Spec | MonitorSpec) -> ControlRun | None:
    """The control beside ``run_dir`` when the spec asks for one (None otherwise), in whatever state it is."""
    directory = control_directory(run_dir, spec)
    if directory is None:
        return None
    kind = str(spec.analysis.control)
    status = read_status(directory) if directory.is_dir() else None
    state = str(status.get("state")) if status else "missing"
    journal = read_journal(directory) if state == "completed" else None
    return ControlRun(kind, directory.name, state, journal)


def control_onsets(
    control: JournalContents, signals: Sequence[str], spec: AnalysisSpec, rules: Sequence[DeclaredRule]
) -> dict[str, int | None]:
    """The control's onset of each signal it measured, at the spec's own settings."""
    journal = control.analysed()
    measured = set(journal.metric_keys())
    series = {key: journal.series(key) for key in signals if key in measured}
    return {key: onset for key, (onset, _) in find_onsets(journal, series, spec, rules, spec.collapse.persistence).onsets.items()}


def specificity(
    verdicts: list[dict[str, Any]], series: Series, onsets: dict[str, int | None] | None, margin: float
) -> None:
    """Add ``specific`` and ``control_onset_step`` to each verdict in place (see the module docstring)."""
    for verdict in verdicts:
        signal, onset = verdict["signal"], verdict["onset_step"]
        measured = onsets is not None and signal in onsets
        control_onset = onsets[signal] if onsets is not None and measured else None
        specific: bool | None = None
        if measured and onset is not None:
            if control_onset is None:
                specific = True
            else:
                steps = series[signal][0]
                apart = abs(lead_in_intervals(steps, min(onset, control_onset), max(onset, control_onset)))
                specific = bool(apart >= margin)
        verdict["specific"] = specific
        verdict["control_onset_step"] = control_onset


def control_summary(control: ControlRun, spec: AnalysisSpec, chance: float, level_chance: dict[int, float] | None) -> dict[str, Any]:
    """What the analysis records of the control: which run, its state, and its own events, which should not
    happen (the control's test answers are the real ones, which it cannot have learnt)."""
    summary: dict[str, Any] = {"kind": control.kind, "run_key": control.run_key, "state": control.state, "events": []}
    if control.journal is not None:
        behavior = Behavior.read(control.journal.analysed(), spec, chance, level_chance)
        summary["events"] = [
            {"metric": e["metric"], "step": e["step"]} for e in find_events(behavior, spec.emergence.threshold, spec.emergence.persistence)
        ]
        steps, values = behavior.series.get(spec.emergence.metric, (np.array([]), np.array([])))
        summary["final_metric"] = float(values[-1]) if len(values) else None
    return summary
