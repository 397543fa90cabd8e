"""Verdicts you can trust, on hand-made journals whose answers are known: the default signal set, the
robustness grid (a verdict that flips at threshold 0.7), the null control's specific flag (an onset the
control shares), and a signal with no onset."""

from __future__ import annotations

import numpy as np
import pytest

from emergence.analysis import analyze
from emergence.analysis.control import ControlRun, specificity
from emergence.analysis.robustness import grid_settings
from emergence.analysis.signals import builtin_bookkeeping_keys, signal_keys
from emergence.record import Journal, JournalContents
from emergence.spec.schema import AnalysisSpec, RobustnessSpec

EXACT = "behavior/test/exact_match"
STEPS = range(0, 2001, 50)
SHARED, OWN, FLAT = "geometry/rankme/resid_post/L0", "geometry/rankme/resid_post/L1", "geometry/rankme/resid_post/L2"


def recovers_at(step: int, onset: int | None) -> float:
    """Collapses from 12 to a floor of 2 by step 100 and, from ``onset`` on, stays at 8 (above floor + 10% of
    the depth, so the recovery onset is ``onset`` at every persistence); never recovers when ``onset`` is None."""
    if step < 100:
        return 12.0 - step / 10
    return 8.0 if onset is not None and step >= onset else 2.0


def journal_of(tmp_path, name: str, exact: dict[int, float], onsets: dict[str, int | None]) -> JournalContents:
    journal = Journal(tmp_path / name)
    for step in STEPS:
        values = {EXACT: exact.get(step, 0.0), "train/lr": 1e-3, "cost/behavior": 0.01}
        values.update({key: recovers_at(step, onset) for key, onset in onsets.items()})
        values[FLAT] = 5.0  # no collapse, so no onset
        journal.append_values(step, values)
    return journal.read()


def two_stage_behavior() -> dict[int, float]:
    """0.6 from step 1000 (past thresholds 0.3 and 0.5 of the way from chance 0), 1.0 from step 1500 (past 0.7, 0.9)."""
    return {step: 1.0 if step >= 1500 else 0.6 if step >= 1000 else 0.0 for step in STEPS}


def test_a_verdict_that_flips_at_threshold_07_is_not_robust_and_its_share_is_the_agreeing_settings(tmp_path):
    # SHARED recovers at step 1000: synchronous with the event at thresholds 0.3 and 0.5 (lead 0 at every margin),
    # a precursor by 500 steps (10 intervals, more than any margin) at 0.7 and 0.9.
    journal = journal_of(tmp_path, "run", two_stage_behavior(), {SHARED: 1000})
    analysis = analyze(journal, AnalysisSpec(), chance=0.0, every=50)
    by_signal = {v["signal"]: v for v in analysis["verdicts"]}
    flipping = by_signal[SHARED]
    assert flipping["verdict"] == "synchronous" and flipping["robust"] is False
    assert flipping["robust_share"] == pytest.approx(0.5)  # 2 of 4 thresholds x 3 persistences x 3 margins agree
    (row,) = [r for r in analysis["robustness"]["rows"] if r["signal"] == SHARED]
    settings = analysis["robustness"]["settings"]
    assert len(settings) == len(row["grid"]) == 36
    for setting, cell in zip(settings, row["grid"], strict=True):
        assert cell == ("synchronous" if setting["threshold"] < 0.7 else "precursor"), setting
    # A signal with no onset says no_signal whatever the settings: robust, and nothing to be specific about.
    assert by_signal[FLAT]["verdict"] == "no_signal"
    assert by_signal[FLAT]["robust"] is True and by_signal[FLAT]["robust_share"] == 1.0
    assert analysis["robustness"]["plain"] == {"threshold": 0.5, "persistence": 3, "onset_persistence": 3, "margin": 2}


def test_a_verdict_the_same_over_the_grid_is_robust(tmp_path):
    behavior = {step: 1.0 if step >= 1500 else 0.0 for step in STEPS}  # one step function: every threshold at 1500
    analysis = analyze(journal_of(tmp_path, "run", behavior, {SHARED: 500}), AnalysisSpec(), chance=0.0, every=50)
    (verdict,) = [v for v in analysis["verdicts"] if v["signal"] == SHARED]
    assert verdict["verdict"] == "precursor" and verdict["robust"] is True and verdict["robust_share"] == 1.0


def test_a_grid_of_one_setting_and_no_grid(tmp_path):
    journal = journal_of(tmp_path, "run", two_stage_behavior(), {SHARED: 1000})
    narrow = AnalysisSpec(robustness=RobustnessSpec(thresholds=[0.7], persistence=[3], margins=[2]))
    analysis = analyze(journal, narrow, chance=0.0, every=50)
    (verdict,) = [v for v in analysis["verdicts"] if v["signal"] == SHARED]
    assert verdict["robust"] is False and verdict["robust_share"] == 0.0  # the spec's own 0.5 is off this grid
    plain = analyze(journal, AnalysisSpec(robustness=None), chance=0.0, every=50)
    assert "robustness" not in plain and "robust" not in plain["verdicts"][0]
    assert grid_settings(RobustnessSpec())[:2] == [
        {"threshold": 0.3, "persistence": 2, "margin": 1.0}, {"threshold": 0.3, "persistence": 2, "margin": 2.0},
    ]


