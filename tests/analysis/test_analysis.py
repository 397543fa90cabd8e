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


def test_departure_onset_is_the_first_lasting_move_away_from_the_start():
    from emergence.analysis.precursor import departure_onset

    steps = np.arange(0, 1001, 50)
    rising = np.where(steps < 400, 1.0, 1.0 + (steps - 400) / 100.0)  # flat, then rises to 7
    assert departure_onset(steps, rising, 0.1, 3) == 500  # 1.0 + 0.6 is the first value beyond 10% of 6
    blip = np.ones(len(steps))
    blip[3] = 5.0  # a single spike is not a lasting departure ...
    blip[10:] = 2.0  # ... the later shift is (10% of the largest excursion, 4, is 0.4)
    assert departure_onset(steps, blip, 0.1, 3) == 500
    assert departure_onset(steps, np.full(len(steps), 3.0), 0.1, 3) is None
    with_nan = rising.copy()
    with_nan[11] = np.nan
    assert departure_onset(steps, with_nan, 0.1, 3) == 500


def test_non_geometry_signals_get_departure_or_peak_onsets(tmp_path):
    journal = Journal(tmp_path)
    for s in range(0, 1001, 50):
        journal.append_values(s, {
            "behavior/test/exact_match": 1.0 if s >= 800 else 0.0,
            "llc/mean": 5.0 if s < 750 else 5.0 + (s - 700) / 10,        # moves with the behaviour
            "spectral/gap_ratio": 10.0 if s == 300 else 2.0,             # peaks early
        })
    spec = AnalysisSpec(precursor={"signals": ["llc/mean", "spectral/gap_ratio"]})
    by_signal = {v["signal"]: v for v in analyze(journal.read(), spec, chance=0.0, every=50)["verdicts"]}
    assert (by_signal["llc/mean"]["onset_step"], by_signal["llc/mean"]["onset_rule"]) == (750, "departure")
    assert by_signal["llc/mean"]["verdict"] == "synchronous"
    assert (by_signal["spectral/gap_ratio"]["onset_step"], by_signal["spectral/gap_ratio"]["verdict"]) == (300, "precursor")
