"""The run report's plots: behaviour, each geometry family per layer, each probed feature; and the sweep
report's: precursor rates, collapse floors against size, onset against emergence order.

Each run plot reads a loaded run (``run_data.RunData``), each sweep plot the sweep summary; they write PNGs
with matplotlib's object API (no backend or display needed); ``run_page.py`` and ``sweep_page.py`` put them
on the page.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from emergence.analysis.sweep import difficulty_sort_key
from emergence.numbers import finite_number
from emergence.record import JournalContents

if TYPE_CHECKING:
    from emergence.reports.run_data import RunData

BEHAVIOR_PLOT = "behavior.png"
MAX_LEGEND_LAYERS = 12
_LAYER_KEY = re.compile(r"^geometry/(?P<family>.+)/L(?P<layer>\d+)$")
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9_-]+")
_PROBE_KEY = re.compile(r"^probe/(?P<family>[^/]+)/accuracy$")


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

    events = data.analysis_list("events")
    for event in events:
        threshold = finite_number(event.get("threshold"))
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
    _step_axis(loss_ax, data.journal)
    if _spans_decades(data.journal, loss_keys):
        loss_ax.set_yscale("log")
    for ax in (score_ax, loss_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a monitored run may log scores and no loss
            ax.legend(fontsize="small", loc="best")
    return _save(fig, path)


def plot_geometry_families(data: RunData, run_dir: Path) -> list[str]:
    """One PNG per geometry measure and hook site, one line per layer; returns the file names."""
    collapse_by_signal = {c.get("signal"): c for c in data.analysis_list("collapse")}
    events = data.analysis_list("events")
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
    events = data.analysis_list("events")
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
        onset = finite_number(verdict.get("onset_step"))
        if onset is not None:
            ax.axvline(onset, color="tab:green", linestyle=":", linewidth=1.5, label=f"probe onset @ {onset:g} ({verdict.get('verdict')})")
        _mark_events(ax, events, with_labels=True)
        _step_axis(ax, data.journal)
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


# Families the report plots elsewhere (behaviour, geometry, probes) or that are bookkeeping, not signals.
_NOT_SIGNAL_FAMILIES = ("behavior", "geometry", "probe", "train", "cost", "ablation")
_LAYER_OR_HEAD = re.compile(r"/(?:L|H)\d+")
MAX_SIGNAL_PANELS = 12


def signal_panels(keys: Iterable[str]) -> dict[str, dict[str, list[str]]]:
    """``{family: {panel: [keys]}}`` for every logged measure family the other plots do not cover: one panel
    per quantity, its layers and heads as lines in it (``commutator/qk/L0/H1`` goes to panel ``commutator/qk``)."""
    families: dict[str, dict[str, list[str]]] = {}
    for key in sorted(keys):
        family = key.split("/", 1)[0]
        if family in _NOT_SIGNAL_FAMILIES or "/" not in key or key.endswith("/unreliable"):
            continue
        panel = _LAYER_OR_HEAD.sub("", key)
        families.setdefault(family, {}).setdefault(panel, []).append(key)
    return families


def plot_signal_families(data: RunData, run_dir: Path) -> list[str]:
    """One PNG per other measure family (spectral edge, commutators, curvature, LLC, ...): a small panel per
    quantity, the emergence event as a red line, and each judged signal's onset as a black diamond, so a
    reader sees which signals moved before the behaviour did. Returns the file names."""
    onsets = {v.get("signal"): finite_number(v.get("onset_step")) for v in data.verdicts if v.get("kind", "signal") == "signal"}
    events = data.analysis_list("events")
    names = []
    for family, panels in signal_panels(data.journal.metric_keys()).items():
        shown = list(panels.items())[:MAX_SIGNAL_PANELS]
        columns = min(3, len(shown))
        rows = math.ceil(len(shown) / columns)
        fig = Figure(figsize=(4.2 * columns, 2.9 * rows + 0.6), layout="constrained")
        axes = fig.subplots(rows, columns, squeeze=False).ravel()  # not shared: a panel above an empty slot keeps its ticks
        for ax, (panel, keys) in zip(axes, shown, strict=False):
            for key in keys:
                label = key.removeprefix(panel).strip("/") or None
                steps, values = _plot_series(ax, data.journal, key, label if len(keys) > 1 else None, linewidth=1)
                onset = onsets.get(key)
                y = _value_at(steps, values, onset) if onset is not None else None
                if y is not None:
                    ax.plot([onset], [y], marker="D", color="black", markersize=6, zorder=5)
            _mark_events(ax, events, with_labels=False)
            if _spans_decades(data.journal, keys):
                ax.set_yscale("log")
            ax.set_title(panel.removeprefix(family + "/"), fontsize="medium")
            ax.grid(alpha=0.3)
            if len(keys) > 1:
                ax.legend(fontsize="x-small", loc="best", ncols=2 if len(keys) > 4 else 1)
            _step_axis(ax, data.journal)
        for index, ax in enumerate(axes):
            if index >= len(shown):
                ax.set_visible(False)
            elif index + columns < len(shown):
                ax.set_xlabel("")  # a panel below says "step" for this column
        hidden = len(panels) - len(shown)
        note = f" ({hidden} more quantities in the journal)" if hidden > 0 else ""
        fig.suptitle(f"{family}: onsets (black diamonds) against the emergence event (red){note}")
        names.append(_save(fig, run_dir / plot_filename(f"signals/{family}")))
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
    _step_axis(ax, journal)
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
        step = finite_number(event.get("step"))
        if step is None:
            continue
        label = (
            f"emergence @ {step:g} ({_short_behavior_label(event.get('metric'))})" if with_labels else None
        )
        ax.axvline(step, color="crimson", linestyle="-", linewidth=1.2, alpha=0.8, label=label)


def _mark_collapse(
    ax: Axes, steps: np.ndarray, values: np.ndarray, collapse: Mapping[str, Any], colour: Any
) -> None:
    floor_step, floor = finite_number(collapse.get("floor_step")), finite_number(collapse.get("floor"))
    if floor_step is not None and floor is not None:
        ax.plot([floor_step], [floor], marker="o", color=colour, markeredgecolor="black", markersize=7)
    for key, marker in (("collapse_step", "v"), ("recovery_onset", "^")):
        step = finite_number(collapse.get(key))
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


# A step axis is drawn symmetric-log when the steps span this many decades and their spacing is this uneven:
# a checkpoint series such as Pythia's (1, 2, 4 ... 512, then every 1,000 to 143,000), whose early checkpoints
# would otherwise sit in one pixel column. A trained run's schedule (powers of two to 16, then every 25) stays linear.
SYMLOG_MIN_DECADES = 3.5
SYMLOG_MIN_SPACING_RATIO = 100


def _step_axis(ax: Any, journal: JournalContents) -> None:
    ax.set_xlabel("step")
    steps = np.array(sorted({s for s, _ in journal.values}), dtype=float)
    positive = steps[steps > 0]
    if len(positive) < 3:
        return
    spacing = np.diff(steps)
    if np.log10(positive.max() / positive.min()) >= SYMLOG_MIN_DECADES and spacing.max() / spacing.min() >= SYMLOG_MIN_SPACING_RATIO:
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("step (symmetric log scale)")


def _save(fig: Figure, path: Path) -> str:
    fig.savefig(path, dpi=100)
    return path.name


def _short_behavior_label(key: Any) -> str:
    return str(key).removeprefix("behavior/") if key else "?"



# --- sweep plots ---------------------------------------------------------------------------------
# Each reads the summary dict of ``analysis.sweep.summarize_sweep`` (or its sweep.json), never a run
# directory, so a sweep report re-renders from sweep.json alone.

PRECURSOR_HEATMAP_PLOT = "sweep_precursor_rate.png"
COLLAPSE_FLOOR_PLOT = "sweep_collapse_floor.png"
CONCORDANCE_PLOT = "sweep_concordance.png"
MAX_FLOOR_LINES = 8  # per task panel: more lines than this read as noise
MAX_CONCORDANCE_PANELS = 12


def plot_precursor_heatmap(summary: Mapping[str, Any], path: Path) -> str | None:
    """Precursor rate per signal family (rows) and difficulty/size (columns), each cell ``k/n``; a cell
    where no event happened (n = 0) is grey, since a rate there would be a guess."""
    rows = [r for r in (summary.get("precursor_rate") or {}).get("by_family") or [] if isinstance(r, Mapping)]
    if not rows:
        return None
    families = sorted({str(r.get("family")) for r in rows})
    columns = _difficulty_size_columns(summary, rows)
    rates = np.full((len(families), len(columns)), np.nan)
    text = [["" for _ in columns] for _ in families]
    for r in rows:
        i, j = families.index(str(r.get("family"))), columns.index((str(r.get("difficulty")), str(r.get("size"))))
        rate = finite_number(r.get("rate"))
        rates[i, j] = np.nan if rate is None else rate
        text[i][j] = f"{r.get('precursor', 0)}/{r.get('n', 0)}" if r.get("n") else "no event"

    fig = Figure(figsize=(max(6.0, 1.3 * len(columns) + 4), max(2.5, 0.45 * len(families) + 1.8)), layout="constrained")
    ax = fig.subplots()
    colormap = colormaps["Greens"].with_extremes(bad="#e6e6e6")
    image = ax.imshow(np.ma.masked_invalid(rates), cmap=colormap, vmin=0, vmax=1, aspect="auto")
    for i in range(len(families)):
        for j in range(len(columns)):
            dark = np.isfinite(rates[i, j]) and rates[i, j] > 0.6
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize="small", color="white" if dark else "black")
    ax.set_xticks(range(len(columns)), [f"{d}\n{s}" for d, s in columns])
    ax.set_yticks(range(len(families)), families)
    ax.set_xlabel("difficulty / model size")
    # A figure title, not the axes': long family names on the left would push an axes title off the page.
    fig.suptitle("Precursor rate: precursor verdicts / verdicts on events that happened", fontsize="medium")
    fig.colorbar(image, ax=ax, label="precursor rate")
    return _save(fig, path)


CONDITIONS_PLOT = "sweep_conditions.png"


def plot_conditions(summary: Mapping[str, Any], path: Path) -> str | None:
    """Per signal (rows) and grid condition (bar colours): on the left the precursor verdicts out of the
    runs whose capability emerged, on the right the false alarms (an onset) out of the runs where it never
    did. Drawn only when some condition has runs of each kind to count, or more than one condition exists."""
    rows = [r for r in summary.get("by_condition") or [] if isinstance(r, Mapping)]
    conditions = sorted({str(r.get("condition")) for r in rows})
    if not rows or len(conditions) < 2:
        return None
    signals = sorted({str(r.get("signal")) for r in rows})
    cell = {(str(r.get("signal")), str(r.get("condition"))): r for r in rows}
    fig = Figure(figsize=(11.0, max(2.8, 0.42 * len(signals) * len(conditions) / 2 + 1.8)), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    height = 0.8 / len(conditions)
    colours = colormaps["tab10"]
    for c, condition in enumerate(conditions):
        offsets = np.arange(len(signals)) - 0.4 + height * (c + 0.5)
        for ax, count, total in ((left, "precursor", "events"), (right, "false_alarms", "no_event")):
            counts = [float(cell.get((s, condition), {}).get(count) or 0) for s in signals]
            totals = [int(cell.get((s, condition), {}).get(total) or 0) for s in signals]
            ax.barh(offsets, counts, height=height, color=colours(c % 10), label=condition)
            for y, k, n in zip(offsets, counts, totals, strict=True):
                ax.text(k, y, f" {int(k)}/{n}" if n else " -", va="center", fontsize="x-small")
    left.set_yticks(range(len(signals)), signals)
    left.invert_yaxis()
    left.set_xlabel("precursor verdicts / runs that emerged")
    right.set_xlabel("false alarms (an onset) / runs that did not emerge")
    left.legend(fontsize="x-small", loc="lower right")
    fig.suptitle("Per signal and condition: precursors where the capability emerged, false alarms where it did not", fontsize="medium")
    return _save(fig, path)


def plot_collapse_floors(summary: Mapping[str, Any], path: Path) -> str | None:
    """Collapse floor against parameter count (log x), one panel per task and difficulty, sd over seeds as
    error bars, the CV across sizes in the legend. Panels show each family's final layer (comparable across
    sizes) when there is one, else the signals without layers; the study's primary signal is drawn first."""
    collapse = summary.get("collapse_floor") or {}
    panels: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in collapse.get("rows") or []:
        panels.setdefault((str(row.get("task")), str(row.get("difficulty"))), []).append(row)
    panels = {key: _floor_lines(rows) for key, rows in panels.items()}
    panels = {key: rows for key, rows in panels.items() if rows}
    if not panels:
        return None
    n_cols = min(3, len(panels))
    n_rows = math.ceil(len(panels) / n_cols)
    fig = Figure(figsize=(5.2 * n_cols, 4.0 * n_rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols, squeeze=False)).ravel()
    for ax, ((task, difficulty), rows) in zip(axes, panels.items(), strict=False):
        for row in rows:
            points = [s for s in row.get("sizes") or [] if finite_number(s.get("n_params")) and finite_number(s.get("mean")) is not None]
            x = [float(s["n_params"]) for s in points]
            y = [float(s["mean"]) for s in points]
            sd = [finite_number(s.get("sd")) or 0.0 for s in points]
            cv = finite_number(row.get("cv"))
            label = f"{_short_signal(row.get('signal'))} (CV {cv:.3f})" if cv is not None else f"{_short_signal(row.get('signal'))} (CV —)"
            ax.errorbar(
                x, y, yerr=sd, marker="o", capsize=3, label=label,
                linewidth=2.2 if row.get("primary") else 1.2, zorder=3 if row.get("primary") else 2,
            )
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("collapse floor (mean over seeds)")
        ax.set_title(f"{task} {difficulty}")
        ax.grid(alpha=0.3, which="both")
        if ax.has_data():
            ax.legend(fontsize="small", loc="best")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return _save(fig, path)


