"""The sweep summary's replicates: rates with Wilson intervals, median leads with bootstrap intervals over
runs, the collapse floor's CV with an interval, the top-down rate, robust and specific shares, and
difficulty classes from the level or the spec, never from how fast a run learnt."""

from __future__ import annotations

import pytest

from emergence.analysis.intervals import median_interval, wilson_interval
from emergence.analysis.sweep import SweepEntry, difficulty_label, summarize_sweep, sweep_entries
from emergence.reports.sweep_page import render_sweep_html
from emergence.rundir import RunOutcome
from emergence.spec.grid import expand
from emergence.sweep_tracking import summary_tables, summary_values

EXACT = "behavior/test/exact_match"
L0 = "geometry/rankme/resid_post/L0"


def judged(onset: int | None, event: int | None, verdict: str, robust: bool | None = True, specific: bool | None = True) -> dict:
    lead = event - onset if onset is not None and event is not None else None
    return {
        "kind": "signal", "signal": L0, "event_metric": EXACT, "event_step": event, "onset_step": onset,
        "lead_steps": lead, "verdict": verdict, "robust": robust, "robust_share": 1.0 if robust else 0.5,
        "specific": specific, "control_onset_step": None,
    }


def run(key: str, seed: int, verdicts: list[dict], *, size: str = "micro", floor: float = 2.0, rho: float | None = -1.0, difficulty: str = "L2") -> SweepEntry:
    analysis = {
        "events": [{"metric": EXACT, "step": verdicts[0]["event_step"]}],
        "verdicts": verdicts,
        "collapse": [{"signal": L0, "layer": 0, "initial": 10.0, "floor": floor, "floor_step": 50}],
        "top_down": [{"family": "geometry/rankme/resid_post", "spearman_rho": rho, "holds": rho is not None and rho < 0}],
        "feature_verdicts": [],
    }
    return SweepEntry(key, key, "completed", "binary_addition", 2, difficulty, size, 1000 if size == "micro" else 4000, seed, {"seed": seed}, analysis)


def test_rates_leads_and_trust_carry_their_intervals():
    entries = [
        run("a", 0, [judged(100, 500, "precursor")]),
        run("b", 1, [judged(200, 500, "precursor", specific=False)]),  # the control shares its onset
        run("c", 2, [judged(450, 500, "synchronous", robust=False)]),
        run("d", 3, [judged(None, 500, "no_signal", specific=None)]),
    ]
    summary = summarize_sweep(entries, "k", "demo")
    (row,) = summary["precursor_rate"]["by_family"]
    assert (row["n"], row["precursor"], row["rate"]) == (4, 2, 0.5)
    assert (row["rate_low"], row["rate_high"]) == pytest.approx(wilson_interval(2, 4))
    # One lead per run (400, 300, 50): the median over runs and the bootstrap interval over the same three.
    assert row["median_lead_steps"] == 300 and row["lead_runs"] == 3
    assert (row["median_lead_low"], row["median_lead_high"]) == pytest.approx(median_interval([400.0, 300.0, 50.0]))
    assert row["robust"] == 3 and row["robust_share"] == pytest.approx(0.75)
    assert row["specific"] == 2 and row["specific_known"] == 3 and row["specific_share"] == pytest.approx(2 / 3)
    assert row["trusted_precursor"] == 1 and row["trusted_rate"] == pytest.approx(0.25)
    assert (row["trusted_low"], row["trusted_high"]) == pytest.approx(wilson_interval(1, 4))
    values = summary_values(summary)
    cell = "geometry/rankme/resid_post/L2/micro"
    assert values[f"precursor_rate/{cell}"] == 0.5 and values[f"precursor_rate_low/{cell}"] == pytest.approx(row["rate_low"])
    assert values[f"trusted_rate/{cell}"] == 0.25 and f"median_lead_high/{cell}" in values
    assert "sweep_top_down" in summary_tables(summary)
    page = render_sweep_html(summary, [])
    assert "50% (15%–85%)" in page and "Top-down collapse" in page


