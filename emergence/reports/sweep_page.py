"""The sweep report: a sweep directory (runs/<name>/sweeps/<sweep key>/) holds ``sweep.json`` (the summary
of ``analysis.sweep.summarize_sweep``), ``report.html`` and its PNGs. The page is rendered from the summary
alone, so ``rewrite_sweep_report`` rebuilds it from sweep.json without the runs' journals."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from emergence.numbers import finite_number
from emergence.reports.html_page import CSS, Markup, esc, fmt, replace_file, section, table
from emergence.reports.plots import (
    COLLAPSE_FLOOR_PLOT,
    CONCORDANCE_PLOT,
    CONDITIONS_PLOT,
    PRECURSOR_HEATMAP_PLOT,
    plot_collapse_floors,
    plot_concordance,
    plot_conditions,
    plot_precursor_heatmap,
)
from emergence.rundir import REPORT_FILE
from emergence.spec.grid import point_label

SWEEP_FILE = "sweep.json"
SWEEP_PLOTS = (PRECURSOR_HEATMAP_PLOT, CONDITIONS_PLOT, COLLAPSE_FLOOR_PLOT, CONCORDANCE_PLOT)
RUN_REPORT_FROM_SWEEP = "../../{run_key}/report.html"  # sweeps/<key>/ -> <name>/<run_key>/report.html

_SWEEP_CSS = """
td.primary { background: #e3ecfa; font-weight: 600; }
details { margin: 0.8em 0; }
summary { cursor: pointer; color: #1a3e7a; }
"""

RUN_COLUMNS = (
    "run", "state", "task", "difficulty", "size", "n_params", "seed", "grid_point", "emergence_step", "verdicts", "reason",
)
RATE_COLUMNS = (
    "difficulty", "size", "n_params", "runs", "rate", "precursor", "n", "synchronous", "lagging", "no_signal", "no_emergence",
    "median_lead_steps", "robust_share", "specific_share", "trusted_rate",
)
TOP_DOWN_COLUMNS = ("family", "size", "tasks", "n", "top_down", "rate")
CONDITION_COLUMNS = (
    "signal", "condition", "runs", "events", "precursor", "synchronous", "lagging", "no_signal", "robust", "specific",
    "trusted_precursor", "mean_lead_steps", "leads", "no_event", "false_alarms", "false_alarm_onsets", "onset_rules",
)
FOLD_ROWS = 60
CONCORDANCE_COLUMNS = ("n_items", "n_runs", "n_pairs", "concordant", "discordant", "ties", "concordance", "kendall_tau")


def write_sweep_report(directory: Path, summary: Mapping[str, Any]) -> list[Path]:
    """Write ``sweep.json``, the sweep plots and ``report.html`` into ``directory``; return every file written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # allow_nan=False: the summary promises JSON, and NaN is not JSON (summarize_sweep maps it to null).
    summary_path = replace_file(directory / SWEEP_FILE, json.dumps(summary, indent=2, allow_nan=False) + "\n")
    drawn = [
        plot_precursor_heatmap(summary, directory / PRECURSOR_HEATMAP_PLOT),
        plot_conditions(summary, directory / CONDITIONS_PLOT),
        plot_collapse_floors(summary, directory / COLLAPSE_FLOOR_PLOT),
        plot_concordance(summary, directory / CONCORDANCE_PLOT),
    ]
    plots = [name for name in drawn if name]
    for stale in set(SWEEP_PLOTS) - set(plots):  # a re-render with less to plot must not show old images
        (directory / stale).unlink(missing_ok=True)
    page_path = replace_file(directory / REPORT_FILE, render_sweep_html(summary, plots))
    return [summary_path, page_path, *(directory / name for name in plots)]


def load_sweep(directory: Path) -> dict[str, Any]:
    """The summary a sweep directory's ``sweep.json`` holds (what ``write_sweep_report`` takes)."""
    summary = json.loads((Path(directory) / SWEEP_FILE).read_text(encoding="utf-8"))
    if not isinstance(summary, dict):
        raise ValueError(f"{Path(directory) / SWEEP_FILE} does not hold a sweep summary (not an object)")
    return summary


def rewrite_sweep_report(directory: Path) -> list[Path]:
    """Render a sweep's report again from its ``sweep.json`` alone; ``refresh_sweep_report`` also rereads
    the runs."""
    return write_sweep_report(directory, load_sweep(directory))


def refresh_sweep_report(directory: Path) -> list[Path]:
    """Summarise the sweep again from its runs' directories as they are now (after ``emergence report``
    has analysed them again, say), then rewrite ``sweep.json`` and the page."""
    from emergence.analysis.sweep import entries_from_run_directories, summarize_sweep

    previous = load_sweep(directory)
    entries = entries_from_run_directories(Path(directory), previous)
    summary = summarize_sweep(entries, str(previous.get("sweep_key") or Path(directory).name), str(previous.get("name") or ""))
    return write_sweep_report(directory, summary)


def is_sweep_directory(path: Path) -> bool:
    """A sweep directory holds ``sweep.json``; a run directory does not."""
    return (Path(path) / SWEEP_FILE).is_file()


def render_sweep_html(summary: Mapping[str, Any], plots: Sequence[str]) -> str:
    title = f"emergence sweep: {summary.get('name') or 'sweep'} / {summary.get('sweep_key') or ''}"
    plot_set = set(plots)
    sections = [
        _sweep_header(summary),
        section("Runs", _sweep_runs_table(summary)),
        section("Precursor rate", _precursor_rate_section(summary, PRECURSOR_HEATMAP_PLOT in plot_set)),
        section("Precursors and false alarms per condition", _condition_section(summary, CONDITIONS_PLOT in plot_set)),
        *([section("Whole-run summaries per condition", _summaries_section(summary))] if summary.get("summaries") else []),
        section("Top-down collapse", _top_down_section(summary)),
        section("Collapse floor across sizes", _collapse_floor_section(summary, COLLAPSE_FLOOR_PLOT in plot_set)),
        section("Concordance of onset and emergence order", _concordance_section(summary, CONCORDANCE_PLOT in plot_set)),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n"
        f"<style>{CSS}{_SWEEP_CSS}</style>\n</head>\n<body>\n" + "\n".join(sections) + "\n</body>\n</html>\n"
    )


def _sweep_header(summary: Mapping[str, Any]) -> str:
    counts = summary.get("counts") or {}
    parts = [
        f"<h1>{esc(summary.get('name') or 'sweep')}: sweep</h1>",
        f'<p class="meta">sweep key <code>{esc(summary.get("sweep_key"))}</code> &middot; '
        f"{esc(counts.get('runs', 0))} runs: {esc(counts.get('completed', 0))} completed, "
        f"{esc(counts.get('skipped', 0))} skipped (completed earlier), "
        f"{esc(counts.get('failed', 0))} failed &middot; {esc(counts.get('analysed', 0))} analysed</p>",
    ]
    failed = counts.get("failed_runs") or []
    if failed:
        items = "".join(
            f"<li>{_run_link(run.get('run_key'), run.get('name') or run.get('run_key'))}: {esc(run.get('reason') or 'no reason given')}</li>"
            for run in failed
        )
        parts.append(f'<div class="failure"><strong>Failed runs, left out of every rate below:</strong><ul>{items}</ul></div>')
    return "<header>\n" + "\n".join(parts) + "\n</header>"


def _run_link(run_key: Any, name: Any) -> Markup:
    """The run's key, linked to its report, with its name on hover: a grid's names spell out every grid value
    (``anatomy[task(name=copy,level=1),model(...)]``), which the grid point column already shows, and at full
    length they pushed the table off the page."""
    href = RUN_REPORT_FROM_SWEEP.format(run_key=run_key)
    return Markup(f'<a href="{esc(href)}" title="{esc(name)}"><code>{esc(run_key)}</code></a>')


def _sweep_runs_table(summary: Mapping[str, Any]) -> str:
    runs = [run for run in summary.get("runs") or [] if isinstance(run, Mapping)]
    if not runs:
        return "<p>No runs.</p>"
    rows = []
    for run in runs:
        steps = run.get("emergence_steps") or {}
        rows.append(
            {
                **run,
                "run": _run_link(run.get("run_key"), run.get("name") or run.get("run_key")),
                "grid_point": ", ".join(point_label(k, fmt(v) if not isinstance(v, Mapping) else v) for k, v in (run.get("grid_point") or {}).items()),
                # A mixture's per-level events after the whole-test-set one: "1200 (level_1 800, level_2 —)".
                "emergence_step": _emergence_steps(run.get("emergence_step"), steps),
                "verdicts": ", ".join(f"{verdict} {n}" for verdict, n in (run.get("verdicts") or {}).items()),
            }
        )
    return table(RUN_COLUMNS, rows, cell_class=_state_cell_class)


def _emergence_steps(first: Any, steps: Mapping[str, Any]) -> str:
    levels = [f"{metric.rsplit('/', 1)[-1]} {fmt(step)}" for metric, step in list(steps.items())[1:]]
    return fmt(first) + (f" ({', '.join(levels)})" if levels else "")


def _state_cell_class(column: str, value: Any) -> str | None:
    if column != "state":
        return None
    return {"completed": "verdict-precursor", "failed": "verdict-lagging", "skipped": "verdict-no_signal"}.get(str(value))


def _figure(name: str, caption: str) -> str:
    return f'<figure><img src="{esc(name)}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'


def _details(title: str, body: str) -> str:
    return f"<details><summary>{esc(title)}</summary>\n{body}\n</details>"


def _percent(rate: Any) -> str | None:
    value = finite_number(rate)
    return None if value is None else f"{value:.0%}"


def _with_interval(value: Any, low: Any, high: Any, show: Any = fmt) -> str | None:
    """``62% (41-80%)``: a value and its 95% interval, or the value alone when it has none."""
    if finite_number(value) is None:
        return None
    if finite_number(low) is None or finite_number(high) is None:
        return str(show(value))
    return f"{show(value)} ({show(low)}–{show(high)})"


def _rate_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            **row,
            "rate": _with_interval(row.get("rate"), row.get("rate_low"), row.get("rate_high"), _percent),
            "median_lead_steps": _with_interval(row.get("median_lead_steps"), row.get("median_lead_low"), row.get("median_lead_high")),
            "robust_share": _percent(row.get("robust_share")),
            "specific_share": _percent(row.get("specific_share")),
            "trusted_rate": _with_interval(row.get("trusted_rate"), row.get("trusted_low"), row.get("trusted_high"), _percent),
        }
        for row in rows
    ]


