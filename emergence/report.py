"""A self-contained HTML summary of one run directory, or of a sweep, with the plots ``plots.py`` draws.

The report reads only what a run leaves on disk (journal, ``analysis.json``, ``verdicts.json``, spec,
status), so it can be rebuilt for any finished, failed or interrupted run without retraining. Whatever
is missing is said so on the page rather than raised: a run that failed in its first step still gets a
page that shows why.

"""

from __future__ import annotations

import html
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from emergence.plots import (
    BEHAVIOR_PLOT,
    COLLAPSE_FLOOR_PLOT,
    CONCORDANCE_PLOT,
    PRECURSOR_HEATMAP_PLOT,
    finite_number,
    plot_behavior,
    plot_collapse_floors,
    plot_concordance,
    plot_geometry_families,
    plot_precursor_heatmap,
    plot_probes,
)
from emergence.record import (
    ANALYSIS_FILE,
    SPEC_FILE,
    VERDICTS_FILE,
    JournalContents,
    read_journal,
    read_status,
)

REPORT_FILE = "report.html"

VERDICT_COLUMNS = (
    "signal",
    "event_metric",
    "event_step",
    "onset_step",
    "lead_steps",
    "lead_intervals",
    "verdict",
    "xcorr_lag_steps",
)
FEATURE_COLUMNS = (
    "feature", "verdict", "onset_step", "quiet_step", "event_step", "lead_steps", "loss_at_onset", "plateau_loss", "baseline",
    "final_accuracy", "ablation_baseline", "ablation_ablated", "ablation_control", "ablation_drop", "ablation_relative_drop",
)
COLLAPSE_COLUMNS = ("signal", "layer", "initial", "floor", "floor_step", "collapse_step", "recovery_onset")
KNOWN_VERDICTS = ("precursor", "synchronous", "lagging", "no_signal", "no_emergence")

# Above this many layers a legend entry per layer crowds out the plot; a colour bar reads better.



@dataclass
class RunData:
    """Everything the report shows, with ``None`` or empty for whatever the run did not leave behind."""

    run_dir: Path
    spec_name: str
    run_key: str
    status: dict[str, Any] | None
    spec_text: str | None
    journal: JournalContents
    analysis: dict[str, Any] | None
    verdicts: list[dict[str, Any]]
    feature_verdicts: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def analysis_list(self, key: str) -> list[dict[str, Any]]:
        """``analysis.json``'s list under ``key`` (events, collapse, top_down), objects only."""
        items = (self.analysis or {}).get(key) or []
        return [item for item in items if isinstance(item, dict)]


def write_report(run_dir: Path) -> Path:
    """Write the plots and ``report.html`` into ``run_dir``; return the path of ``report.html``."""
    run_dir = Path(run_dir)
    data = load_run(run_dir)
    behavior_plot = plot_behavior(data, run_dir / BEHAVIOR_PLOT)
    plots = ([behavior_plot] if behavior_plot else []) + plot_geometry_families(data, run_dir) + plot_probes(data, run_dir)
    page = render_html(data, plots)
    path = run_dir / REPORT_FILE
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)  # a reader never sees half a page
    return path


# --- loading -------------------------------------------------------------------------------------


def load_run(run_dir: Path) -> RunData:
    notes: list[str] = []
    spec_text = _read_text(run_dir / SPEC_FILE)
    spec_name = _spec_name(spec_text) or run_dir.parent.name
    try:
        status = read_status(run_dir)
    except (OSError, json.JSONDecodeError):
        status = None
        notes.append("status.json could not be read.")
    analysis = _read_json(run_dir / ANALYSIS_FILE, notes)
    if analysis is not None and not isinstance(analysis, dict):
        notes.append("analysis.json is not an object; ignored.")
        analysis = None
    verdicts = _read_json(run_dir / VERDICTS_FILE, notes)
    if not isinstance(verdicts, list):
        # verdicts.json is the contract; analysis.json carries the same list, so fall back to it.
        verdicts = (analysis or {}).get("verdicts") or []
    return RunData(
        run_dir=run_dir,
        spec_name=spec_name,
        run_key=run_dir.name,
        status=status,
        spec_text=spec_text,
        journal=read_journal(run_dir),
        analysis=analysis,
        verdicts=[v for v in verdicts if isinstance(v, dict) and v.get("kind") != "feature"],
        feature_verdicts=[v for v in verdicts if isinstance(v, dict) and v.get("kind") == "feature"],
        notes=notes,
    )


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _read_json(path: Path, notes: list[str]) -> Any:
    text = _read_text(path)
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        notes.append(f"{path.name} could not be parsed ({error}); ignored.")
        return None


