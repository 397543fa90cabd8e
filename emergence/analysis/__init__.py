"""Analysis reads only the journal: emergence events, collapse, top-down order, precursor verdicts.

Because it needs nothing but the journal, it reruns on any finished or interrupted run
(``emergence report RUN_DIR``) without retraining.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emergence.analysis.collapse import top_down
from emergence.analysis.control import ControlRun, control_onsets, control_summary, find_control, specificity
from emergence.analysis.features import feature_verdicts
from emergence.analysis.judge import Behavior, event_metrics, find_events, find_onsets, lead_of, verdict_at
from emergence.analysis.onsets import DeclaredRule, builtin_onset_rules, matches, measure_onset_rules
from emergence.analysis.precursor import xcorr_lag_steps
from emergence.analysis.robustness import robustness
from emergence.analysis.signals import builtin_bookkeeping_keys, measure_bookkeeping_keys, signal_keys
from emergence.analysis.summaries import measure_summaries, run_summaries
from emergence.record import JournalContents, read_journal
from emergence.rundir import ANALYSIS_FILE, VERDICTS_FILE, read_run_spec
from emergence.spec.schema import AnalysisSpec, MonitorSpec, Spec


def is_signal(key: str, pattern: str) -> bool:
    """``geometry/`` (ends in /): every key under it; ``gradient/*_rank``: a glob; else the exact key.

    Exact keys let a spec judge ``curvature/hessian_top`` without its ``.../iterations`` and ``.../residual``.
    """
    return matches(key, pattern)


def analyze(
    journal: JournalContents,
    spec: AnalysisSpec,
    chance: float,
    every: int,
    level_chance: dict[int, float] | None = None,
    onset_rules: Sequence[DeclaredRule] | None = None,
    bookkeeping: Sequence[str] | None = None,
    control: ControlRun | None = None,
) -> dict[str, Any]:
    """``chance`` is the task's chance exact match over its whole test set; ``level_chance`` per level of a mixture.
    ``onset_rules`` and ``bookkeeping``: what the run's measures declare (``measure_onset_rules(spec.measures)``,
    ``measure_bookkeeping_keys(spec.measures)``); None = what every built-in measure declares at its default
    options. ``control``: the run's null control (``find_control``), whose onsets decide ``specific``."""
    rules = builtin_onset_rules() if onset_rules is None else list(onset_rules)
    bookkeeping = builtin_bookkeeping_keys() if bookkeeping is None else list(bookkeeping)
    journal = journal.analysed()  # without the steps the run excluded (a duplicated checkpoint)
    behavior = Behavior.read(journal, spec, chance, level_chance)
    events = find_events(behavior, spec.emergence.threshold, spec.emergence.persistence)

    signals = signal_keys(journal.metric_keys(), spec, bookkeeping)
    series = {key: journal.series(key) for key in signals}  # each series() call walks the whole journal
    series = drop_unreliable(series, journal)
    found = find_onsets(journal, series, spec, rules, spec.collapse.persistence)
    verdicts = []
    for event in events:
        behavior_steps, behavior_values = behavior.series[event["metric"]]
        for key, (onset, onset_rule) in found.onsets.items():
            steps, values = series[key]
            lead_steps, lead_intervals = lead_of(steps, onset, event["step"])
            verdicts.append(
                {
                    "kind": "signal",
                    "signal": key,
                    "event_metric": event["metric"],
                    "event_step": event["step"],
                    "onset_step": onset,
                    "onset_rule": onset_rule.rule,  # type: ignore[attr-defined]
                    "onset_rule_detail": onset_rule.describe(),
                    "lead_steps": lead_steps,
                    "lead_intervals": lead_intervals,
                    "verdict": verdict_at(steps, onset, event["step"], spec.precursor.min_lead_intervals),
                    "xcorr_lag_steps": xcorr_lag_steps(steps, values, behavior_steps, behavior_values, every) if len(behavior_steps) else None,
                }
            )
    analysis: dict[str, Any] = {
        "events": events,
        "signals": list(found.onsets),
        "collapse": [c.as_dict() for c in found.collapses.values()],
        "top_down": [top_down(family, members) for family, members in sorted(found.families.items())],
        "verdicts": verdicts,
        "feature_verdicts": feature_verdicts(journal, events, spec.collapse.persistence),
    }
    if spec.robustness is not None:
        grid = robustness(journal, series, behavior, spec, rules, verdicts)
        for verdict, row in zip(verdicts, grid["rows"], strict=True):
            verdict["robust"], verdict["robust_share"] = row["robust"], row["share"]
        analysis["robustness"] = grid
    if control is not None:
        onsets = control_onsets(control.journal, list(found.onsets), spec, rules) if control.journal is not None else None
        specificity(verdicts, series, onsets, spec.precursor.min_lead_intervals)
        analysis["control"] = control_summary(control, spec, chance, level_chance)
    return analysis


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


def analyze_run(
    run_dir: Path, spec: Spec | MonitorSpec, journal: JournalContents, chance: float, level_chance: dict[int, float] | None = None
) -> dict[str, Any]:
    """Analyse the run in ``run_dir`` as its spec says: the onset rules and bookkeeping its measures declare,
    and its null control (beside it) when the spec asks for one."""
    rules = measure_onset_rules(spec.measures)  # each signal's onset by the rule its measure declares
    bookkeeping = measure_bookkeeping_keys(spec.measures)
    control = find_control(run_dir, spec)
    analysis = analyze(journal, spec.analysis, chance, spec.schedule.every, level_chance, rules, bookkeeping, control)
    analysis["summaries"] = run_summaries(journal.analysed(), measure_summaries(spec.measures), analysis["events"])
    return analysis


def reanalyze(run_dir: Path) -> dict[str, Any]:
    """Analyse a finished or interrupted run again from its journal and resolved spec; rewrite its files."""
    spec = read_run_spec(run_dir).spec
    chance, level_chance = chance_of(spec)
    analysis = analyze_run(run_dir, spec, read_journal(run_dir), chance, level_chance)
    write_analysis(run_dir, analysis)
    return analysis


__all__ = [
    "analyze", "analyze_run", "chance_of", "event_metrics", "is_signal", "measure_bookkeeping_keys", "measure_onset_rules",
    "reanalyze", "write_analysis",
]
