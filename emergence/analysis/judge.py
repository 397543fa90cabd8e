"""The steps of one analysis, each at settings given explicitly: emergence events at a threshold and a
persistence, signal onsets at a persistence, and verdicts at a precursor margin.

``analyze`` calls them once at the spec's settings; ``robustness`` calls them again over a grid of settings,
on the same series read once from the journal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emergence.analysis.collapse import Collapse, collapse_of
from emergence.analysis.events import emergence_step, threshold_value
from emergence.analysis.features import probe_onsets
from emergence.analysis.onsets import DeclaredRule, onset_by_rule, onset_inputs, rule_for
from emergence.analysis.precursor import lead_in_intervals, verdict_for
from emergence.measures.onset_rules import RecoveryRule, Rule
from emergence.record import JournalContents
from emergence.spec.schema import AnalysisSpec

Series = dict[str, tuple[np.ndarray, np.ndarray]]

PER_LAYER_KEY = re.compile(r"^(?P<family>geometry/[^/]+/[^/]+)/L(?P<layer>\d+)$")
LEVEL_SUFFIX = re.compile(r"/level_(?P<level>\d+)$")


def event_metrics(journal: JournalContents, metric: str) -> list[str]:
    """The spec's metric, plus its per-level series when the task mixes difficulty levels."""
    per_level = sorted(k for k in journal.metric_keys() if k.startswith(metric + "/level_"))
    return [metric, *per_level]


@dataclass(frozen=True)
class Behavior:
    """The behaviour series events are found on, read once, with each one's chance exact match."""

    metrics: list[str]
    series: Series
    chance: dict[str, float]

    @classmethod
    def read(cls, journal: JournalContents, spec: AnalysisSpec, chance: float, level_chance: Mapping[int, float] | None) -> Behavior:
        metrics = event_metrics(journal, spec.emergence.metric)
        chances = {}
        for metric in metrics:
            level = LEVEL_SUFFIX.search(metric)
            metric_chance = level_chance.get(int(level["level"]), chance) if level and level_chance else chance
            chances[metric] = spec.emergence.chance if spec.emergence.chance is not None else metric_chance
        return cls(metrics, {metric: journal.series(metric) for metric in metrics}, chances)


def find_events(behavior: Behavior, threshold_fraction: float, persistence: int) -> list[dict[str, Any]]:
    """One event per behaviour metric: the first step it holds ``threshold_fraction`` of the way from chance
    for ``persistence`` measurements (None when it never does)."""
    events = []
    for metric in behavior.metrics:
        threshold = threshold_value(threshold_fraction, behavior.chance[metric])
        steps, values = behavior.series[metric]
        step = emergence_step(steps, values, threshold, persistence) if len(steps) else None
        events.append({"metric": metric, "step": step, "threshold": threshold, "chance": behavior.chance[metric], "persistence": persistence})
    return events


@dataclass
class Onsets:
    """Each signal's onset and the rule that found it; the collapse of each collapse-and-recover series."""

    onsets: dict[str, tuple[int | None, Rule]] = field(default_factory=dict)
    collapses: dict[str, Collapse] = field(default_factory=dict)
    families: dict[str, list[Collapse]] = field(default_factory=dict)


def find_onsets(
    journal: JournalContents, series: Series, spec: AnalysisSpec, rules: Sequence[DeclaredRule], persistence: int
) -> Onsets:
    """Onsets of every signal in ``series`` by its declared rule, with ``persistence`` measurements to hold.

    Collapse floors and steps are found only for the series judged by the recovery rule (geometry): a floor
    and a top-down order mean something for a representation that collapses and recovers, not for a
    learning coefficient or a commutator norm.
    """
    found = Onsets()
    recovering = {key for key in series if isinstance(rule_for(key, rules), RecoveryRule)}
    for key, (steps, values) in series.items():
        if key not in recovering or not np.isfinite(values).any():
            continue
        match = PER_LAYER_KEY.match(key)
        result = collapse_of(
            key, int(match["layer"]) if match else None, steps, values,
            spec.collapse.collapse_fraction, spec.collapse.recovery_fraction, persistence,
        )
        found.collapses[key] = result
        if match:
            found.families.setdefault(match["family"], []).append(result)
    probes = probe_onsets(journal, persistence)
    for key, (steps, values) in series.items():
        if not len(steps):
            continue
        rule = rule_for(key, rules)
        inputs = onset_inputs(key, found.collapses, probes, spec.precursor.change_point_alpha, persistence)
        found.onsets[key] = (onset_by_rule(rule, steps, values, inputs), rule)
    return found


def lead_of(steps: np.ndarray, onset: int | None, event_step: int | None) -> tuple[int | None, int | None]:
    """(lead in steps, lead in measurement intervals on the signal's own schedule); None without both ends."""
    if onset is None or event_step is None:
        return None, None
    return event_step - onset, lead_in_intervals(steps, onset, event_step)


def verdict_at(steps: np.ndarray, onset: int | None, event_step: int | None, margin: float) -> str:
    """The verdict of one signal against one event at precursor margin ``margin`` (in intervals)."""
    return verdict_for(lead_of(steps, onset, event_step)[1], event_step is not None, margin)