def _spec_name(spec_text: str | None) -> str | None:
    if not spec_text:
        return None
    try:
        spec = yaml.safe_load(spec_text)
    except yaml.YAMLError:
        return None
    name = spec.get("name") if isinstance(spec, dict) else None
    return str(name) if name else None


# --- HTML ----------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 72em;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #555; }
.status { display: inline-block; padding: 0.1em 0.6em; border-radius: 0.8em; font-weight: 600; }
.status-completed { background: #d9f2dd; color: #1b5e20; }
.status-running { background: #e3ecfa; color: #1a3e7a; }
.status-failed { background: #fbdcdc; color: #8e1b1b; }
.status-unknown { background: #eee; color: #555; }
.failure { background: #fff3f3; border-left: 4px solid #c62828; padding: 0.6em 1em; white-space: pre-wrap; }
.note { background: #fffbe6; border-left: 4px solid #e0b400; padding: 0.4em 1em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.verdict-precursor { background: #c8e6c9; font-weight: 600; }
td.verdict-synchronous { background: #fff3c4; }
td.verdict-lagging { background: #ffcdd2; }
td.verdict-no_signal { background: #e0e0e0; color: #555; }
td.verdict-no_emergence { background: #f0f0f0; color: #777; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def render_html(data: RunData, plots: Sequence[str]) -> str:
    state = (data.status or {}).get("state") or "unknown"
    title = f"{data.spec_name} / {data.run_key}"
    sections = [
        _header(data, state),
        _section("Summary", _summary(data)),
        _section("Precursor verdicts", _verdict_table(data)),
        *([_section("Quiet features", _feature_table(data))] if data.feature_verdicts else []),
        _section("Collapse", _collapse_table(data)),
        _section("Plots", _plots(plots)),
        _section("Resolved spec", _spec_block(data)),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc('emergence: ' + title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _section(title: str, body: str) -> str:
    return f"<section>\n<h2>{_esc(title)}</h2>\n{body}\n</section>"


def _header(data: RunData, state: str) -> str:
    status_class = state if state in ("completed", "running", "failed") else "unknown"
    parts = [
        f"<h1>{_esc(data.spec_name)}</h1>",
        f'<p class="meta">run key <code>{_esc(data.run_key)}</code> &middot; '
        f'<span class="status status-{status_class}">{_esc(state)}</span></p>',
    ]
    reason = _failure_reason(data)
    if reason:
        parts.append(f'<div class="failure"><strong>Reason:</strong> {_esc(reason)}</div>')
    parts += [f'<p class="note">{_esc(note)}</p>' for note in data.notes]
    return "<header>\n" + "\n".join(parts) + "\n</header>"


def _failure_reason(data: RunData) -> str | None:
    """status.json's reason, else the last ``failed`` journal event's: status may predate the failure."""
    reason = (data.status or {}).get("reason")
    if reason:
        return str(reason)
    failures = [
        event for event in data.journal.events if event.get("event") == "failed" and event.get("reason")
    ]
    return str(failures[-1]["reason"]) if failures else None


def _summary(data: RunData) -> str:
    steps = [step for step, _ in data.journal.values]
    items = [
        f"{len(set(steps))} measured steps, last step {max(steps)}" if steps else "No values were logged."
    ]
    if data.analysis is None and (data.status or {}).get("state") == "running":
        items.append("No analysis yet: the run is still running.")
    elif data.analysis is None:
        items.append("No analysis: analysis.json is missing, so the run probably ended before analysis.")
    else:
        items += [_event_summary(event) for event in data.analysis_list("events")] or [
            "No emergence events."
        ]
        items += [_top_down_summary(entry) for entry in data.analysis_list("top_down")]
    if data.verdicts:
        counts = Counter(str(v.get("verdict")) for v in data.verdicts)
        items.append("Verdicts: " + ", ".join(f"{name} {n}" for name, n in counts.most_common()))
    return "<ul>\n" + "\n".join(f"<li>{_esc(item)}</li>" for item in items) + "\n</ul>"


def _event_summary(event: Mapping[str, Any]) -> str:
    metric = event.get("metric", "?")
    if event.get("step") is None:
        return f"Emergence ({metric}): no emergence (threshold {_fmt(event.get('threshold'))} never held)."
    return (
        f"Emergence ({metric}): step {_fmt(event.get('step'))} "
        f"(threshold {_fmt(event.get('threshold'))}, chance {_fmt(event.get('chance'))}, "
        f"held for {_fmt(event.get('persistence'))} measurements)."
    )


def _top_down_summary(entry: Mapping[str, Any]) -> str:
    holds = {True: "holds", False: "does not hold"}.get(entry.get("holds"), "undetermined")
    order = ", ".join(
        f"L{layer}@{_fmt(step)}"
        for layer, step in zip(entry.get("layers") or [], entry.get("collapse_steps") or [], strict=False)
    )
    return (
        f"Top-down ({entry.get('family', '?')}): Spearman rho {_fmt(entry.get('spearman_rho'))}, {holds}"
        + (f"; collapse steps {order}." if order else ".")
    )


def _verdict_table(data: RunData) -> str:
    if not data.verdicts:
        return "<p>No verdicts.</p>"
    columns = _columns(VERDICT_COLUMNS, data.verdicts)
    return _table(columns, data.verdicts, cell_class=_verdict_cell_class)


def _feature_table(data: RunData) -> str:
    intro = (
        "<p>A feature is <em>quiet</em> when its probe beats the untrained-model baseline by more than 2 standard "
        "errors at a step where the test loss is within 5% of its plateau value, before the emergence event "
        "(<code>quiet_step</code>); <em>loud</em> when it only does so once the loss has left the plateau; "
        "<em>never</em> when it never does. Ablation columns: exact match on the "
        "test set with the feature's probe directions removed, against random directions moved by the same "
        "amount (the last ablation of the run).</p>"
    )
    return intro + _table(_columns(FEATURE_COLUMNS, data.feature_verdicts), data.feature_verdicts, cell_class=_feature_cell_class)


def _feature_cell_class(column: str, value: Any) -> str | None:
    if column != "verdict":
        return None
    return {"quiet": "verdict-precursor", "loud": "verdict-synchronous", "never": "verdict-no_signal"}.get(str(value), "verdict-other")


def _collapse_table(data: RunData) -> str:
    collapse = data.analysis_list("collapse")
    if not collapse:
        return "<p>No collapse analysis.</p>"
    return _table(_columns(COLLAPSE_COLUMNS, collapse), collapse)


def _columns(preferred: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The documented columns first, then any the core adds later, so nothing is silently hidden."""
    columns = list(preferred)
    for row in rows:
        columns += [key for key in row if key not in columns]
    return columns


def _verdict_cell_class(column: str, value: Any) -> str | None:
    if column != "verdict":
        return None
    return f"verdict-{value}" if value in KNOWN_VERDICTS else "verdict-other"


def _table(
    columns: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    cell_class: Callable[[str, Any], str | None] | None = None,
) -> str:
    head = "".join(f"<th>{_esc(column)}</th>" for column in columns)
    body = []
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            classes = [
                c
                for c in (
                    "num" if finite_number(value) is not None else None,
                    cell_class(column, value) if cell_class else None,
                )
                if c
            ]
            attr = f' class="{_esc(" ".join(classes))}"' if classes else ""
            text = value if isinstance(value, _Markup) else _esc(_fmt(value))
            cells.append(f"<td{attr}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


class _Markup(str):
    """A cell this module built as HTML (a link), put on the page as is instead of escaped."""


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(item) for item in value)
    return str(value)


def _plots(plots: Sequence[str]) -> str:
    if not plots:
        return "<p>Nothing to plot yet.</p>"
    return "\n".join(
        f'<figure><img src="{_esc(name)}" alt="{_esc(name)}"><figcaption>{_esc(name)}</figcaption></figure>'
        for name in plots
    )


def _spec_block(data: RunData) -> str:
    if data.spec_text is None:
        return f"<p>{_esc(SPEC_FILE)} is missing.</p>"
    return f"<pre>{_esc(data.spec_text)}</pre>"


# --- sweep report --------------------------------------------------------------------------------
# A sweep directory (runs/<name>/sweeps/<sweep key>/) holds sweep.json (the summary of
# ``analysis.sweep.summarize_sweep``), report.html and its PNGs. The page is rendered from the summary
# alone, so ``rewrite_sweep_report`` rebuilds it from sweep.json without the runs' journals.

SWEEP_FILE = "sweep.json"
SWEEP_PLOTS = (PRECURSOR_HEATMAP_PLOT, COLLAPSE_FLOOR_PLOT, CONCORDANCE_PLOT)
RUN_REPORT_FROM_SWEEP = "../../{run_key}/report.html"  # sweeps/<key>/ -> <name>/<run_key>/report.html

_SWEEP_CSS = """
td.primary { background: #e3ecfa; font-weight: 600; }
details { margin: 0.8em 0; }
summary { cursor: pointer; color: #1a3e7a; }
"""

RUN_COLUMNS = (
    "run", "state", "task", "difficulty", "size", "n_params", "seed", "grid_point", "emergence_step", "verdicts", "reason",
)
RATE_COLUMNS = ("difficulty", "size", "n_params", "runs", "rate", "precursor", "n", "synchronous", "lagging", "no_signal", "no_emergence")
CONCORDANCE_COLUMNS = ("n_items", "n_runs", "n_pairs", "concordant", "discordant", "ties", "concordance", "kendall_tau")


def write_sweep_report(directory: Path, summary: Mapping[str, Any]) -> list[Path]:
    """Write ``sweep.json``, the sweep plots and ``report.html`` into ``directory``; return every file written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # allow_nan=False: the summary promises JSON, and NaN is not JSON (summarize_sweep maps it to null).
    summary_path = _replace_file(directory / SWEEP_FILE, json.dumps(summary, indent=2, allow_nan=False) + "\n")
    drawn = [
        plot_precursor_heatmap(summary, directory / PRECURSOR_HEATMAP_PLOT),
        plot_collapse_floors(summary, directory / COLLAPSE_FLOOR_PLOT),
        plot_concordance(summary, directory / CONCORDANCE_PLOT),
    ]
    plots = [name for name in drawn if name]
    for stale in set(SWEEP_PLOTS) - set(plots):  # a re-render with less to plot must not show old images
        (directory / stale).unlink(missing_ok=True)
    page_path = _replace_file(directory / REPORT_FILE, render_sweep_html(summary, plots))
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


def _replace_file(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # a reader never sees half a file
    return path


def render_sweep_html(summary: Mapping[str, Any], plots: Sequence[str]) -> str:
    title = f"emergence sweep: {summary.get('name') or 'sweep'} / {summary.get('sweep_key') or ''}"
    plot_set = set(plots)
    sections = [
        _sweep_header(summary),
        _section("Runs", _sweep_runs_table(summary)),
        _section("Precursor rate", _precursor_rate_section(summary, PRECURSOR_HEATMAP_PLOT in plot_set)),
        _section("Collapse floor across sizes", _collapse_floor_section(summary, COLLAPSE_FLOOR_PLOT in plot_set)),
        _section("Concordance of onset and emergence order", _concordance_section(summary, CONCORDANCE_PLOT in plot_set)),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title)}</title>\n"
        f"<style>{_CSS}{_SWEEP_CSS}</style>\n</head>\n<body>\n" + "\n".join(sections) + "\n</body>\n</html>\n"
    )


def _sweep_header(summary: Mapping[str, Any]) -> str:
    counts = summary.get("counts") or {}
    parts = [
        f"<h1>{_esc(summary.get('name') or 'sweep')}: sweep</h1>",
        f'<p class="meta">sweep key <code>{_esc(summary.get("sweep_key"))}</code> &middot; '
        f"{_esc(counts.get('runs', 0))} runs: {_esc(counts.get('completed', 0))} completed, "
        f"{_esc(counts.get('skipped', 0))} skipped (completed earlier, or running elsewhere), "
        f"{_esc(counts.get('failed', 0))} failed &middot; {_esc(counts.get('analysed', 0))} analysed</p>",
    ]
    failed = counts.get("failed_runs") or []
    if failed:
        items = "".join(
            f"<li>{_run_link(run.get('run_key'), run.get('name') or run.get('run_key'))}: {_esc(run.get('reason') or 'no reason given')}</li>"
            for run in failed
        )
        parts.append(f'<div class="failure"><strong>Failed runs, left out of every rate below:</strong><ul>{items}</ul></div>')
    return "<header>\n" + "\n".join(parts) + "\n</header>"


def _run_link(run_key: Any, text: Any) -> _Markup:
    href = RUN_REPORT_FROM_SWEEP.format(run_key=run_key)
    return _Markup(f'<a href="{_esc(href)}">{_esc(text)}</a>')


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
                "grid_point": ", ".join(f"{k}={_fmt(v)}" for k, v in (run.get("grid_point") or {}).items()),
                # A mixture's per-level events after the whole-test-set one: "1200 (level_1 800, level_2 —)".
                "emergence_step": _emergence_steps(run.get("emergence_step"), steps),
                "verdicts": ", ".join(f"{verdict} {n}" for verdict, n in (run.get("verdicts") or {}).items()),
            }
        )
    return _table(RUN_COLUMNS, rows, cell_class=_state_cell_class)


def _emergence_steps(first: Any, steps: Mapping[str, Any]) -> str:
    levels = [f"{metric.rsplit('/', 1)[-1]} {_fmt(step)}" for metric, step in list(steps.items())[1:]]
    return _fmt(first) + (f" ({', '.join(levels)})" if levels else "")


def _state_cell_class(column: str, value: Any) -> str | None:
    if column != "state":
        return None
    return {"completed": "verdict-precursor", "failed": "verdict-lagging", "skipped": "verdict-no_signal"}.get(str(value))


def _figure(name: str, caption: str) -> str:
    return f'<figure><img src="{_esc(name)}" alt="{_esc(caption)}"><figcaption>{_esc(caption)}</figcaption></figure>'


def _details(title: str, body: str) -> str:
    return f"<details><summary>{_esc(title)}</summary>\n{body}\n</details>"


def _rate_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    def percent(rate: Any) -> str | None:
        value = finite_number(rate)
        return None if value is None else f"{value:.0%}"

    return [{**row, "rate": percent(row.get("rate"))} for row in rows]


def _precursor_rate_section(summary: Mapping[str, Any], has_plot: bool) -> str:
    rates = summary.get("precursor_rate") or {}
    by_family, by_signal = rates.get("by_family") or [], rates.get("by_signal") or []
    if not by_family:
        return "<p>No signal verdicts in the analysed runs.</p>"
    intro = (
        "<p>One trial is one verdict: a signal (one layer of a family) against one emergence event of one run. "
        "<code>n</code> counts trials whose event happened; <code>no_signal</code> counts in <code>n</code> "
        "(the event came, the signal showed no onset), <code>no_emergence</code> does not. A mixture's per-level "
        "event counts under its own level. Failed runs are left out.</p>"
    )
    parts = [intro]
    if has_plot:
        parts.append(_figure(PRECURSOR_HEATMAP_PLOT, "precursor rate per signal family, difficulty and model size"))
    parts.append(_table(("family", *RATE_COLUMNS), _rate_rows(by_family)))
    if by_signal:
        parts.append(_details(f"Per signal (layer), {len(by_signal)} rows", _table(("signal", *RATE_COLUMNS), _rate_rows(by_signal))))
    return "\n".join(parts)


def _collapse_floor_section(summary: Mapping[str, Any], has_plot: bool) -> str:
    collapse = summary.get("collapse_floor") or {}
    rows = [row for row in collapse.get("rows") or [] if isinstance(row, Mapping)]
    if not rows:
        return "<p>No collapse analysis in the analysed runs.</p>"
    primary = collapse.get("primary_signal")
    intro = (
        "<p>Per size: the mean collapse floor over the runs of that size (seeds), &plusmn; their sample standard "
        "deviation, (n runs). CV: the population standard deviation of the per-size means over their mean; a "
        "small CV is a floor that does not depend on size. <code>&lt;family&gt;/final</code> takes each run's "
        "deepest measured layer, so sizes with different depths compare like with like."
        + (f" Highlighted: <code>{_esc(primary)}</code>, the signal of the study's size-independent floor." if primary else "")
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
        table_rows.append({"task": row.get("task"), "difficulty": row.get("difficulty"), "signal": row.get("signal"), **cells, "cv": row.get("cv")})

    def highlight(column: str, value: Any) -> str | None:
        return "primary" if column == "signal" and primary is not None and value == primary else None

    return _table(("task", "difficulty", "signal", *size_columns, "cv"), table_rows, cell_class=highlight)


def _floor_cell(size: Mapping[str, Any]) -> str:
    sd = finite_number(size.get("sd"))
    spread = f" ± {sd:.3g}" if sd is not None else ""
    return f"{_fmt(size.get('mean'))}{spread} ({_fmt(size.get('n'))})"


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
    parts.append(_table(("family", *CONCORDANCE_COLUMNS), by_family))
    if by_signal:
        parts.append(_details(f"Per signal (layer), {len(by_signal)} rows", _table(("signal", *CONCORDANCE_COLUMNS, "kendall_p"), by_signal)))
    return "\n".join(parts)