def _precursor_rate_section(summary: Mapping[str, Any], has_plot: bool) -> str:
    rates = summary.get("precursor_rate") or {}
    by_family, by_signal = rates.get("by_family") or [], rates.get("by_signal") or []
    if not by_family:
        return "<p>No signal verdicts in the analysed runs.</p>"
    intro = (
        "<p>One trial is one verdict: a signal (one layer of a family) against one emergence event of one run. "
        "<code>n</code> counts trials whose event happened; <code>no_signal</code> counts in <code>n</code> "
        "(the event came, the signal showed no onset), <code>no_emergence</code> does not. A mixture's per-level "
        "event counts under its own level. Failed runs are left out. Difficulty is the task level, or the class a "
        "spec names (<code>task.difficulty</code>), never how fast a run learnt.</p>"
        "<p>Rates with their Wilson 95% interval. <code>median_lead_steps</code>: the median over runs of each "
        "run's median lead (negative: the onset came after), with a bootstrap 95% interval over runs. "
        "<code>robust_share</code>: judged verdicts that are the same over the whole analysis grid; "
        "<code>specific_share</code>: those whose onset the null control does not share; <code>trusted_rate</code>: "
        "precursors that are both, over <code>n</code> (shown only when every precursor was decided on both).</p>"
    )
    parts = [intro]
    if has_plot:
        parts.append(_figure(PRECURSOR_HEATMAP_PLOT, "precursor rate per signal family, difficulty and model size"))
    parts.append(table(("family", *RATE_COLUMNS), _rate_rows(by_family)))
    if by_signal:
        parts.append(_details(f"Per signal (layer), {len(by_signal)} rows", table(("signal", *RATE_COLUMNS), _rate_rows(by_signal))))
    return "\n".join(parts)


