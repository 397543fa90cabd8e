"""Whole-run summaries declared by a measure: the spectral gap position's most frequent value, per run and per
sweep condition, in analysis.json, the trackers' summary, the run report and the sweep report."""

from __future__ import annotations

import numpy as np

from emergence.analysis import analyze_run
from emergence.analysis.summaries import measure_summaries, mode_summary, run_summaries
from emergence.analysis.sweep import SweepEntry, summarize_sweep, summary_rows
from emergence.record import Journal, read_journal
from emergence.reports.sweep_page import write_sweep_report
from emergence.spec.schema import MeasureSpec
from emergence.sweep_tracking import summary_values
from emergence.tracking import tracker_summary


def test_the_mode_its_share_and_the_mode_on_each_side_of_the_event():
    steps = np.arange(0, 200, 20)
    k_star = np.array([np.nan, 8, 8, 9, 1, 1, 1, 2, 1, 1])
    summary = mode_summary(steps, k_star, event_step=80)
    assert summary["value"] == 1.0 and summary["measurements"] == 9
    assert summary["share"] == 5 / 9
    assert summary["counts"] == {"1": 5, "2": 1, "8": 2, "9": 1}
    assert (summary["mode_before_event"], summary["mode_from_event"]) == (8.0, 1.0)
    # a tie goes to the smaller value, and no event means no split
    tied = mode_summary(steps[:4], np.array([2.0, 1.0, 2.0, 1.0]), event_step=None)
    assert tied["value"] == 1.0 and "mode_before_event" not in tied
    assert mode_summary(steps[:2], np.array([np.nan, np.nan]), None) is None


def test_only_what_a_measure_declares_is_summarised(tmp_path):
    assert measure_summaries([MeasureSpec(name="spectral_edge")]) == [("spectral/k_star", "mode")]
    assert measure_summaries([MeasureSpec(name="rankme"), MeasureSpec(name="qk_commutator")]) == []
    journal = Journal(tmp_path)
    for step, (k, ratio) in enumerate([(2, 1.5), (2, 1.7), (1, 3.0)]):
        journal.append_values(step * 25, {"spectral/k_star": float(k), "spectral/gap_ratio": ratio})
    summaries = run_summaries(read_journal(tmp_path), [("spectral/k_star", "mode")], [{"step": None}])
    assert list(summaries) == ["spectral/k_star"] and summaries["spectral/k_star"]["value"] == 2.0


def test_a_trained_runs_analysis_and_tracker_summary_carry_k_star(tiny_raw, write_spec):
    from emergence.runner import run_one
    from emergence.spec import resolve

    tiny_raw["measures"] = [{"name": "spectral_edge", "window": 3}]
    tiny_raw["training"]["steps"] = 40
    (run,) = resolve(str(write_spec(tiny_raw)))
    outcome = run_one(run)
    analysis = analyze_run(outcome.run_dir, run.spec, read_journal(outcome.run_dir), 0.0)
    whole_run = analysis["summaries"]["spectral/k_star"]
    _, k_star = read_journal(outcome.run_dir).series("spectral/k_star")
    finite = k_star[np.isfinite(k_star)]
    assert whole_run["measurements"] == len(finite) > 0
    assert whole_run["share"] == np.mean(finite == whole_run["value"])
    summary = tracker_summary(analysis)
    assert summary["summary/spectral/k_star/mode"] == whole_run["value"]
    assert "spectral/k_star: mode" in (outcome.run_dir / "report.html").read_text(encoding="utf-8")


def entry(key: str, optimizer: str, seed: int, k_star: float, share: float) -> SweepEntry:
    return SweepEntry(
        run_key=key, display_name=key, state="completed", task="modular_arithmetic", level=2, difficulty="L2",
        size="1x64", n_params=65_000, seed=seed, grid_point={"training.optimizer.name": optimizer, "seed": seed},
        analysis={"events": [], "collapse": [], "verdicts": [], "feature_verdicts": [],
                  "summaries": {"spectral/k_star": {"statistic": "mode", "value": k_star, "share": share}}},
    )


def test_the_sweep_compares_conditions_in_its_summary_report_and_tracker(tmp_path):
    entries = [entry("a", "adamw", 0, 2.0, 0.6), entry("b", "adamw", 1, 2.0, 0.7), entry("c", "adamw", 2, 1.0, 0.5),
               entry("d", "muon", 0, 1.0, 0.9)]
    rows = summary_rows(entries)
    adamw = next(r for r in rows if r["condition"] == "training.optimizer.name=adamw")
    muon = next(r for r in rows if r["condition"] == "training.optimizer.name=muon")
    assert (adamw["value"], adamw["runs"], adamw["run_values"], adamw["run_shares"]) == (2.0, 3, [2.0, 2.0, 1.0], [0.6, 0.7, 0.5])
    assert (muon["value"], muon["runs"]) == (1.0, 1)
    summary = summarize_sweep(entries, "swp", "grokking-muon")
    values = summary_values(summary)
    assert values["spectral/k_star/mode/training.optimizer.name_adamw"] == 2.0
    assert values["spectral/k_star/mode/training.optimizer.name_muon"] == 1.0
    write_sweep_report(tmp_path, summary)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Whole-run summaries per condition" in page and "2 (0.6), 2 (0.7), 1 (0.5)" in page