def test_an_onset_the_control_shares_is_nonspecific(tmp_path):
    exact = {step: 1.0 if step >= 1500 else 0.0 for step in STEPS}
    # The run: SHARED recovers at 500, OWN at 400. The control (nothing learnt, exact match 0 throughout):
    # SHARED recovers at 550 too (one interval apart: within the margin of 2), OWN never.
    real = journal_of(tmp_path, "run", exact, {SHARED: 500, OWN: 400})
    control = journal_of(tmp_path, "control", {}, {SHARED: 550, OWN: None})
    analysis = analyze(real, AnalysisSpec(), chance=0.0, every=50, control=ControlRun("shuffled_labels", "c0ffee", "completed", control))
    by_signal = {v["signal"]: v for v in analysis["verdicts"]}
    assert by_signal[SHARED]["verdict"] == "precursor"  # the plain verdict stays as it was
    assert by_signal[SHARED]["specific"] is False and by_signal[SHARED]["control_onset_step"] == 550
    assert by_signal[OWN]["verdict"] == "precursor"
    assert by_signal[OWN]["specific"] is True and by_signal[OWN]["control_onset_step"] is None
    assert by_signal[FLAT]["specific"] is None  # no onset of its own: nothing to be specific about
    assert analysis["control"] == {
        "kind": "shuffled_labels", "run_key": "c0ffee", "state": "completed",
        "events": [{"metric": EXACT, "step": None}], "final_metric": 0.0,
    }


def test_a_control_that_did_not_finish_leaves_specific_undecided(tmp_path):
    real = journal_of(tmp_path, "run", {step: 1.0 if step >= 1500 else 0.0 for step in STEPS}, {SHARED: 500})
    analysis = analyze(real, AnalysisSpec(), chance=0.0, every=50, control=ControlRun("shuffled_labels", "c0ffee", "failed", None))
    assert {v["specific"] for v in analysis["verdicts"]} == {None}
    assert analysis["control"]["state"] == "failed"
    assert "specific" not in analyze(real, AnalysisSpec(), chance=0.0, every=50)["verdicts"][0]  # no control asked


@pytest.mark.parametrize(("control_onset", "margin", "specific"), [(300, 2, True), (250, 2, False), (200, 2, False), (100, 2, True), (350, 3, True), (300, 3, False)])
def test_specific_is_at_least_the_margin_apart(control_onset, margin, specific):
    steps = np.arange(0, 1001, 50)
    verdicts = [{"signal": "s", "onset_step": 200}]
    specificity(verdicts, {"s": (steps, np.zeros(len(steps)))}, {"s": control_onset}, margin)
    assert verdicts[0]["specific"] is specific


def test_every_measured_signal_is_judged_by_default_but_behaviour_and_bookkeeping(tmp_path):
    keys = [
        EXACT, "behavior/test/loss", "behavior/train/exact_match", "train/lr", "cost/rankme",
        "geometry/rankme/resid_post/L0", "gradient/fisher_rank", "gradient/fisher_rank/trace", "curvature/hessian_top",
        "curvature/hessian_top/iterations", "curvature/hessian_top/residual", "llc/mean", "llc/chain_0", "llc/unreliable",
        "probe/carry/accuracy", "probe/carry/se", "probe/carry/baseline", "ablation/carry/drop", "spectral/gap_ratio",
        "spectral/adiabatic_band", "commutator/defect", "myplugin/signal",
    ]
    judged = signal_keys(keys, AnalysisSpec(), builtin_bookkeeping_keys())
    assert judged == [
        "geometry/rankme/resid_post/L0", "gradient/fisher_rank", "curvature/hessian_top", "llc/mean", "probe/carry/accuracy",
        "spectral/gap_ratio", "commutator/defect", "myplugin/signal",
    ]
    # The emergence metric is never its own precursor, whatever it is called (a Monitor's user names it).
    custom = AnalysisSpec.model_validate({"emergence": {"metric": "eval/accuracy"}})
    assert signal_keys(["eval/accuracy", "eval/accuracy/level_1", "eval/loss"], custom, []) == ["eval/loss"]
    # An explicit list is a filter, and may name what the default leaves out.
    explicit = AnalysisSpec.model_validate({"precursor": {"signals": ["geometry/", "curvature/hessian_top/residual"]}})
    assert signal_keys(keys, explicit, builtin_bookkeeping_keys()) == ["geometry/rankme/resid_post/L0", "curvature/hessian_top/residual"]


def test_default_verdicts_cover_non_geometry_signals_and_collapse_only_geometry(tmp_path):
    journal = Journal(tmp_path)
    rng = np.random.default_rng(0)
    for step in STEPS:
        journal.append_values(step, {
            EXACT: 1.0 if step >= 1500 else 0.0,
            SHARED: recovers_at(step, 500),
            "llc/mean": (10.0 if step < 800 else 30.0) + rng.normal(0, 0.5),  # a shift at 800: a change point
            "llc/std": 1.0 + rng.normal(0, 0.1),
        })
    analysis = analyze(journal.read(), AnalysisSpec(), chance=0.0, every=50)
    by_signal = {v["signal"]: v for v in analysis["verdicts"]}
    assert set(by_signal) == {SHARED, "llc/mean"}
    assert by_signal["llc/mean"]["onset_rule"] == "change_point" and by_signal["llc/mean"]["onset_step"] == 800
    assert by_signal["llc/mean"]["verdict"] == "precursor"
    assert [c["signal"] for c in analysis["collapse"]] == [SHARED]  # a floor means something for geometry only
