"""Events, collapse and verdicts on series whose answers we know."""

from __future__ import annotations

import numpy as np
import pytest

from emergence.analysis import analyze
from emergence.analysis.collapse import collapse_of, top_down
from emergence.analysis.events import emergence_step, threshold_value
from emergence.analysis.precursor import verdict_for, xcorr_lag_steps
from emergence.record import Journal
from emergence.spec.schema import AnalysisSpec

STEPS = np.arange(0, 1001, 50)


def test_event_needs_persistence():
    values = np.array([0, 0, 0.6, 0.2, 0.6, 0.7, 0.9, 1.0])
    steps = np.arange(len(values)) * 10
    assert emergence_step(steps, values, 0.5, persistence=3) == 40
    assert emergence_step(steps, values, 0.5, persistence=1) == 20
    assert emergence_step(steps, values, 0.95, persistence=3) is None
    assert threshold_value(0.5, 0.2) == pytest.approx(0.6)


def test_collapse_floor_step_and_recovery():
    values = np.array([10, 8, 4, 2.2, 2.0, 2.1, 2.5, 3.5, 5, 7, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8], dtype=float)
    result = collapse_of("s", 0, STEPS, values, 0.05, 0.10, 3)
    assert (result.floor, result.floor_step) == (2.0, 200)
    assert result.collapse_step == 150  # 2.2 is within 5% of the depth (0.4) above the floor
    assert result.recovery_onset == 350  # 3.5 > 2.0 + 0.8 and stays there


def test_flat_series_has_no_collapse_and_no_onset():
    result = collapse_of("s", 0, STEPS, np.full(len(STEPS), 5.0), 0.05, 0.10, 3)
    assert result.collapse_step is None and result.recovery_onset is None


def test_top_down_sign():
    from emergence.analysis.collapse import Collapse

    deep_first = [Collapse("a", 0, 1, 0, 0, 300, None), Collapse("b", 1, 1, 0, 0, 200, None), Collapse("c", 2, 1, 0, 0, 100, None)]
    assert top_down("f", deep_first)["holds"] is True
    assert top_down("f", deep_first)["spearman_rho"] == pytest.approx(-1.0)
    shallow_first = [Collapse("a", 0, 1, 0, 0, 100, None), Collapse("b", 1, 1, 0, 0, 300, None)]
    assert top_down("f", shallow_first)["holds"] is False


@pytest.mark.parametrize(
    ("lead", "event", "expected"),
    [(5, True, "precursor"), (2, True, "precursor"), (1, True, "synchronous"), (-1, True, "synchronous"),
     (-2, True, "lagging"), (None, True, "no_signal"), (3, False, "no_emergence")],
)
def test_verdict_rules(lead, event, expected):
    assert verdict_for(lead, event, 2) == expected


def test_xcorr_finds_a_known_lead():
    steps = np.arange(0, 2001, 10)
    behavior = 1 / (1 + np.exp(-(steps - 1200) / 40))
    signal = 1 / (1 + np.exp(-(steps - 900) / 40))
    assert xcorr_lag_steps(steps, signal, steps, behavior, 10) == pytest.approx(300, abs=20)


def test_end_to_end_analysis_of_a_synthetic_journal(tmp_path):
    journal = Journal(tmp_path)
    steps = list(range(0, 2001, 50))
    for s in steps:
        exact = 1.0 if s >= 1500 else 0.0
        early = 2 + (0 if s < 300 else min(10, (s - 300) / 50)) if s > 100 else 12 - s / 10  # > floor + 10% of depth from 400
        late = 12 - s / 50 if s < 500 else (2 if s < 1700 else 8)  # recovers after the event
        journal.append_values(s, {"behavior/test/exact_match": exact, "geometry/rankme/resid_post/L0": early,
                                  "geometry/rankme/resid_post/L1": late})
    analysis = analyze(journal.read(), AnalysisSpec(), chance=0.0, every=50)
    assert analysis["events"][0]["step"] == 1500
    by_signal = {v["signal"]: v for v in analysis["verdicts"]}
    assert by_signal["geometry/rankme/resid_post/L0"]["verdict"] == "precursor"
    assert by_signal["geometry/rankme/resid_post/L0"]["onset_step"] == 400
    assert by_signal["geometry/rankme/resid_post/L0"]["lead_steps"] == 1100
    assert by_signal["geometry/rankme/resid_post/L1"]["verdict"] == "lagging"
    assert {"signal", "event_metric", "event_step", "onset_step", "lead_steps", "verdict"} <= set(analysis["verdicts"][0])


