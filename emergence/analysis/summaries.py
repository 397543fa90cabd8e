"""Run summaries: one number for a whole run's series, declared by the measure that writes it.

Some quantities are read as a whole-run property rather than watched for an onset: the spectral edge's gap
position k* ("Muon puts the gap at position 1, AdamW at 2") is a small integer whose most frequent value is
the claim. A measure's options declare which of its keys to summarise and how (``MeasureOptions.summaries``);
analysis computes them here, so no key is summarised because of its name. ``analysis.json`` keeps them under
``summaries``, trackers get ``summary/<key>/<statistic>``, and the sweep groups them by condition.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from emergence.analysis.declarations import declared_by
from emergence.analysis.onsets import matches
from emergence.record import JournalContents


def measure_summaries(measures: Iterable[Any]) -> list[tuple[str, str]]:
    """(key pattern, statistic) pairs the spec's measures declare; options without the method declare none."""
    return declared_by(measures, "summaries")


def mode_summary(steps: np.ndarray, values: np.ndarray, event_step: int | None) -> dict[str, Any] | None:
    """The most frequent value (ties: the smallest), its share of the finite measurements, the counts of every
    value, and the values before and from the emergence event when there is one."""
    finite = np.isfinite(values)
    if not finite.any():
        return None
    counts = Counter(float(v) for v in values[finite])
    mode = min(counts, key=lambda value: (-counts[value], value))
    summary: dict[str, Any] = {
        "statistic": "mode",
        "value": mode,
        "share": counts[mode] / int(finite.sum()),
        "measurements": int(finite.sum()),
        "counts": {f"{value:g}": n for value, n in sorted(counts.items())},
    }
    if event_step is not None:
        for name, part in (("before_event", steps < event_step), ("from_event", steps >= event_step)):
            part_counts = Counter(float(v) for v in values[finite & part])
            summary[f"mode_{name}"] = min(part_counts, key=lambda v: (-part_counts[v], v)) if part_counts else None
    return summary


STATISTICS = {"mode": mode_summary}


def run_summaries(
    journal: JournalContents, declared: Sequence[tuple[str, str]], events: Sequence[Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """``{key: summary}`` for every logged key a declaration matches, against the first event's step."""
    event_step = next((e.get("step") for e in events), None)
    summaries: dict[str, dict[str, Any]] = {}
    for key in journal.metric_keys():
        for pattern, statistic in declared:
            if matches(key, pattern):
                steps, values = journal.series(key)
                summary = STATISTICS[statistic](steps, values, event_step)
                if summary is not None:
                    summaries[key] = summary
                break
    return summaries