def plot_concordance(summary: Mapping[str, Any], path: Path) -> str | None:
    """Onset step against event step per signal family, one point per run, layer and event, coloured by
    model size; points above the diagonal are onsets that came first. The title gives the concordance of
    the orders (pairs from different runs)."""
    rows = [r for r in (summary.get("concordance") or {}).get("by_family") or [] if len(r.get("items") or []) >= 2]
    if not rows:
        return None
    rows = sorted(rows, key=lambda r: -len(r["items"]))[:MAX_CONCORDANCE_PANELS]
    rows.sort(key=lambda r: str(r.get("family")))
    sizes = [s.get("size") for s in summary.get("sizes") or []]
    sizes += sorted({str(i.get("size")) for r in rows for i in r["items"]} - set(sizes))
    colours = {size: colormaps["tab10"](k % 10) for k, size in enumerate(sizes)}
    n_cols = min(3, len(rows))
    n_rows = math.ceil(len(rows) / n_cols)
    fig = Figure(figsize=(4.6 * n_cols, 4.2 * n_rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols, squeeze=False)).ravel()
    for ax, row in zip(axes, rows, strict=False):
        items = row["items"]
        for size in sizes:
            mine = [i for i in items if i.get("size") == size]
            if mine:
                ax.scatter([i["onset_step"] for i in mine], [i["event_step"] for i in mine], color=colours[size], label=str(size), alpha=0.8, s=22)
        low = min(min(i["onset_step"] for i in items), min(i["event_step"] for i in items))
        high = max(max(i["onset_step"] for i in items), max(i["event_step"] for i in items))
        ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1, label="onset = event")
        concordance = finite_number(row.get("concordance"))
        untied = int(row.get("concordant") or 0) + int(row.get("discordant") or 0)
        score = f"{concordance:.2f} ({row.get('concordant')}/{untied} pairs)" if concordance is not None else "— (no untied pair)"
        ax.set_title(f"{_short_signal(row.get('family'))}\nconcordance {score}", fontsize="medium")
        ax.set_xlabel("onset step")
        ax.set_ylabel("emergence step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", loc="best")
    for ax in axes[len(rows):]:
        ax.set_visible(False)
    return _save(fig, path)


def _difficulty_size_columns(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(difficulty, size) pairs: difficulties in level order, sizes by parameter count (the summary's order)."""
    size_rank = {str(s.get("size")): k for k, s in enumerate(summary.get("sizes") or [])}
    pairs = {(str(r.get("difficulty")), str(r.get("size"))) for r in rows}
    first_levels = summary.get("difficulty_levels") or {}
    return sorted(pairs, key=lambda pair: (difficulty_sort_key(pair[0], first_levels), size_rank.get(pair[1], len(size_rank)), pair[1]))


def _floor_lines(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    final = [r for r in rows if str(r.get("signal", "")).endswith("/final")]
    chosen = final or [r for r in rows if not re.search(r"/L\d+$", str(r.get("signal", "")))]
    chosen = sorted(chosen, key=lambda r: (not r.get("primary"), str(r.get("signal"))))
    return chosen[:MAX_FLOOR_LINES]


def _short_signal(signal: Any) -> str:
    return str(signal).removeprefix("geometry/") if signal else "?"
