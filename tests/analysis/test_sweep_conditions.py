"""The sweep summary per grid condition: precursors where the capability emerged, false alarms where it did not."""

from __future__ import annotations

from emergence.analysis.sweep import SweepEntry, condition_of, condition_rows, summarize_sweep
from emergence.reports.sweep_page import write_sweep_report
from emergence.sweep_tracking import summary_tables, summary_values

EXACT = "behavior/test/exact_match"
DECAY = "training.optimizer.weight_decay"


def signal(name: str, event: int | None, onset: int | None, word: str, rule: str = "baseline_ratio") -> dict:
    lead = event - onset if event is not None and onset is not None else None
    return {
        "kind": "signal", "signal": name, "event_metric": EXACT, "event_step": event, "onset_step": onset,
        "onset_rule": rule, "lead_steps": lead, "verdict": word,
    }


def run(key: str, decay: float, seed: int, verdicts: list[dict]) -> SweepEntry:
    event = verdicts[0]["event_step"]
    return SweepEntry(
        run_key=key, display_name=key, state="completed", task="modular_arithmetic", level=2, difficulty="L2",
        size="1x64", n_params=65_000, seed=seed, grid_point={DECAY: decay, "seed": seed},
        analysis={"events": [{"metric": EXACT, "step": event}], "collapse": [], "verdicts": verdicts, "feature_verdicts": []},
    )


def grid() -> list[SweepEntry]:
    return [
        # Weight decay 1: grokking at 600 and 700; the defect leads both, the peak lags once.
        run("a", 1.0, 0, [signal("commutator/defect", 600, 300, "precursor"), signal("spectral/gap_ratio", 600, 900, "lagging", "peak")]),
        run("b", 1.0, 1, [signal("commutator/defect", 700, 500, "precursor"), signal("spectral/gap_ratio", 700, 400, "precursor", "peak")]),
        # Weight decay 0: no event; the defect stays quiet once and fires once, the peak always has an onset.
        run("c", 0.0, 0, [signal("commutator/defect", None, None, "no_emergence"), signal("spectral/gap_ratio", None, 50, "no_emergence", "peak")]),
        run("d", 0.0, 1, [signal("commutator/defect", None, 800, "no_emergence"), signal("spectral/gap_ratio", None, 75, "no_emergence", "peak")]),
    ]


def row(rows: list[dict], name: str, decay: float) -> dict:
    (found,) = [r for r in rows if r["signal"] == name and r["condition"] == f"{DECAY}={decay}"]
    return found


def test_condition_is_the_grid_point_without_the_seed():
    entries = grid()
    assert condition_of(entries[0]) == f"{DECAY}=1.0"
    only_seeds = SweepEntry(**{**entries[0].__dict__, "grid_point": {"seed": 3}})
    assert condition_of(only_seeds) == "all"


def test_precursors_with_decay_and_false_alarms_without():
    rows = condition_rows(grid())
    defect_on, defect_off = row(rows, "commutator/defect", 1.0), row(rows, "commutator/defect", 0.0)
    assert (defect_on["runs"], defect_on["events"], defect_on["precursor"], defect_on["false_alarms"]) == (2, 2, 2, 0)
    assert defect_on["leads"] == [300.0, 200.0] and defect_on["mean_lead_steps"] == 250.0
    assert (defect_off["events"], defect_off["no_event"], defect_off["false_alarms"], defect_off["false_alarm_onsets"]) == (0, 2, 1, [800])
    peak_on, peak_off = row(rows, "spectral/gap_ratio", 1.0), row(rows, "spectral/gap_ratio", 0.0)
    assert (peak_on["precursor"], peak_on["lagging"], peak_on["mean_lead_steps"]) == (1, 1, 0.0)
    assert peak_on["mean_precursor_lead_steps"] == 300.0
    assert (peak_off["false_alarms"], peak_off["onset_rules"]) == (2, ["peak"])


def test_the_summary_report_and_trackers_carry_the_conditions(tmp_path):
    summary = summarize_sweep(grid(), "sweepkey", "grokking-weight-decay")
    assert len(summary["by_condition"]) == 4
    files = write_sweep_report(tmp_path, summary)
    assert tmp_path / "sweep_conditions.png" in files
    page = (tmp_path / "report.html").read_text()
    assert "Precursors and false alarms per condition" in page and "sweep_conditions.png" in page
    columns, rows = summary_tables(summary)["sweep_by_condition"]
    assert "false_alarms" in columns and len(rows) == 4
    values = summary_values(summary)
    assert values["false_alarms/commutator/defect/training.optimizer.weight_decay_0.0"] == 1.0
    assert values["precursors/commutator/defect/training.optimizer.weight_decay_1.0"] == 2.0
    assert values["mean_lead_steps/commutator/defect/training.optimizer.weight_decay_1.0"] == 250.0


def test_condition_rows_count_robust_specific_and_trusted_precursors():
    trusted = {**signal("geometry/rankme/resid_post/L1", 300, 100, "precursor"), "robust": True, "specific": True}
    shared_with_control = {**signal("geometry/rankme/resid_post/L1", 400, 50, "precursor"), "robust": True, "specific": False}
    fragile = {**signal("geometry/rankme/resid_post/L1", 500, 400, "precursor"), "robust": False, "specific": True}
    entries = [run(key, 1.0, seed, [verdict]) for seed, (key, verdict) in enumerate(zip("abc", (trusted, shared_with_control, fragile), strict=True))]
    (only,) = condition_rows(entries)
    assert (only["precursor"], only["robust"], only["specific"], only["trusted_precursor"]) == (3, 2, 2, 1)


def test_a_section_in_the_grid_point_is_named_by_what_it_changes():
    entry = grid()[0]
    sectioned = SweepEntry(**{**entry.__dict__, "grid_point": {"task": {"level": 3, "name": "sort"}, "seed": 0}})
    assert condition_of(sectioned) == "task(level=3,name=sort)"