def _condition_section(summary: Mapping[str, Any], has_plot: bool) -> str:
    rows = [row for row in summary.get("by_condition") or [] if isinstance(row, Mapping)]
    if not rows:
        return "<p>No signal verdicts in the analysed runs.</p>"
    intro = (
        "<p>Runs grouped by their grid point without the seed. Where the capability emerged: how many verdicts "
        "were precursors and each signal's lead in steps (negative: it came after). Where it never emerged: a "
        "<strong>false alarm</strong> is a signal that still showed an onset. A rule that always finds one (the "
        "peak) false-alarms in every such run by construction; the rule is in the last column. <em>robust</em>, "
        "<em>specific</em>: of the verdicts where it emerged, how many stayed the same over the robustness grid and "
        "how many had an onset the shuffled-label control did not share; <em>trusted_precursor</em>: precursors "
        "that were both.</p>"
    )
    shown = [
        {
            **row,
            "mean_lead_steps": fmt(row.get("mean_lead_steps")),
            "leads": ", ".join(fmt(v) for v in row.get("leads") or []),
            "false_alarm_onsets": ", ".join(fmt(v) for v in row.get("false_alarm_onsets") or []),
            "onset_rules": ", ".join(str(v) for v in row.get("onset_rules") or []),
        }
        for row in rows
    ]
    parts = [intro]
    if has_plot:
        parts.append(_figure(CONDITIONS_PLOT, "precursors where the capability emerged, false alarms where it did not"))
    condition_table = table(CONDITION_COLUMNS, shown)
    # A big grid (the anatomy study: 48 conditions x a dozen signals) folds its table away behind its figure.
    parts.append(condition_table if len(shown) <= FOLD_ROWS else _details(f"Per signal and condition, {len(shown)} rows", condition_table))
    return "\n".join(parts)


