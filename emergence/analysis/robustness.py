"""Does a verdict survive other analysis settings? Events, onsets and verdicts again over a grid of
threshold x persistence x precursor margin (``analysis.robustness``), from the same journal: no retraining.

A verdict is **robust** when every setting of the grid gives the verdict the run's own settings gave; its
**share** is the fraction of settings that do. When the spec's own settings lie on the grid (the defaults
do: 0.5, 3, 2), robust means the verdict is the same over the whole grid.

One persistence serves both the event (measurements above the threshold) and the onset (measurements a
recovery, a probe's lead over its baseline or a change point must hold): METHODS.md uses one k for both,
and a verdict that held only because the two were set apart would not be worth much. Rules with a hold of
their own (``baseline_ratio``, ``sigma``) keep it: it is part of what their measure declared.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from emergence.analysis.judge import Behavior, Series, find_events, find_onsets, verdict_at
from emergence.analysis.onsets import DeclaredRule
from emergence.record import JournalContents
from emergence.spec.schema import AnalysisSpec, RobustnessSpec


def grid_settings(grid: RobustnessSpec) -> list[dict[str, float]]:
    """Every (threshold, persistence, margin), thresholds slowest, margins fastest: the heat map's columns."""
    return [
        {"threshold": threshold, "persistence": persistence, "margin": margin}
        for threshold, persistence, margin in itertools.product(grid.thresholds, grid.persistence, grid.margins)
    ]


def robustness(
    journal: JournalContents,
    series: Series,
    behavior: Behavior,
    spec: AnalysisSpec,
    rules: Sequence[DeclaredRule],
    verdicts: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The grid's verdict for each of ``verdicts`` (the plain ones, at the spec's settings), with its share
    and robust flag. Returns ``{"settings", "plain", "rows"}``; row ``i`` belongs to ``verdicts[i]``."""
    grid = spec.robustness
    assert grid is not None  # the caller checks
    settings = grid_settings(grid)
    onsets = {persistence: find_onsets(journal, series, spec, rules, persistence) for persistence in grid.persistence}
    events = {
        (threshold, persistence): {e["metric"]: e["step"] for e in find_events(behavior, threshold, persistence)}
        for threshold in grid.thresholds
        for persistence in grid.persistence
    }
    rows = []
    for verdict in verdicts:
        signal, metric = verdict["signal"], verdict["event_metric"]
        steps = series[signal][0]
        cells = []
        for setting in settings:
            onset = onsets[setting["persistence"]].onsets.get(signal, (None, None))[0]
            event_step = events[(setting["threshold"], setting["persistence"])].get(metric)
            cells.append(verdict_at(steps, onset, event_step, setting["margin"]))
        agree = sum(cell == verdict["verdict"] for cell in cells)
        rows.append(
            {
                "signal": signal,
                "event_metric": metric,
                "verdict": verdict["verdict"],
                "grid": cells,
                "share": agree / len(cells),
                "robust": agree == len(cells),
            }
        )
    plain = {
        "threshold": spec.emergence.threshold,
        "persistence": spec.emergence.persistence,
        "onset_persistence": spec.collapse.persistence,
        "margin": spec.precursor.min_lead_intervals,
    }
    return {"settings": settings, "plain": plain, "rows": rows}