def test_each_level_of_a_mixture_gets_its_own_event_against_its_own_chance(tmp_path):
    journal = Journal(tmp_path)
    for s in range(0, 1001, 50):
        # Level 1 sits at 0.55 throughout: above half way for chance 0, below it for chance 0.3 (threshold 0.65).
        journal.append_values(s, {"behavior/test/exact_match": 0.5, "behavior/test/exact_match/level_1": 0.55,
                                  "behavior/test/exact_match/level_2": 1.0 if s >= 600 else 0.0})
    analysis = analyze(journal.read(), AnalysisSpec(), chance=0.15, every=50, level_chance={1: 0.3, 2: 0.0})
    events = {e["metric"]: e for e in analysis["events"]}
    assert events["behavior/test/exact_match/level_1"]["step"] is None
    assert events["behavior/test/exact_match/level_1"]["threshold"] == pytest.approx(0.65)
    assert events["behavior/test/exact_match/level_2"]["step"] == 600
    assert events["behavior/test/exact_match"]["chance"] == pytest.approx(0.15)


def test_signal_patterns_are_prefixes_globs_or_exact_keys():
    from emergence.analysis import is_signal

    assert is_signal("geometry/rankme/resid_post/L1", "geometry/")
    assert is_signal("gradient/fisher_rank", "gradient/*_rank") and not is_signal("gradient/fisher_rank/trace", "gradient/*_rank")
    assert is_signal("curvature/hessian_top", "curvature/hessian_top")
    assert not is_signal("curvature/hessian_top/residual", "curvature/hessian_top")
    assert not is_signal("geometry_extra/x", "geometry/")


def test_change_point_onset_is_the_step_after_the_most_significant_shift():
    from emergence.analysis.precursor import change_point_onset

    rng = np.random.default_rng(3)
    steps = np.arange(0, 2000, 100)
    shifted = np.r_[rng.normal(10.0, 1.0, 12), rng.normal(4.0, 1.0, 8)]
    assert change_point_onset(steps, shifted, 0.05, 3) == 1200
    spiky = shifted.copy()
    spiky[4] = 1e6  # one outlying estimate does not move a rank-based change point
    assert change_point_onset(steps, spiky, 0.05, 3) == 1200
    assert change_point_onset(steps, rng.normal(0.0, 1.0, 20), 0.05, 3) is None  # noise has no onset
    assert change_point_onset(steps, np.full(20, 3.0), 0.05, 3) is None
    late = np.r_[np.full(18, 5.0), 1.0, 1.0]  # a shift in the last two points is shorter than persistence
    assert change_point_onset(steps, late, 0.05, 3) != 1800
    with_nan = shifted.copy()
    with_nan[15] = np.nan
    assert change_point_onset(steps, with_nan, 0.05, 3) == 1200


def test_change_point_permutation_test_holds_its_false_alarm_rate():
    from emergence.analysis.precursor import change_point_onset

    rng = np.random.default_rng(4)
    steps = np.arange(30)
    alarms = sum(change_point_onset(steps, rng.normal(size=30), 0.05, 3) is not None for _ in range(200))
    assert alarms <= 20  # 5% of 200 is 10; 20 would be far outside binomial noise


def test_unreliable_measurements_are_left_out_of_onsets(tmp_path):
    journal = Journal(tmp_path)
    for s in range(0, 1001, 50):
        rising = s >= 750
        journal.append_values(s, {
            "behavior/test/exact_match": 1.0 if s >= 800 else 0.0,
            "llc/mean": (20.0 if rising else 5.0) + (60.0 if s == 200 else 0.0),
            "llc/unreliable": 1.0 if s in (200, 250, 300) else 0.0,
        })
    contents = journal.read()
    from emergence.analysis import drop_unreliable

    steps, _ = drop_unreliable({"llc/mean": contents.series("llc/mean")}, contents)["llc/mean"]
    assert 200 not in steps and 300 not in steps and 0 in steps and 750 in steps


def test_non_geometry_signals_get_change_point_or_peak_onsets(tmp_path):
    journal = Journal(tmp_path)
    for s in range(0, 1001, 50):
        journal.append_values(s, {
            "behavior/test/exact_match": 1.0 if s >= 800 else 0.0,
            "llc/mean": 5.0 if s < 750 else 5.0 + (s - 700) / 10,        # moves with the behaviour
            "spectral/gap_ratio": 10.0 if s == 300 else 2.0,             # peaks early
        })
    spec = AnalysisSpec(precursor={"signals": ["llc/mean", "spectral/gap_ratio"]})
    by_signal = {v["signal"]: v for v in analyze(journal.read(), spec, chance=0.0, every=50)["verdicts"]}
    assert (by_signal["llc/mean"]["onset_step"], by_signal["llc/mean"]["onset_rule"]) == (750, "change_point")
    assert by_signal["llc/mean"]["verdict"] == "synchronous"
    assert (by_signal["spectral/gap_ratio"]["onset_step"], by_signal["spectral/gap_ratio"]["verdict"]) == (300, "precursor")
