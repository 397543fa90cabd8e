"""Plots and a self-contained HTML summary of one run directory.

The report reads only what a run leaves on disk (journal, ``analysis.json``, ``verdicts.json``, spec,
status), so it can be rebuilt for any finished, failed or interrupted run without retraining. Whatever
is missing is said so on the page rather than raised: a run that failed in its first step still gets a
page that shows why.

Plots use matplotlib's object API (``Figure`` + ``savefig``) rather than pyplot, so no backend or
display is needed and no figure outlives the call.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from emergence.record import (
    ANALYSIS_FILE,
    SPEC_FILE,
    VERDICTS_FILE,
    JournalContents,
    read_journal,
    read_status,
)

REPORT_FILE = "report.html"
BEHAVIOR_PLOT = "behavior.png"

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
MAX_LEGEND_LAYERS = 12

_LAYER_KEY = re.compile(r"^geometry/(?P<family>.+)/L(?P<layer>\d+)$")
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9_-]+")
_PROBE_KEY = re.compile(r"^probe/(?P<family>[^/]+)/accuracy$")


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


def _analysis_list(data: RunData, key: str) -> list[dict[str, Any]]:
    items = (data.analysis or {}).get(key) or []
    return [item for item in items if isinstance(item, dict)]


# --- plots ---------------------------------------------------------------------------------------


def plot_behavior(data: RunData, path: Path) -> str | None:
    """Scores (exact match, token accuracy) above, losses below; ``None`` when nothing was logged."""
    logged_keys = data.journal.metric_keys()
    behavior_keys = sorted(k for k in logged_keys if k.startswith("behavior/"))
    loss_keys = [k for k in behavior_keys if k.endswith("loss")]
    score_keys = [k for k in behavior_keys if k not in loss_keys]
    if not behavior_keys:
        return None

    fig = Figure(figsize=(9, 6.5), layout="constrained")
    score_ax, loss_ax = fig.subplots(2, 1, sharex=True)
    for key in score_keys:
        # Exact match is what "capability" means; per-token accuracy is context, so draw it fainter.
        style = "-" if key.endswith("exact_match") else ":"
        _plot_series(score_ax, data.journal, key, _short_behavior_label(key), linestyle=style)
    for key in loss_keys:
        _plot_series(loss_ax, data.journal, key, _short_behavior_label(key))

    events = _analysis_list(data, "events")
    for event in events:
        threshold = _finite(event.get("threshold"))
        if threshold is not None:
            score_ax.axhline(
                threshold,
                color="grey",
                linestyle="--",
                linewidth=1,
                label=f"threshold {threshold:g} ({_short_behavior_label(event.get('metric'))})",
            )
    _mark_events(score_ax, events, with_labels=True)
    _mark_events(loss_ax, events, with_labels=False)

    score_ax.set_ylabel("score")
    score_ax.set_title("Behaviour")
    loss_ax.set_ylabel("loss")
    loss_ax.set_xlabel("step")
    if _spans_decades(data.journal, loss_keys):
        loss_ax.set_yscale("log")
    for ax in (score_ax, loss_ax):
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize="small", loc="best")
    return _save(fig, path)


def plot_geometry_families(data: RunData, run_dir: Path) -> list[str]:
    """One PNG per geometry measure and hook site, one line per layer; returns the file names."""
    collapse_by_signal = {c.get("signal"): c for c in _analysis_list(data, "collapse")}
    events = _analysis_list(data, "events")
    names = []
    for family, layer_keys in geometry_families(data.journal.metric_keys()).items():
        path = run_dir / plot_filename(family)
        names.append(
            _plot_geometry_family(data.journal, family, layer_keys, collapse_by_signal, events, path)
        )
    return names


def plot_probes(data: RunData, run_dir: Path) -> list[str]:
    """One PNG per probed feature family: held-out accuracy against the untrained-model baseline (with the
    2-standard-error margin), the probe onset and the emergence event, and the test loss on a second axis."""
    verdict_by_feature = {v.get("feature"): v for v in data.feature_verdicts}
    events = _analysis_list(data, "events")
    names = []
    for key in sorted(k for k in data.journal.metric_keys() if _PROBE_KEY.match(k)):
        family = _PROBE_KEY.match(key)["family"]  # type: ignore[index]
        fig = Figure(figsize=(9, 4.2), layout="constrained")
        ax = fig.subplots()
        steps, accuracy = _plot_series(ax, data.journal, key, "probe accuracy (best layer per position)", color="tab:blue")
        _, baseline = data.journal.series(f"probe/{family}/baseline")
        _, se = data.journal.series(f"probe/{family}/se")
        if len(baseline) == len(steps) and len(se) == len(steps):
            ax.plot(steps, baseline, color="grey", linestyle="--", linewidth=1, label="untrained-model baseline")
            ax.fill_between(steps, baseline, baseline + 2 * se, color="grey", alpha=0.15, label="baseline + 2 SE")
        verdict = verdict_by_feature.get(family, {})
        onset = _finite(verdict.get("onset_step"))
        if onset is not None:
            ax.axvline(onset, color="tab:green", linestyle=":", linewidth=1.5, label=f"probe onset @ {onset:g} ({verdict.get('verdict')})")
        _mark_events(ax, events, with_labels=True)
        ax.set_xlabel("step")
        ax.set_ylabel("held-out probe accuracy")
        ax.set_title(f"Probe: {family}")
        ax.grid(alpha=0.3)
        loss_steps, loss = data.journal.series("behavior/test/loss")
        if len(loss_steps):
            loss_ax = ax.twinx()
            loss_ax.plot(loss_steps, loss, color="tab:orange", alpha=0.6, linewidth=1, label="test loss")
            loss_ax.set_ylabel("test loss", color="tab:orange")
            handles, labels = ax.get_legend_handles_labels()
            more_handles, more_labels = loss_ax.get_legend_handles_labels()
            ax.legend(handles + more_handles, labels + more_labels, fontsize="small", loc="best")
        else:
            ax.legend(fontsize="small", loc="best")
        names.append(_save(fig, run_dir / plot_filename(f"probe/{family}")))
    return names


def geometry_families(keys: Iterable[str]) -> dict[str, list[tuple[int, str]]]:
    """``geometry/rankme/resid_post/L3`` -> ``{"geometry/rankme/resid_post": [(3, key), ...]}``.

    Layers are sorted numerically so that L10 follows L9.
    """
    families: dict[str, list[tuple[int, str]]] = {}
    for key in keys:
        match = _LAYER_KEY.match(key)
        if match:
            families.setdefault(f"geometry/{match['family']}", []).append((int(match["layer"]), key))
    return {family: sorted(layers) for family, layers in sorted(families.items())}


def plot_filename(family: str) -> str:
    """``geometry/rankme/resid_post`` -> ``geometry_rankme_resid_post.png``."""
    return _UNSAFE_FILENAME.sub("_", family).strip("_") + ".png"


def _plot_geometry_family(
    journal: JournalContents,
    family: str,
    layer_keys: Sequence[tuple[int, str]],
    collapse_by_signal: Mapping[Any, Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    path: Path,
) -> str:
    fig = Figure(figsize=(9, 5), layout="constrained")
    ax = fig.subplots()
    layers = [layer for layer, _ in layer_keys]
    colormap = colormaps["viridis"]
    norm = Normalize(vmin=min(layers), vmax=max(max(layers), min(layers) + 1))
    use_legend = len(layer_keys) <= MAX_LEGEND_LAYERS

    for layer, key in layer_keys:
        colour = colormap(norm(layer))
        steps, values = _plot_series(ax, journal, key, f"L{layer}" if use_legend else None, color=colour)
        collapse = collapse_by_signal.get(key)
        if collapse:
            _mark_collapse(ax, steps, values, collapse, colour)
    _mark_events(ax, events, with_labels=True)

    ax.set_title(family.removeprefix("geometry/"))
    ax.set_xlabel("step")
    ax.set_ylabel(family.split("/")[1])  # the measure's name: geometry/<measure>/<site>
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()[0]
    if any(key in collapse_by_signal for _, key in layer_keys):
        handles += _collapse_legend_handles()
    if not use_legend:
        fig.colorbar(ScalarMappable(norm=norm, cmap=colormap), ax=ax, label="layer")
    if handles:
        ax.legend(handles=handles, fontsize="small", loc="best", ncols=2 if len(handles) > 8 else 1)
    return _save(fig, path)


def _plot_series(
    ax: Axes, journal: JournalContents, key: str, label: str | None, **style: Any
) -> tuple[np.ndarray, np.ndarray]:
    steps, values = journal.series(key)
    # Infinities would wreck autoscaling; NaN just leaves a gap in the line, which is honest.
    values = np.where(np.isfinite(values), values, np.nan)
    marker = "o" if len(steps) < 30 else None  # sparse schedules: show where measurements were taken
    ax.plot(steps, values, label=label, marker=marker, markersize=3, **style)
    return steps, values


def _mark_events(ax: Axes, events: Sequence[Mapping[str, Any]], with_labels: bool) -> None:
    for event in events:
        step = _finite(event.get("step"))
        if step is None:
            continue
        label = (
            f"emergence @ {step:g} ({_short_behavior_label(event.get('metric'))})" if with_labels else None
        )
        ax.axvline(step, color="crimson", linestyle="-", linewidth=1.2, alpha=0.8, label=label)


def _mark_collapse(
    ax: Axes, steps: np.ndarray, values: np.ndarray, collapse: Mapping[str, Any], colour: Any
) -> None:
    floor_step, floor = _finite(collapse.get("floor_step")), _finite(collapse.get("floor"))
    if floor_step is not None and floor is not None:
        ax.plot([floor_step], [floor], marker="o", color=colour, markeredgecolor="black", markersize=7)
    for key, marker in (("collapse_step", "v"), ("recovery_onset", "^")):
        step = _finite(collapse.get(key))
        y = _value_at(steps, values, step) if step is not None else None
        if y is not None:
            ax.plot([step], [y], marker=marker, color=colour, markeredgecolor="black", markersize=8)


def _collapse_legend_handles() -> list[Line2D]:
    def handle(marker: str, label: str) -> Line2D:
        return Line2D(
            [],
            [],
            linestyle="none",
            marker=marker,
            color="white",
            markeredgecolor="black",
            markersize=7,
            label=label,
        )

    return [handle("v", "collapse step"), handle("o", "floor"), handle("^", "recovery onset")]


def _value_at(steps: np.ndarray, values: np.ndarray, step: float) -> float | None:
    """The series at ``step``, interpolated between measurements; ``None`` outside the measured range."""
    finite = np.isfinite(values)
    if not finite.any() or step < steps[finite][0] or step > steps[finite][-1]:
        return None
    return float(np.interp(step, steps[finite], values[finite]))


def _spans_decades(journal: JournalContents, keys: Sequence[str]) -> bool:
    """Log scale only when losses are all positive and span over two decades; otherwise linear reads better."""
    arrays = [journal.series(key)[1] for key in keys]
    values = np.concatenate(arrays) if arrays else np.array([])
    values = values[np.isfinite(values)]
    return bool(values.size) and values.min() > 0 and values.max() / values.min() > 100


def _save(fig: Figure, path: Path) -> str:
    fig.savefig(path, dpi=100)
    return path.name


def _short_behavior_label(key: Any) -> str:
    return str(key).removeprefix("behavior/") if key else "?"


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


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
        items += [_event_summary(event) for event in _analysis_list(data, "events")] or [
            "No emergence events."
        ]
        items += [_top_down_summary(entry) for entry in _analysis_list(data, "top_down")]
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
    collapse = _analysis_list(data, "collapse")
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
                    "num" if _finite(value) is not None else None,
                    cell_class(column, value) if cell_class else None,
                )
                if c
            ]
            attr = f' class="{_esc(" ".join(classes))}"' if classes else ""
            cells.append(f"<td{attr}>{_esc(_fmt(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


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