def test_without_a_control_the_trusted_rate_is_undecided():
    entries = [run("a", 0, [judged(100, 500, "precursor", specific=None)]), run("b", 1, [judged(100, 500, "precursor", specific=None)])]
    (row,) = summarize_sweep(entries, "k", "demo")["precursor_rate"]["by_family"]
    assert row["specific_share"] is None and row["trusted_rate"] is None and row["trusted_low"] is None
    assert row["robust_share"] == 1.0


def test_top_down_rate_and_the_floor_cv_interval_over_seeds():
    entries = [
        run("a", 0, [judged(100, 500, "precursor")], size="micro", floor=2.0, rho=-1.0),
        run("b", 1, [judged(100, 500, "precursor")], size="micro", floor=2.2, rho=0.5),
        run("c", 0, [judged(100, 500, "precursor")], size="tiny", floor=2.1, rho=-0.8),
        run("d", 1, [judged(100, 500, "precursor")], size="tiny", floor=2.3, rho=None),  # undecided: left out
    ]
    summary = summarize_sweep(entries, "k", "demo")
    rows = {row["size"]: row for row in summary["top_down"]}
    assert (rows["all"]["n"], rows["all"]["top_down"], rows["all"]["rate"]) == (3, 2, pytest.approx(2 / 3))
    assert (rows["all"]["rate_low"], rows["all"]["rate_high"]) == pytest.approx(wilson_interval(2, 3))
    assert (rows["micro"]["n"], rows["micro"]["top_down"]) == (2, 1) and (rows["tiny"]["n"], rows["tiny"]["top_down"]) == (1, 1)
    floor = next(row for row in summary["collapse_floor"]["rows"] if row["signal"] == L0)
    assert floor["cv_low"] <= floor["cv"] <= floor["cv_high"]
    one_seed = summarize_sweep(entries[::2], "k", "demo")
    assert next(row for row in one_seed["collapse_floor"]["rows"] if row["signal"] == L0)["cv_low"] is None


def test_difficulty_is_the_level_or_the_spec_s_class_never_the_speed(tmp_path):
    assert difficulty_label(2) == "L2" and difficulty_label(2, "hard") == "hard"
    raw = {
        "name": "classes", "task": {"name": "binary_addition", "level": 1, "difficulty": "easy"},
        "grid": {"seed": [0, 1]}, "tracking": [], "execution": {"output_dir": str(tmp_path)},
    }
    runs = expand(raw, "<dict>")
    plain = expand({**raw, "task": {"name": "binary_addition", "level": 1}}, "<dict>")
    assert [r.run_key for r in runs] == [r.run_key for r in plain]  # a label only: the same training, the same runs
    outcomes = [RunOutcome(r.run_key, tmp_path, "completed", None, [], [], {"verdicts": []}) for r in runs]
    assert {entry.difficulty for entry in sweep_entries(runs, outcomes)} == {"easy"}
    # One class per level, as a grid over levels needs: each run gets its level's, a mixture's events theirs.
    per_level = expand({**raw, "task": {"name": "binary_addition", "level": 1, "difficulty": {1: "easy", 2: "hard"}}, "grid": {"task.level": [1, 2, [1, 2]]}}, "<dict>")
    outcomes = [RunOutcome(r.run_key, tmp_path, "completed", None, [], [], {"verdicts": []}) for r in per_level]
    entries = sweep_entries(per_level, outcomes)
    assert [e.difficulty for e in entries] == ["easy", "hard", "easy+hard"]
    mixture = entries[2]
    mixture.analysis["verdicts"] = [{**judged(100, 500, "precursor"), "event_metric": f"{EXACT}/level_2"}]
    (row,) = summarize_sweep([mixture], "k", "demo")["precursor_rate"]["by_family"]
    assert row["difficulty"] == "hard"
    # A fast run and a slow one on the same level are the same class: the class is fixed before training.
    fast = run("a", 0, [judged(None, 50, "no_signal")])
    slow = run("b", 1, [judged(100, 2000, "precursor")])
    (row,) = summarize_sweep([fast, slow], "k", "demo")["precursor_rate"]["by_family"]
    assert row["difficulty"] == "L2" and row["n"] == 2
