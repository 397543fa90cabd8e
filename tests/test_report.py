"""The report is built from a synthetic run directory: no training code involved."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from emergence.analysis.sweep import SweepEntry, summarize_sweep
from emergence.record import Journal, read_journal
from emergence.reports import write_report
from emergence.reports.plots import geometry_families, plot_filename, signal_panels
from emergence.reports.sweep_page import (
    is_sweep_directory,
    load_sweep,
    rewrite_sweep_report,
    write_sweep_report,
)
from emergence.rundir import write_status

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STEPS = list(range(0, 1001, 50))
EVENT_STEP = 850


def _geometry_curve(
    steps: np.ndarray, collapse_at: int, recover_at: int, initial: float, floor: float
) -> np.ndarray:
    """Falls to ``floor`` by ``collapse_at``, stays, then climbs back after ``recover_at``."""
    fall = np.clip(steps / max(collapse_at, 1), 0, 1)
    rise = np.clip((steps - recover_at) / 300, 0, 1)
    return initial - (initial - floor) * fall + (initial - floor) * 0.6 * rise


def _write_journal(run_dir: Path, n_layers: int, last_step: int = STEPS[-1]) -> None:
    journal = Journal(run_dir)
    journal.append_event("start")
    steps = np.array([s for s in STEPS if s <= last_step])
    exact = 1 / (1 + np.exp(-(steps - 800) / 30))
    for i, step in enumerate(steps):
        values = {
            "behavior/test/exact_match": exact[i],
            "behavior/train/exact_match": min(1.0, exact[i] * 1.1),
            "behavior/test/token_accuracy": 0.5 + exact[i] / 2,
            "behavior/test/loss": 3.0 * np.exp(-step / 400) + 0.01,
            "behavior/train/loss": 2.8 * np.exp(-step / 380) + 0.01,
            "geometry/stable_rank/embed/L0": 10 - step / 200,
            "cost/rankme": 0.002,
        }
        for layer in range(n_layers):
            # Deeper layers collapse earlier: the top-down order the analysis looks for.
            collapse_at = 300 - 200 * layer // max(n_layers - 1, 1)
            curve = _geometry_curve(steps, collapse_at, 600, initial=40.0 - layer, floor=2.0 + 0.1 * layer)
            values[f"geometry/rankme/resid_post/L{layer}"] = curve[i]
            values[f"geometry/participation_ratio/resid_post/L{layer}"] = curve[i] / 2
        if step == 100:
            values["geometry/participation_ratio/resid_post/L0"] = float("nan")  # a measure that failed once
        journal.append_values(int(step), values)


def _collapse_entries(n_layers: int) -> list[dict]:
    return [
        {
            "signal": f"geometry/rankme/resid_post/L{layer}",
            "layer": layer,
            "initial": 40.0 - layer,
            "floor": 2.0 + 0.1 * layer,
            "floor_step": 300,
            "collapse_step": 300 - 200 * layer // max(n_layers - 1, 1),
            "recovery_onset": 600 if layer % 2 == 0 else None,
        }
        for layer in range(n_layers)
    ]


VERDICTS = [
    {
        "signal": "geometry/rankme/resid_post/L0",
        "event_metric": "behavior/test/exact_match",
        "event_step": EVENT_STEP,
        "onset_step": 600,
        "lead_steps": 250,
        "lead_intervals": 5.0,
        "verdict": "precursor",
        "xcorr_lag_steps": 200,
    },
    {
        "signal": "geometry/rankme/resid_post/L1",
        "event_metric": "behavior/test/exact_match",
        "event_step": EVENT_STEP,
        "onset_step": None,
        "lead_steps": None,
        "lead_intervals": None,
        "verdict": "no_signal",
        "xcorr_lag_steps": None,
    },
    {
        "signal": "geometry/participation_ratio/resid_post/L0",
        "event_metric": "behavior/test/exact_match",
        "event_step": EVENT_STEP,
        "onset_step": 850,
        "lead_steps": 0,
        "lead_intervals": 0.0,
        "verdict": "synchronous",
        "xcorr_lag_steps": -50,
    },
]


def _make_run(
    root: Path,
    n_layers: int = 2,
    spec_name: str = "addition",
    run_key: str = "ab12cd34",
    with_analysis: bool = True,
) -> Path:
    run_dir = root / "runs" / spec_name / run_key
    run_dir.mkdir(parents=True)
    (run_dir / "spec.resolved.yaml").write_text(
        f"name: {spec_name}\nseed: 0\ntask:\n  name: addition\n  n_bits: 8\nmodel:\n  n_layers: {n_layers}\n",
        encoding="utf-8",
    )
    _write_journal(run_dir, n_layers)
    if with_analysis:
        analysis = {
            "events": [
                {
                    "metric": "behavior/test/exact_match",
                    "step": EVENT_STEP,
                    "threshold": 0.5,
                    "chance": 0.0,
                    "persistence": 3,
                },
            ],
            "collapse": _collapse_entries(n_layers),
            "top_down": [
                {
                    "family": "geometry/rankme/resid_post",
                    "spearman_rho": -1.0,
                    "holds": True,
                    "layers": list(range(n_layers)),
                    "collapse_steps": [c["collapse_step"] for c in _collapse_entries(n_layers)],
                },
            ],
            "verdicts": VERDICTS,
        }
        (run_dir / "analysis.json").write_text(json.dumps(analysis), encoding="utf-8")
        (run_dir / "verdicts.json").write_text(json.dumps(VERDICTS), encoding="utf-8")
    write_status(run_dir, "completed")
    return run_dir


def _img_sources(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def _assert_valid_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5_000, f"{path} is suspiciously small ({len(data)} bytes)"


def _verdict_rows(page: str) -> list[str]:
    table = page.split("<h2>Precursor verdicts</h2>", 1)[1].split("</table>", 1)[0]
    return re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>", 1)[-1])


def test_completed_run_report(tmp_path):
    run_dir = _make_run(tmp_path)
    report = write_report(run_dir)

    assert report == run_dir / "report.html"
    page = report.read_text(encoding="utf-8")
    assert "<h1>addition</h1>" in page
    assert "ab12cd34" in page
    assert "status-completed" in page

    rows = _verdict_rows(page)
    assert len(rows) == len(VERDICTS)
    for row, verdict in zip(rows, VERDICTS, strict=True):
        assert verdict["signal"] in row
        assert f'class="verdict-{verdict["verdict"]}">{verdict["verdict"]}</td>' in row
    assert '<td class="num">250</td>' in rows[0]  # lead_steps
    assert "<td>—</td>" in rows[1]  # no onset shown as a dash, not "None"

    assert "step 850" in page
    assert "Spearman rho -1" in page
    assert "L0@300, L1@100" in page  # collapse order in the summary
    assert "name: addition" in page  # the resolved spec

    sources = _img_sources(page)
    assert sources == [
        "behavior.png",
        "geometry_participation_ratio_resid_post.png",
        "geometry_rankme_resid_post.png",
        "geometry_stable_rank_embed.png",
    ]
    for name in sources:
        _assert_valid_png(run_dir / name)


def test_verdicts_fall_back_to_analysis_when_verdicts_file_missing(tmp_path):
    run_dir = _make_run(tmp_path)
    (run_dir / "verdicts.json").unlink()
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert len(_verdict_rows(page)) == len(VERDICTS)


def test_failed_run_without_analysis_shows_reason(tmp_path):
    run_dir = _make_run(tmp_path, with_analysis=False)
    write_status(run_dir, "failed", reason="RuntimeError: CUDA <oom> & more at step 50")

    page = write_report(run_dir).read_text(encoding="utf-8")

    assert "status-failed" in page
    # The reason is shown, escaped: a traceback must not be able to inject markup.
    assert "RuntimeError: CUDA &lt;oom&gt; &amp; more at step 50" in page
    assert "<oom>" not in page
    assert "No analysis" in page
    assert "No verdicts." in page
    assert "behavior.png" in _img_sources(page)
    for name in _img_sources(page):
        _assert_valid_png(run_dir / name)


def test_run_that_failed_before_logging_anything(tmp_path):
    run_dir = tmp_path / "runs" / "broken" / "ffff0000"
    run_dir.mkdir(parents=True)
    write_status(run_dir, "failed", reason="spec could not be built")

    page = write_report(run_dir).read_text(encoding="utf-8")

    assert "<h1>broken</h1>" in page  # name from the directory when there is no spec
    assert "spec could not be built" in page
    assert "No values were logged." in page
    assert _img_sources(page) == []
    assert list(run_dir.glob("*.png")) == []


def test_corrupt_analysis_is_reported_not_raised(tmp_path):
    run_dir = _make_run(tmp_path)
    (run_dir / "analysis.json").write_text('{"events": [', encoding="utf-8")
    (run_dir / "verdicts.json").unlink()
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "analysis.json could not be parsed" in page
    assert "No verdicts." in page


def test_many_layers(tmp_path):
    n_layers = 24
    run_dir = _make_run(tmp_path, n_layers=n_layers, spec_name="deep", run_key="0123abcd")
    page = write_report(run_dir).read_text(encoding="utf-8")

    collapse_table = page.split("<h2>Collapse</h2>", 1)[1].split("</table>", 1)[0]
    assert len(re.findall(r"<tr>", collapse_table)) == n_layers + 1  # header + one row per layer
    assert "geometry/rankme/resid_post/L23" in collapse_table
    for name in ("geometry_rankme_resid_post.png", "geometry_participation_ratio_resid_post.png"):
        assert name in _img_sources(page)
        _assert_valid_png(run_dir / name)


def test_report_is_idempotent(tmp_path):
    run_dir = _make_run(tmp_path)
    first = write_report(run_dir).read_text(encoding="utf-8")
    second = write_report(run_dir).read_text(encoding="utf-8")
    assert first == second


def test_geometry_families_sort_layers_numerically():
    keys = [f"geometry/rankme/resid_post/L{layer}" for layer in (10, 2, 9, 0)] + [
        "geometry/stable_rank/embed/L0",
        "behavior/test/loss",
        "probe/carry/L1/acc",
    ]
    families = geometry_families(keys)
    assert list(families) == ["geometry/rankme/resid_post", "geometry/stable_rank/embed"]
    assert [layer for layer, _ in families["geometry/rankme/resid_post"]] == [0, 2, 9, 10]


@pytest.mark.parametrize(
    ("family", "filename"),
    [
        ("geometry/rankme/resid_post", "geometry_rankme_resid_post.png"),
        ("geometry/odd.name/resid-mid", "geometry_odd_name_resid-mid.png"),
    ],
)
def test_plot_filename(family, filename):
    assert plot_filename(family) == filename


def test_failure_reason_from_journal_when_status_has_none(tmp_path):
    run_dir = _make_run(tmp_path, with_analysis=False)
    Journal(run_dir).append_event("failed", reason="killed at step 400")
    write_status(run_dir, "failed")
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "killed at step 400" in page


def test_running_run_says_analysis_is_pending(tmp_path):
    run_dir = _make_run(tmp_path, with_analysis=False)
    write_status(run_dir, "running")
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "status-running" in page
    assert "still running" in page


# --- the sweep report ----------------------------------------------------------------------------


def _sweep_summary(with_failure: bool = True) -> dict:
    """Two sizes, two seeds of the smaller, one event each, and optionally a failed run."""
    def run(key: str, size: str, n_params: int, seed: int, event: int, onsets: tuple[int, int], floor: float) -> SweepEntry:
        verdicts = [
            {"kind": "signal", "signal": f"geometry/rankme/resid_post/L{layer}", "event_metric": "behavior/test/exact_match",
             "event_step": event, "onset_step": onset, "verdict": "precursor" if onset < event else "synchronous"}
            for layer, onset in enumerate(onsets)
        ]
        collapse = [
            {"signal": f"geometry/rankme/resid_post/L{layer}", "layer": layer, "initial": 30.0, "floor": floor + layer, "floor_step": 200}
            for layer in range(2)
        ]
        analysis = {"events": [{"metric": "behavior/test/exact_match", "step": event}], "collapse": collapse, "verdicts": verdicts}
        return SweepEntry(key, f"addition[seed={seed}]", "completed", "binary_addition", 2, "L2", size, n_params, seed, {"seed": seed}, analysis)

    entries = [
        run("aaa111", "2x32", 20_000, 0, 600, (300, 600), 2.0),
        run("bbb222", "2x32", 20_000, 1, 700, (400, 700), 2.2),
        run("ccc333", "2x64", 70_000, 0, 500, (450, 350), 2.1),
    ]
    if with_failure:
        entries.append(
            SweepEntry("ddd444", "addition[seed=2]", "failed", "binary_addition", 2, "L2", "2x64", None, 2, {"seed": 2}, {},
                       reason="diverged: loss is nan at step 40")
        )
    return summarize_sweep(entries, "swp123", "addition")


def test_sweep_report_writes_summary_plots_and_links(tmp_path):
    directory = tmp_path / "runs" / "addition" / "sweeps" / "swp123"
    summary = _sweep_summary()
    written = write_sweep_report(directory, summary)

    assert [p.name for p in written[:2]] == ["sweep.json", "report.html"]
    assert all(p.is_file() for p in written)
    assert load_sweep(directory) == summary
    pngs = [p for p in written if p.suffix == ".png"]
    assert {p.name for p in pngs} == {"sweep_precursor_rate.png", "sweep_collapse_floor.png", "sweep_concordance.png"}
    for png in pngs:
        _assert_valid_png(png)

    page = (directory / "report.html").read_text()
    assert sorted(_img_sources(page)) == sorted(p.name for p in pngs)
    for key in ("aaa111", "bbb222", "ccc333", "ddd444"):
        assert f'href="../../{key}/report.html"' in page
    assert "diverged: loss is nan at step 40" in page
    assert "geometry/rankme/resid_post/final" in page and 'class="primary"' in page
    assert "<h2>Concordance of onset and emergence order</h2>" in page


def test_sweep_report_rerenders_from_its_json(tmp_path):
    write_sweep_report(tmp_path, _sweep_summary())
    first = (tmp_path / "report.html").read_text()
    (tmp_path / "report.html").unlink()
    assert is_sweep_directory(tmp_path) and not is_sweep_directory(tmp_path / "elsewhere")
    rewrite_sweep_report(tmp_path)
    assert (tmp_path / "report.html").read_text() == first


def test_sweep_report_with_nothing_analysed_still_renders(tmp_path):
    write_sweep_report(tmp_path, _sweep_summary())  # plots from an earlier render must not linger
    failed = SweepEntry("eee555", "addition[seed=0]", "failed", "binary_addition", 1, "L1", "2x32", None, 0, {}, {}, reason="OOM")
    written = write_sweep_report(tmp_path, summarize_sweep([failed], "swp", "addition"))
    assert [p.name for p in written] == ["sweep.json", "report.html"]
    assert not list(tmp_path.glob("*.png"))
    page = (tmp_path / "report.html").read_text()
    assert "OOM" in page and "No signal verdicts" in page


def test_a_checkpoint_series_step_axis_is_symmetric_log_and_a_trained_schedule_linear() -> None:
    """Pythia's checkpoints (1, 2, 4 ... 512, then every 1,000 to 143,000) would put the first eleven in one pixel
    column on a linear axis; a trained run's schedule (powers of two to 16, then every 25) reads best linear."""
    from matplotlib.figure import Figure

    from emergence.models.checkpoints import pythia_steps
    from emergence.record import JournalContents
    from emergence.reports.plots import _step_axis

    scales = []
    for steps in (pythia_steps(), [0, 1, 2, 4, 8, 16, *range(25, 1001, 25)]):
        ax = Figure().subplots()
        _step_axis(ax, JournalContents([(step, {"x": 1.0}) for step in steps]))
        scales.append(ax.get_xscale())
    assert scales == ["symlog", "linear"]


