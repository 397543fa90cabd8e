"""Each signal's onset by the rule its measure declares (``emergence.measures.onset_rules``).

Analysis asks the spec's measures which rule judges which metric key and applies it; it never picks a
rule by a metric's name. The rules that need nothing but the series are computed here; the recovery and
probe rules read what analysis already found (the collapse of each series, the probes' baselines).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emergence.analysis.declarations import declared_by
from emergence.analysis.precursor import change_point_onset
from emergence.measures.onset_rules import (
    DEFAULT_RULE,
    BaselineRatioRule,
    ChangePointRule,
    PeakRule,
    ProbeRule,
    RecoveryRule,
    Rule,
    SigmaRule,
)

DeclaredRule = tuple[str, Rule]


def matches(key: str, pattern: str) -> bool:
    """``geometry/`` (ends in /): every key under it; ``gradient/*_rank``: a glob; else the exact key."""
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(key, pattern)
    return key.startswith(pattern) if pattern.endswith("/") else key == pattern


def measure_onset_rules(measures: Iterable[Any]) -> list[DeclaredRule]:
    """The rules the spec's measures declare, in the spec's order: each measure's ``Options`` (its
    declaration's for a built-in, the class's own for a plugin) validated from the spec's options and asked
    for its ``onset_rules``. Options without the method (a plugin's plain pydantic model) declare none."""
    return declared_by(measures, "onset_rules")


def builtin_onset_rules() -> list[DeclaredRule]:
    """Every built-in measure's rules at its default options: for an analysis called without a spec's measures."""
    from emergence.measures.builtin import BUILTIN_MEASURES

    # model_construct: defaults without validation, since some options (the ablation's features) have none.
    return [rule for declaration in BUILTIN_MEASURES for rule in declaration.Options.model_construct().onset_rules()]


def rule_for(key: str, rules: Sequence[DeclaredRule]) -> Rule:
    """The first declared rule whose pattern matches ``key``; the change-point rule when none does."""
    return next((rule for pattern, rule in rules if matches(key, pattern)), DEFAULT_RULE)


@dataclass(frozen=True)
class OnsetInputs:
    """What some rules read besides the series: analysis finds these for every signal anyway."""

    recovery_onset: int | None  # the recovery onset after this series' collapse floor
    probe_onset: int | None  # the step this probe first beats its untrained-model baseline
    change_point_alpha: float
    persistence: int


def onset_by_rule(rule: Rule, steps: np.ndarray, values: np.ndarray, inputs: OnsetInputs) -> int | None:
    """The onset step of the series under ``rule``; None when the rule finds none."""
    if isinstance(rule, RecoveryRule):
        return inputs.recovery_onset
    if isinstance(rule, ProbeRule):
        return inputs.probe_onset
    if isinstance(rule, PeakRule):
        return peak_onset(steps, values, rule.skip_first)
    if isinstance(rule, BaselineRatioRule):
        return baseline_ratio_onset(steps, values, rule)
    if isinstance(rule, SigmaRule):
        return sigma_onset(steps, values, rule)
    if isinstance(rule, ChangePointRule):
        return change_point_onset(steps, values, inputs.change_point_alpha, inputs.persistence)
    raise TypeError(f"no onset computation for rule {rule!r}")


def finite_series(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(values)
    return np.asarray(steps)[keep], np.asarray(values, dtype=float)[keep]


def peak_onset(steps: np.ndarray, values: np.ndarray, skip_first: int = 0) -> int | None:
    """The step of the maximum after the first ``skip_first`` finite measurements (ties: the first)."""
    steps, values = finite_series(steps, values)
    steps, values = steps[skip_first:], values[skip_first:]
    return int(steps[np.argmax(values)]) if len(values) else None


def first_held(steps: np.ndarray, above: np.ndarray, start: int, hold: int) -> int | None:
    """The first index from ``start`` where ``above`` holds for ``hold`` measurements in a row, as a step."""
    run = 0
    for index in range(start, len(above)):
        run = run + 1 if above[index] else 0
        if run == hold:
            return int(steps[index - hold + 1])
    return None


def baseline_ratio_onset(steps: np.ndarray, values: np.ndarray, rule: BaselineRatioRule) -> int | None:
    """The first measurement after the baseline above ``factor`` x median(baseline) and above ``floor``."""
    steps, values = finite_series(steps, values)
    if len(values) <= rule.baseline_measurements:
        return None
    baseline = float(np.median(values[: rule.baseline_measurements]))
    above = (values > rule.factor * baseline) & (values > rule.floor)
    return first_held(steps, above, rule.baseline_measurements, rule.hold)


def sigma_onset(steps: np.ndarray, values: np.ndarray, rule: SigmaRule) -> int | None:
    """The first measurement after the baseline above its mean + ``n_sd`` standard deviations (ddof 1)."""
    steps, values = finite_series(steps, values)
    if len(values) <= rule.baseline_measurements:
        return None
    baseline = values[: rule.baseline_measurements]
    threshold = float(baseline.mean() + rule.n_sd * baseline.std(ddof=1))
    return first_held(steps, values > threshold, rule.baseline_measurements, rule.hold)


def onset_inputs(key: str, collapses: Mapping[str, Any], probe_onsets: Mapping[str, int | None], alpha: float, persistence: int) -> OnsetInputs:
    collapse = collapses.get(key)
    return OnsetInputs(
        recovery_onset=collapse.recovery_onset if collapse is not None else None,
        probe_onset=probe_onsets.get(key),
        change_point_alpha=alpha,
        persistence=persistence,
    )
