"""The run report shows the robustness grid as a heat map, the verdict table's robust and specific columns,
and what the null control did; from a hand-made run directory, no training involved."""

from __future__ import annotations

from emergence.analysis import analyze, write_analysis
from emergence.analysis.control import ControlRun
from emergence.record import Journal
from emergence.reports import write_report
from emergence.reports.robustness_plot import ROWS_PER_FIGURE, robustness_plot_names
from emergence.rundir import write_status
from emergence.spec.schema import AnalysisSpec

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXACT = "behavior/test/exact_match"


def write_run(run_dir, onset: int, control_onset: int | None = None) -> None:
    for directory, recovery in ((run_dir, onset), (run_dir.parent / "control", control_onset)):
        journal = Journal(directory)
        for step in range(0, 2001, 50):
            exact = 1.0 if step >= 1500 and directory == run_dir else 0.0
            rank = 12.0 - step / 10 if step < 100 else 8.0 if recovery is not None and step >= recovery else 2.0
            journal.append_values(step, {EXACT: exact, "geometry/rankme/resid_post/L0": rank, "geometry/rankme/resid_post/L1": 5.0})
    control = ControlRun("shuffled_labels", "c0ffee", "completed", Journal(run_dir.parent / "control").read())
    write_analysis(run_dir, analyze(Journal(run_dir).read(), AnalysisSpec(), chance=0.0, every=50, control=control))
    write_status(run_dir, "completed", run_key=run_dir.name)


def test_the_report_draws_the_grid_and_shows_robust_and_specific(tmp_path):
    run_dir = tmp_path / "runs" / "demo" / "abc123"
    write_run(run_dir, onset=500, control_onset=550)
    html = write_report(run_dir).read_text()
    assert (run_dir / "robustness.png").read_bytes().startswith(PNG_MAGIC)
    assert "Robustness over analysis settings" in html and 'src="robustness.png"' in html
    for column in ("<th>robust</th>", "<th>robust_share</th>", "<th>specific</th>", "<th>control_onset_step</th>"):
        assert column in html
    assert "Null control (shuffled_labels): run c0ffee, completed" in html


def test_many_verdicts_spread_over_several_figures():
    assert robustness_plot_names(1) == ["robustness.png"]
    assert robustness_plot_names(ROWS_PER_FIGURE + 1) == ["robustness.png", "robustness_2.png"]
