"""Quiet / loud / never verdicts for probed features, from journaled probe and loss series."""

from __future__ import annotations

import numpy as np
import pytest

from emergence.analysis import analyze
from emergence.analysis.features import feature_verdict, first_quiet_step, plateau_loss, probe_onset
from emergence.record import Journal
from emergence.spec.schema import AnalysisSpec


def test_probe_onset_needs_two_standard_errors_held_for_persistence():
    steps = np.arange(0, 500, 50)
    baseline = np.full(10, 0.6)
    se = np.full(10, 0.02)
    accuracy = np.array([0.6, 0.61, 0.65, 0.62, 0.66, 0.7, 0.8, 0.9, 0.9, 0.9])
    # 0.65 beats 0.6 + 0.04 but 0.62 does not: the first lasting onset is step 200 (0.66, 0.70, 0.80).
    assert probe_onset(steps, accuracy, baseline, se, 3) == 200
    assert probe_onset(steps, accuracy, baseline, se, 1) == 100
    assert probe_onset(steps, np.full(10, 0.63), baseline, se, 3) is None
    late = np.r_[np.full(8, 0.6), 0.9, 0.9]
    assert probe_onset(steps, late, baseline, se, 3) == 400  # fewer than 3 left: held to the end counts


def test_plateau_is_the_median_loss_over_the_second_half_before_the_event():
    steps = np.arange(0, 1001, 100)
    loss = np.array([2.0, 1.0, 0.9, 0.8, 0.52, 0.5, 0.5, 0.49, 0.48, 0.1, 0.05])
    assert plateau_loss(steps, loss, 900) == pytest.approx(np.median([0.5, 0.5, 0.49, 0.48]))  # steps 500-800
    assert plateau_loss(steps, loss, None) == pytest.approx(np.median(loss[6:]))  # steps 600-1000


def test_verdict_rules():
    assert feature_verdict(300, 800, 450) == "quiet"
    assert feature_verdict(700, 800, None) == "loud"
    assert feature_verdict(None, 800, None) == "never"
    assert feature_verdict(300, None, None) == "no_emergence"


def test_quiet_needs_a_step_on_the_plateau_before_the_event():
    steps = np.arange(0, 1001, 100)
    loss = np.array([2.0, 1.0, 0.9, 0.52, 0.5, 0.5, 0.49, 0.3, 0.05, 0.01, 0.01])
    plateau = 0.5
    early = np.array([False, True, True, True, True, True, True, True, True, True, True])
    assert first_quiet_step(steps, early, steps, loss, plateau, 800) == 300  # 0.52 is within 5% of 0.5
    only_at_the_fall = steps >= 700
    assert first_quiet_step(steps, only_at_the_fall, steps, loss, plateau, 800) is None  # 0.3 is off the plateau
    assert first_quiet_step(steps, early, steps, loss, plateau, 300) is None  # nothing before the event
    assert first_quiet_step(steps, early, steps, loss, None, 800) is None


def test_feature_verdicts_in_the_analysis(tmp_path):
    journal = Journal(tmp_path)
    for s in range(0, 1001, 50):
        journal.append_values(s, {
            "behavior/test/exact_match": 1.0 if s >= 800 else 0.0,
            "behavior/test/loss": 0.5 if s < 750 else 0.05,
            "probe/carry/accuracy": 0.95 if s >= 300 else 0.7,  # decodable from step 300: quiet
            "probe/carry/baseline": 0.7, "probe/carry/se": 0.01,
            "probe/sum/accuracy": 0.9 if s >= 800 else 0.7,  # decodable with the event: loud
            "probe/sum/baseline": 0.7, "probe/sum/se": 0.01,
            "probe/noise/accuracy": 0.71, "probe/noise/baseline": 0.7, "probe/noise/se": 0.01,  # never
        })
    journal.append_values(1000, {"ablation/carry/drop": 0.6, "ablation/carry/control_drop": 0.02})
    spec = AnalysisSpec(precursor={"signals": ["probe/*/accuracy"]})
    analysis = analyze(journal.read(), spec, chance=0.0, every=50)
    by_feature = {v["feature"]: v for v in analysis["feature_verdicts"]}
    assert (by_feature["carry"]["verdict"], by_feature["carry"]["onset_step"], by_feature["carry"]["lead_steps"]) == ("quiet", 300, 500)
    assert by_feature["carry"]["quiet_step"] == 300  # the loss sits at its plateau (0.5) from the start
    assert by_feature["carry"]["ablation_drop"] == 0.6 and by_feature["carry"]["ablation_control_drop"] == 0.02
    assert (by_feature["sum"]["verdict"], by_feature["sum"]["onset_step"]) == ("loud", 800)
    assert by_feature["noise"]["verdict"] == "never" and by_feature["noise"]["ablation_drop"] is None
    signals = {v["signal"]: v for v in analysis["verdicts"]}
    assert (signals["probe/carry/accuracy"]["onset_rule"], signals["probe/carry/accuracy"]["verdict"]) == ("probe", "precursor")
    assert signals["probe/sum/accuracy"]["verdict"] == "synchronous"
    assert signals["probe/noise/accuracy"]["verdict"] == "no_signal"