def _summaries_section(summary: Mapping[str, Any]) -> str:
    rows = [row for row in summary.get("summaries") or [] if isinstance(row, Mapping)]
    intro = (
        "<p>Quantities a measure reads as one number for the whole run (the spectral gap position k*: its most "
        "frequent value), per grid condition: each run's value with the share of measurements that gave it, and "
        "the value most runs give.</p>"
    )
    shown = [
        {
            "key": row.get("key"),
            "condition": row.get("condition"),
            "statistic": row.get("statistic"),
            "value": fmt(row.get("value")),
            "runs": row.get("runs"),
            "per run (share)": ", ".join(
                f"{fmt(value)} ({fmt(share)})" for value, share in zip(row.get("run_values") or [], row.get("run_shares") or [], strict=False)
            ),
        }
        for row in rows
    ]
    return intro + table(("key", "condition", "statistic", "value", "runs", "per run (share)"), shown)


def _top_down_section(summary: Mapping[str, Any]) -> str:
    rows = [row for row in summary.get("top_down") or [] if isinstance(row, Mapping)]
    if not rows:
        return "<p>No run had two or more layers collapse at different steps.</p>"
    intro = (
        "<p>Per signal family: the (run, family) pairs whose layers collapse deepest first (Spearman rho between "
        "layer and collapse step below 0), of those whose order could be decided; size <code>all</code> pools the "
        "sizes. Rates with their Wilson 95% interval.</p>"
    )
    shown = [{**row, "rate": _with_interval(row.get("rate"), row.get("rate_low"), row.get("rate_high"), _percent)} for row in rows]
    return intro + table(TOP_DOWN_COLUMNS, shown)


