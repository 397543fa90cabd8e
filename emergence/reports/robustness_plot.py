"""The run report's robustness heat map: each verdict (a row: signal against event) decided again at every
setting of the analysis grid (a column: threshold x persistence x margin), coloured by verdict, with the
run's own setting outlined. A row of one colour is a robust verdict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

ROBUSTNESS_PLOT = "robustness.png"
ROWS_PER_FIGURE = 40  # more rows than this go on further figures (robustness_2.png ...), each still legible

# Stronger versions of the verdict colours of the HTML tables, so that a small cell still reads.
VERDICT_COLOURS = {
    "precursor": "#43a047",
    "synchronous": "#fdd835",
    "lagging": "#e53935",
    "no_signal": "#9e9e9e",
    "no_emergence": "#eeeeee",
}
OTHER_COLOUR = "#7e57c2"


def robustness_plot_names(n_rows: int) -> list[str]:
    figures = max(1, -(-n_rows // ROWS_PER_FIGURE))
    return [ROBUSTNESS_PLOT] + [f"robustness_{i}.png" for i in range(2, figures + 1)]


def plot_robustness(grid: Mapping[str, Any] | None, run_dir: Path) -> list[str]:
    """Write the heat map(s) of ``analysis.json``'s ``robustness`` section; their file names, [] without one."""
    if not grid or not grid.get("rows") or not grid.get("settings"):
        return []
    rows = [row for row in grid["rows"] if isinstance(row, Mapping)]
    settings = list(grid["settings"])
    several_events = len({row.get("event_metric") for row in rows}) > 1
    names = robustness_plot_names(len(rows))
    for index, name in enumerate(names):
        chunk = rows[index * ROWS_PER_FIGURE : (index + 1) * ROWS_PER_FIGURE]
        _draw(chunk, settings, grid.get("plain") or {}, several_events, Path(run_dir) / name)
    return names


def _draw(rows: Sequence[Mapping[str, Any]], settings: Sequence[Mapping[str, Any]], plain: Mapping[str, Any], several_events: bool, path: Path) -> None:
    kinds = list(VERDICT_COLOURS)
    codes = np.array([[kinds.index(v) if v in kinds else len(kinds) for v in row.get("grid") or []] for row in rows])
    colours = ListedColormap([*VERDICT_COLOURS.values(), OTHER_COLOUR])
    fig = Figure(figsize=(max(6.0, 2.5 + 0.22 * len(settings)), 1.6 + 0.24 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(codes, cmap=colours, vmin=-0.5, vmax=len(kinds) + 0.5, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(rows)), [_row_label(row, several_events) for row in rows], fontsize=7)
    ax.set_xticks(range(len(settings)), [f"k{s['persistence']:g} m{s['margin']:g}" for s in settings], fontsize=6, rotation=90)
    # Thresholds change slowest: one label above each block of columns, and a line between blocks.
    thresholds = [s["threshold"] for s in settings]
    starts = [i for i, t in enumerate(thresholds) if i == 0 or t != thresholds[i - 1]]
    top = ax.secondary_xaxis("top")
    block_centres = [(start + (starts[j + 1] if j + 1 < len(starts) else len(settings)) - 1) / 2 for j, start in enumerate(starts)]
    top.set_xticks(block_centres, [f"threshold {thresholds[s]:g}" for s in starts], fontsize=7)
    for start in starts[1:]:
        ax.axvline(start - 0.5, color="white", linewidth=2)
    for row in range(1, len(rows)):
        ax.axhline(row - 0.5, color="white", linewidth=0.8)
    own = [
        i for i, s in enumerate(settings)
        if s["threshold"] == plain.get("threshold") and s["persistence"] == plain.get("persistence") and s["margin"] == plain.get("margin")
    ]
    for column in own:  # the run's own setting: its plain verdicts
        ax.add_patch(Rectangle((column - 0.5, -0.5), 1, len(rows), fill=False, edgecolor="black", linewidth=1.5))
    ax.set_xlabel("persistence k (event and onset) and precursor margin m (intervals)", fontsize=8)
    handles = [Patch(facecolor=colour, edgecolor="#999", label=kind) for kind, colour in VERDICT_COLOURS.items()]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=7, frameon=False)
    fig.savefig(path, dpi=100)


def _row_label(row: Mapping[str, Any], several_events: bool) -> str:
    signal = str(row.get("signal"))
    event = f" @ {str(row.get('event_metric')).rsplit('/', 1)[-1]}" if several_events else ""
    mark = "robust" if row.get("robust") else f"{float(row.get('share') or 0):.0%} agree"
    return f"{signal}{event} ({mark})"
