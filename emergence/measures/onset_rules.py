"""Onset rules: how analysis finds the step where a signal "turned on", declared by the measure that makes it.

A measure knows what its numbers do when something starts: geometry collapses and recovers, the spectral
gap ratio peaks, the commutator defect jumps by an order of magnitude over its early level. So each
measure's options say which rule judges which of its metric keys (``MeasureOptions.onset_rules``), and
analysis applies whatever is declared, never a rule chosen by a metric's name. A key that no measure
claims (behaviour, or a plugin's numbers without a declaration) gets the change-point rule.

Light to import (pydantic only): the spec validates a rule given in a measure's options, and the
built-in declarations name their rules, before torch is imported. The rules are computed in
``emergence.analysis.onsets``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def describe(self) -> str:
        """The rule and its settings in one line, as ``verdicts.json`` records it: ``peak(skip_first=3)``."""
        settings = ", ".join(f"{name}={value}" for name, value in self.model_dump(exclude={"rule"}).items())
        return f"{self.rule}({settings})"  # type: ignore[attr-defined]


class RecoveryRule(Rule):
    """The recovery onset after the collapse floor (METHODS.md, "Collapse and top-down order"): geometry."""

    rule: Literal["recovery"] = "recovery"


class PeakRule(Rule):
    """The step of the series' maximum (METHODS.md: the spectral gap ratio). ``skip_first`` leaves out the
    first measurements, for a signal that starts high at initialisation (the QK commutator of random weights)."""

    rule: Literal["peak"] = "peak"
    skip_first: NonNegativeInt = Field(0, description="measurements at the start that cannot be the peak")


class ChangePointRule(Rule):
    """The first step after the most significant shift in level (Pettitt), at ``analysis.precursor.change_point_alpha``."""

    rule: Literal["change_point"] = "change_point"


class ProbeRule(Rule):
    """The first step a probe beats its untrained-model baseline (METHODS.md, "Quiet features")."""

    rule: Literal["probe"] = "probe"


class BaselineRatioRule(Rule):
    """The first measurement after the baseline where the value exceeds ``factor`` times the median of the
    first ``baseline_measurements`` and the absolute ``floor`` too, for ``hold`` measurements in a row.

    The rule of the commutator-defect replications (10x the median of the first 3, and above 20): the
    factor alone fires on a signal whose baseline is tiny, the floor alone on one whose baseline is large."""

    rule: Literal["baseline_ratio"] = "baseline_ratio"
    factor: PositiveFloat = Field(10.0, description="the value must exceed this multiple of the baseline")
    floor: float = Field(20.0, description="and this absolute value")
    baseline_measurements: PositiveInt = Field(3, description="the baseline is the median of this many first measurements")
    hold: PositiveInt = Field(1, description="consecutive measurements that must satisfy both")


class SigmaRule(Rule):
    """The first measurement after the baseline where the value exceeds the baseline's mean plus ``n_sd``
    standard deviations (over the first ``baseline_measurements``), for ``hold`` measurements in a row."""

    rule: Literal["sigma"] = "sigma"
    n_sd: PositiveFloat = Field(3.0, description="standard deviations above the baseline mean")
    baseline_measurements: int = Field(10, ge=2, description="measurements in the baseline (two at least, for a deviation)")
    hold: PositiveInt = Field(2, description="consecutive measurements that must exceed it")


OnsetRule = Annotated[
    RecoveryRule | PeakRule | ChangePointRule | ProbeRule | BaselineRatioRule | SigmaRule, Field(discriminator="rule")
]
# A rule a user may set on a measure that jumps upward from an early level (the commutator defect).
ThresholdOnsetRule = Annotated[BaselineRatioRule | SigmaRule, Field(discriminator="rule")]

# (metric-key pattern, rule): the pattern as ``precursor.signals`` reads one: a prefix ending in ``/``, a
# glob, or an exact key. The first declared pattern that matches a key decides its rule.
DeclaredRules = tuple[tuple[str, Rule], ...]

RULE_NAMES: tuple[str, ...] = ("recovery", "peak", "change_point", "probe", "baseline_ratio", "sigma")
DEFAULT_RULE = ChangePointRule()  # for a key no measure declares a rule for
