"""Onset rules on hand-made series, and analysis applying the rule each measure declares (never one by name)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emergence.analysis import analyze, measure_onset_rules
from emergence.analysis.onsets import (
    OnsetInputs,
    baseline_ratio_onset,
    onset_by_rule,
    peak_onset,
    rule_for,
    sigma_onset,
)
from emergence.measures.onset_rules import BaselineRatioRule, ChangePointRule, PeakRule, SigmaRule
from emergence.record import Journal
from emergence.spec.schema import AnalysisSpec, MeasureSpec

STEPS = np.arange(0, 1000, 50)


def test_baseline_ratio_needs_both_the_factor_and_the_floor():
    values = np.array([1.0, 2.0, 1.5, 2.0, 14.0, 19.0, 25.0, 30.0])  # baseline median 1.5: 10x = 15
    steps = STEPS[: len(values)]
    assert baseline_ratio_onset(steps, values, BaselineRatioRule()) == 300  # 25 > 15 and > 20; 19 is under the floor
    assert baseline_ratio_onset(steps, values, BaselineRatioRule(floor=0)) == 250  # 19 > 15
    assert baseline_ratio_onset(steps, values, BaselineRatioRule(factor=100)) is None
    # A large baseline: the factor decides, the floor is passed from the start.
    big = np.array([50.0, 60.0, 55.0, 100.0, 600.0])
    assert baseline_ratio_onset(STEPS[:5], big, BaselineRatioRule()) == 200
    # The baseline measurements themselves are never the onset, and held means consecutive.
    flicker = np.array([1.0, 1.0, 1.0, 30.0, 1.0, 30.0, 30.0])
    assert baseline_ratio_onset(STEPS[:7], flicker, BaselineRatioRule(hold=2)) == 250
    assert baseline_ratio_onset(STEPS[:3], flicker[:3], BaselineRatioRule()) is None  # nothing after the baseline


def test_sigma_rule_uses_mean_plus_sd_of_the_first_measurements_held():
    rng = np.random.default_rng(0)
    baseline = 10 + rng.normal(0, 1, 10)
    threshold = baseline.mean() + 3 * baseline.std(ddof=1)
    after = np.array([threshold - 0.1, threshold + 1, threshold - 1, threshold + 1, threshold + 2, threshold + 3])
    values = np.concatenate([baseline, after])
    steps = np.arange(len(values)) * 10
    assert sigma_onset(steps, values, SigmaRule()) == 130  # the single excursion at 110 does not hold 2
    assert sigma_onset(steps, values, SigmaRule(hold=1)) == 110
    assert sigma_onset(steps, values, SigmaRule(n_sd=100)) is None


def test_peak_after_skipping_the_first_measurements_and_nan_skipped():
    values = np.array([9.0, 8.0, 7.0, 1.0, 3.0, np.nan, 5.0, 2.0])
    assert peak_onset(STEPS[:8], values) == 0
    assert peak_onset(STEPS[:8], values, skip_first=3) == 300


def test_rules_dispatch_and_the_first_declared_pattern_wins():
    rules = [("commutator/qk/", PeakRule(skip_first=1)), ("commutator/", BaselineRatioRule()), ("x/*_rank", SigmaRule())]
    assert rule_for("commutator/qk/L0", rules) == PeakRule(skip_first=1)
    assert rule_for("commutator/defect", rules) == BaselineRatioRule()
    assert rule_for("x/fisher_rank", rules) == SigmaRule()
    assert rule_for("behavior/test/loss", rules) == ChangePointRule()
    inputs = OnsetInputs(recovery_onset=None, probe_onset=None, change_point_alpha=0.05, persistence=3)
    values = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 50.0, 50.0, 50.0, 50.0, 50.0, 50.0])
    assert onset_by_rule(rule_for("commutator/defect", rules), STEPS[:12], values, inputs) == 300
    assert onset_by_rule(ChangePointRule(), STEPS[:12], values, inputs) == 300


def test_analysis_applies_the_rule_each_measure_declares_and_records_it(tmp_path):
    """One series, two names: whichever rule the spec's measures declare for a key is the one used."""
    journal = Journal(tmp_path / "journal.jsonl")
    defect = [1, 1.2, 0.9, 1.6, 1.7, 30, 40, 60, 80, 90, 95, 96, 97, 98, 99, 99, 99, 99, 99, 99]
    qk = [9, 10, 8, 7, 12, 11, 6, 5, 4, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]  # peaks at index 4 after the first 3
    behaviour = [0.0] * 12 + [1.0] * 8
    for step, d, q, b in zip(STEPS, defect, qk, behaviour, strict=True):
        journal.append_values(int(step), {"commutator/defect": d, "commutator/qk/L0": q, "behavior/test/exact_match": b})
    spec = AnalysisSpec.model_validate({"precursor": {"signals": ["commutator/"]}})
    measures = [MeasureSpec(name="commutator_defect"), MeasureSpec(name="qk_commutator")]
    verdicts = {v["signal"]: v for v in analyze(journal.read(), spec, 0.0, 50, onset_rules=measure_onset_rules(measures))["verdicts"]}
    assert (verdicts["commutator/defect"]["onset_step"], verdicts["commutator/defect"]["onset_rule"]) == (250, "baseline_ratio")
    assert verdicts["commutator/defect"]["onset_rule_detail"] == "baseline_ratio(factor=10.0, floor=20.0, baseline_measurements=3, hold=1)"
    assert (verdicts["commutator/qk/L0"]["onset_step"], verdicts["commutator/qk/L0"]["onset_rule"]) == (200, "peak")
    assert verdicts["commutator/defect"]["event_step"] == 600 and verdicts["commutator/defect"]["verdict"] == "precursor"
    # A user's rule in the measure's options replaces the default: sigma over the first 3, held 2.
    sigma = [MeasureSpec.model_validate({"name": "commutator_defect", "onset": {"rule": "sigma", "baseline_measurements": 3}})]
    verdicts = {v["signal"]: v for v in analyze(journal.read(), spec, 0.0, 50, onset_rules=measure_onset_rules(sigma))["verdicts"]}
    assert (verdicts["commutator/defect"]["onset_rule"], verdicts["commutator/defect"]["onset_step"]) == ("sigma", 150)
    # No measure declares the QK key here: it falls to the change point, and says so.
    assert verdicts["commutator/qk/L0"]["onset_rule"] == "change_point"
    json.dumps(verdicts)  # recorded as plain JSON in verdicts.json


def test_an_unknown_rule_in_a_spec_names_the_field_and_the_allowed_rules(tmp_path):
    from emergence.spec.load import SpecError, load_spec

    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\ntask: {name: modular_arithmetic, params: {p: 7}, train_size: 20, test_size: 20, diagnostic_size: 10}\n"
        "measures:\n  - {name: commutator_defect, onset: {rule: hunch}}\ntracking: []\n"
    )
    with pytest.raises(SpecError) as error:
        load_spec(path)
    message = str(error.value)
    assert "bad.yaml" in message and "measures.0.onset" in message and "hunch" in message
    for rule in ("baseline_ratio", "sigma", "peak", "change_point"):
        assert rule in message