def _collapse_floor_section(summary: Mapping[str, Any], has_plot: bool) -> str:
    collapse = summary.get("collapse_floor") or {}
    rows = [row for row in collapse.get("rows") or [] if isinstance(row, Mapping)]
    if not rows:
        return "<p>No collapse analysis in the analysed runs.</p>"
    primary = collapse.get("primary_signal")
    intro = (
        "<p>Per size: the mean collapse floor over the runs of that size (seeds), &plusmn; their sample standard "
        "deviation, (n runs). CV: the population standard deviation of the per-size means over their mean; a "
        "small CV is a floor that does not depend on size; in brackets its bootstrap 95% interval, resampling each "
        "size's runs (none when a size has one run). <code>&lt;family&gt;/final</code> takes each run's "
        "deepest measured layer, so sizes with different depths compare like with like."
        + (f" Highlighted: <code>{esc(primary)}</code>, the signal of the study's size-independent floor." if primary else "")
        + "</p>"
    )
    parts = [intro]
    if has_plot:
        parts.append(_figure(COLLAPSE_FLOOR_PLOT, "collapse floor against parameter count per task"))
    headline = [row for row in rows if str(row.get("signal")).endswith("/final") or not re.search(r"/L\d+$", str(row.get("signal")))]
    per_layer = [row for row in rows if row not in headline]
    parts.append(_floor_table(headline or rows, primary))
    if headline and per_layer:
        parts.append(_details(f"Per layer, {len(per_layer)} rows", _floor_table(per_layer, primary)))
    return "\n".join(parts)


def _floor_table(rows: Sequence[Mapping[str, Any]], primary: Any) -> str:
    sizes: dict[str, float] = {}
    for row in rows:
        for size in row.get("sizes") or []:
            n_params = finite_number(size.get("n_params"))
            sizes.setdefault(str(size.get("size")), n_params if n_params is not None else float("inf"))
    size_columns = sorted(sizes, key=lambda s: (sizes[s], s))
    table_rows = []
    for row in rows:
        by_size = {str(s.get("size")): s for s in row.get("sizes") or []}
        cells = {size: _floor_cell(by_size[size]) if size in by_size else None for size in size_columns}
        cv = _with_interval(row.get("cv"), row.get("cv_low"), row.get("cv_high"), lambda v: f"{float(v):.3g}")
        table_rows.append({"task": row.get("task"), "difficulty": row.get("difficulty"), "signal": row.get("signal"), **cells, "cv": cv})

    def highlight(column: str, value: Any) -> str | None:
        return "primary" if column == "signal" and primary is not None and value == primary else None

    return table(("task", "difficulty", "signal", *size_columns, "cv"), table_rows, cell_class=highlight)


def _floor_cell(size: Mapping[str, Any]) -> str:
    sd = finite_number(size.get("sd"))
    spread = f" ± {sd:.3g}" if sd is not None else ""
    return f"{fmt(size.get('mean'))}{spread} ({fmt(size.get('n'))})"


def _concordance_section(summary: Mapping[str, Any], has_plot: bool) -> str:
    concordance = summary.get("concordance") or {}
    by_family, by_signal = concordance.get("by_family") or [], concordance.get("by_signal") or []
    if not by_family:
        return "<p>No (run, event) has both an onset and an emergence step.</p>"
    intro = (
        "<p>Each item is one (run, signal, event) with both an onset and an emergence step. A pair of items is "
        "concordant when the earlier onset belongs to the earlier event, discordant when the opposite; pairs tied "
        "in either step are left out. Concordance = concordant / (concordant + discordant). Per family only pairs "
        "from different runs count (the layers of one run share its event); Kendall's tau-b from the same pairs.</p>"
    )
    parts = [intro]
    if has_plot:
        parts.append(_figure(CONCORDANCE_PLOT, "onset step against emergence step per signal family"))
    parts.append(table(("family", *CONCORDANCE_COLUMNS), by_family))
    within = concordance.get("by_family_difficulty") or []
    if len({row.get("difficulty") for row in within}) > 1:  # with one class it is the table above
        parts.append("<p>Within each difficulty class (runs of one class only):</p>")
        parts.append(table(("family", "difficulty", *CONCORDANCE_COLUMNS), within))
    if by_signal:
        parts.append(_details(f"Per signal (layer), {len(by_signal)} rows", table(("signal", *CONCORDANCE_COLUMNS, "kendall_p"), by_signal)))
    return "\n".join(parts)