def test_other_measure_families_get_one_figure_each_with_a_panel_per_quantity(tmp_path):
    run_dir = _make_run(tmp_path)
    journal = Journal(run_dir)
    for step in STEPS:
        journal.append_values(
            step,
            {
                "spectral/gap_ratio": 1 + step / 100,
                "spectral/k_star": 1.0,
                "commutator/defect": 2.0 * 1.01**step,
                "commutator/qk/L0": 5.0 - step / 500,
                "commutator/qk/L0/H0": 1.0,
                "commutator/qk/L0/H1": 1.5,
                "cost/spectral_edge": 0.01,
            },
        )
    verdicts = VERDICTS + [dict(VERDICTS[0], signal="commutator/defect", onset_step=500, lead_steps=350)]
    (run_dir / "verdicts.json").write_text(json.dumps(verdicts), encoding="utf-8")
    assert signal_panels(read_journal(run_dir).metric_keys()) == {
        "commutator": {"commutator/defect": ["commutator/defect"], "commutator/qk": ["commutator/qk/L0", "commutator/qk/L0/H0", "commutator/qk/L0/H1"]},
        "spectral": {"spectral/gap_ratio": ["spectral/gap_ratio"], "spectral/k_star": ["spectral/k_star"]},
    }
    page = write_report(run_dir).read_text(encoding="utf-8")
    sources = _img_sources(page)
    assert {"signals_commutator.png", "signals_spectral.png"} <= set(sources)
    assert not any(name.startswith(("signals_cost", "signals_behavior", "signals_geometry")) for name in sources)
    for name in ("signals_commutator.png", "signals_spectral.png"):
        _assert_valid_png(run_dir / name)
