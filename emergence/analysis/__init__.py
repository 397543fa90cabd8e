"""Analysis reads only the journal: emergence events, collapse, top-down order, precursor verdicts.

Because it needs nothing but the journal, it reruns on any finished or interrupted run
(``emergence report RUN_DIR``) without retraining.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emergence.analysis.collapse import Collapse, collapse_of, top_down
from emergence.analysis.events import emergence_step, threshold_value
from emergence.analysis.features import feature_verdicts, probe_onsets
from emergence.analysis.onsets import (
    DeclaredRule,
    builtin_onset_rules,
    matches,
    measure_onset_rules,
    onset_by_rule,
    onset_inputs,
    rule_for,
)
from emergence.analysis.precursor import lead_in_intervals, verdict_for, xcorr_lag_steps
from emergence.record import JournalContents, read_journal
from emergence.rundir import ANALYSIS_FILE, VERDICTS_FILE, read_run_spec
from emergence.spec.schema import AnalysisSpec, MonitorSpec, Spec

PER_LAYER_KEY = re.compile(r"^(?P<family>geometry/[^/]+/[^/]+)/L(?P<layer>\d+)$")


def event_metrics(journal: JournalContents, metric: str) -> list[str]:
    """The spec's metric, plus its per-level series when the task mixes difficulty levels."""
    per_level = sorted(k for k in journal.metric_keys() if k.startswith(metric + "/level_"))
    return [metric, *per_level]


def is_signal(key: str, pattern: str) -> bool:
    """``geometry/`` (ends in /): every key under it; ``gradient/*_rank``: a glob; else the exact key.

    Exact keys let a spec judge ``curvature/hessian_top`` without its ``.../iterations`` and ``.../residual``.
    """
    return matches(key, pattern)


LEVEL_SUFFIX = re.compile(r"/level_(?P<level>\d+)$")


def analyze(
    journal: JournalContents,
    spec: AnalysisSpec,
    chance: float,
    every: int,
    level_chance: dict[int, float] | None = None,
    onset_rules: Sequence[DeclaredRule] | None = None,
) -> dict[str, Any]:
    """``chance`` is the task's chance exact match over its whole test set; ``level_chance`` per level of a mixture.
    ``onset_rules``: what the run's measures declare (``measure_onset_rules(spec.measures)``); None = what every
    built-in measure declares at its default options."""
    rules = builtin_onset_rules() if onset_rules is None else list(onset_rules)
    journal = journal.analysed()  # without the steps the run excluded (a duplicated checkpoint)
    events = []
    for metric in event_metrics(journal, spec.emergence.metric):
        level = LEVEL_SUFFIX.search(metric)
        metric_chance = level_chance.get(int(level["level"]), chance) if level and level_chance else chance
        if spec.emergence.chance is not None:
            metric_chance = spec.emergence.chance
        threshold = threshold_value(spec.emergence.threshold, metric_chance)
        steps, values = journal.series(metric)
        step = emergence_step(steps, values, threshold, spec.emergence.persistence) if len(steps) else None
        events.append(
            {"metric": metric, "step": step, "threshold": threshold, "chance": metric_chance, "persistence": spec.emergence.persistence}
        )

    collapses: dict[str, Collapse] = {}
    families: dict[str, list[Collapse]] = {}
    signals = [k for k in journal.metric_keys() if any(is_signal(k, pattern) for pattern in spec.precursor.signals)]
    series = {key: journal.series(key) for key in signals}  # each series() call walks the whole journal
    series = drop_unreliable(series, journal)
    for key in signals:
        match = PER_LAYER_KEY.match(key)
        steps, values = series[key]
        if len(steps) == 0:
            continue
        layer = int(match["layer"]) if match else None
        result = collapse_of(
            key, layer, steps, values, spec.collapse.collapse_fraction, spec.collapse.recovery_fraction, spec.collapse.persistence
        )
        collapses[key] = result
        if match:
            families.setdefault(match["family"], []).append(result)

    probe_onset_by_key = probe_onsets(journal, spec.collapse.persistence)
    onsets = {}
    for key in signals:
        if not len(series[key][0]):
            continue
        rule = rule_for(key, rules)
        inputs = onset_inputs(key, collapses, probe_onset_by_key, spec.precursor.change_point_alpha, spec.collapse.persistence)
        onsets[key] = (onset_by_rule(rule, *series[key], inputs), rule)
    verdicts = []
    for event in events:
        behavior_steps, behavior = journal.series(event["metric"])
        for key, (onset, onset_rule) in onsets.items():
            steps, values = series[key]
            event_step = event["step"]
            lead_steps = lead_intervals = None
            if onset is not None and event_step is not None:
                lead_steps = event_step - onset
                lead_intervals = lead_in_intervals(steps, onset, event_step)
            verdicts.append(
                {
                    "kind": "signal",
                    "signal": key,
                    "event_metric": event["metric"],
                    "event_step": event_step,
                    "onset_step": onset,
                    "onset_rule": onset_rule.rule,  # type: ignore[attr-defined]
                    "onset_rule_detail": onset_rule.describe(),
                    "lead_steps": lead_steps,
                    "lead_intervals": lead_intervals,
                    "verdict": verdict_for(lead_intervals, event_step is not None, spec.precursor.min_lead_intervals),
                    "xcorr_lag_steps": xcorr_lag_steps(steps, values, behavior_steps, behavior, every) if len(behavior_steps) else None,
                }
            )
    return {
        "events": events,
        "collapse": [c.as_dict() for c in collapses.values()],
        "top_down": [top_down(family, members) for family, members in sorted(families.items())],
        "verdicts": verdicts,
        "feature_verdicts": feature_verdicts(journal, events, spec.collapse.persistence),
    }


def drop_unreliable(series: dict[str, tuple[Any, Any]], journal: JournalContents) -> dict[str, tuple[Any, Any]]:
    """Leave out the measurements a measure flagged itself (``<family>/unreliable`` = 1, e.g. an LLC estimate
    whose SGLD trace still rose), so a verdict never rests on a number its own measure disowned."""
    keys = set(journal.metric_keys())
    flags: dict[str, set[int]] = {}
    kept = {}
    for key, (steps, values) in series.items():
        family = key.split("/", 1)[0]
        flag_key = f"{family}/unreliable"
        if flag_key not in keys or key == flag_key:
            kept[key] = (steps, values)
            continue
        if family not in flags:
            flag_steps, flag_values = journal.series(flag_key)
            flags[family] = {int(s) for s, v in zip(flag_steps, flag_values, strict=True) if v > 0}
        reliable = np.array([int(s) not in flags[family] for s in steps], dtype=bool)
        kept[key] = (steps[reliable], values[reliable])
    return kept


def write_analysis(run_dir: Path, analysis: dict[str, Any]) -> None:
    (Path(run_dir) / ANALYSIS_FILE).write_text(json.dumps(analysis, indent=2), encoding="utf-8")
    # verdicts.json: every verdict, signal ("kind": "signal") and probed feature ("kind": "feature").
    everything = analysis["verdicts"] + analysis.get("feature_verdicts", [])
    (Path(run_dir) / VERDICTS_FILE).write_text(json.dumps(everything, indent=2), encoding="utf-8")


def chance_of(spec: Spec | MonitorSpec) -> tuple[float, dict[int, float]]:
    """The task's chance exact match, overall and per level, from its parameters alone (no data set is built);
    for a monitored run, whose metric is its user's, ``analysis.emergence.chance`` (0 when not given)."""
    if isinstance(spec, MonitorSpec):
        return spec.analysis.emergence.chance or 0.0, {}
    from emergence import registry
    from emergence.tasks.build import resolve_params

    task = registry.tasks.get(spec.task.name)()
    levels = [spec.task.level] if isinstance(spec.task.level, int) else spec.task.level
    per_level = {lvl: task.chance_exact_match(resolve_params(task, lvl, spec.task.params)) for lvl in levels}
    return sum(per_level.values()) / len(per_level), per_level


def reanalyze(run_dir: Path) -> dict[str, Any]:
    """Analyse a finished or interrupted run again from its journal and resolved spec; rewrite its files."""
    spec = read_run_spec(run_dir).spec
    chance, level_chance = chance_of(spec)
    rules = measure_onset_rules(spec.measures)
    analysis = analyze(read_journal(run_dir), spec.analysis, chance, spec.schedule.every, level_chance, rules)
    write_analysis(run_dir, analysis)
    return analysis


__all__ = ["analyze", "chance_of", "is_signal", "measure_onset_rules", "reanalyze", "write_analysis"]
