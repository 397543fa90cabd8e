"""Print the README's anatomy-study tables (Markdown) from the sweep summaries the runs wrote.

    python examples/anatomy_tables.py runs/anatomy/sweeps/<key>/sweep.json [runs/anatomy-curvature/sweeps/<key>/sweep.json]

Everything comes from ``sweep.json`` (what ``emergence run`` and ``emergence report <sweep dir>`` write); this
script only pools rows over model sizes where the README wants a figure per difficulty class, recomputing the
Wilson interval from the pooled counts.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from emergence.analysis.intervals import wilson_interval
from emergence.analysis.sweep import difficulty_sort_key

FINAL = "final layer"


def percent(part: int, whole: int) -> str:
    if not whole:
        return "–"
    interval = wilson_interval(part, whole)
    assert interval is not None
    return f"{100 * part / whole:.0f}% [{100 * interval[0]:.0f}, {100 * interval[1]:.0f}] ({part}/{whole})"


def number(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def layer(signal: str) -> int | None:
    tail = signal.rsplit("/", 1)[-1]
    return int(tail[1:]) if tail.startswith("L") and tail[1:].isdigit() else None


def family(signal: str) -> str:
    return signal.rsplit("/", 1)[0] if layer(signal) is not None else signal


def pooled(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for row in rows:
        for key in ("n", "precursor", "synchronous", "lagging", "no_signal", "no_emergence", "robust", "robust_known",
                    "specific", "specific_known", "trusted_precursor"):
            totals[key] += int(row.get(key) or 0)
    return totals


def precursor_table(summary: Mapping[str, Any]) -> str:
    """Per signal family (all layers, and the final layer alone) and difficulty class, pooled over sizes."""
    by_signal = summary["precursor_rate"]["by_signal"]
    deepest: dict[tuple[str, str], int] = {}
    for row in by_signal:
        if (index := layer(row["signal"])) is not None:
            key = (family(row["signal"]), row["size"])
            deepest[key] = max(deepest.get(key, -1), index)
    cells: dict[tuple[str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for row in by_signal:
        name = family(row["signal"])
        cells[(name, "all layers", row["difficulty"])].append(row)
        if layer(row["signal"]) == deepest.get((name, row["size"])):
            cells[(name, FINAL, row["difficulty"])].append(row)
    lines = [
        "| signal | layers | class | events judged | precursor rate [95% CI] | sync / lag / none | robust | specific | precursor, robust and specific |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    levels = summary.get("difficulty_levels") or {}
    for (name, layers, difficulty), rows in sorted(cells.items(), key=lambda cell: (*cell[0][:2], difficulty_sort_key(cell[0][2], levels))):
        t = pooled(rows)
        lines.append(
            f"| {name} | {layers} | {difficulty} | {t['n']} | {percent(t['precursor'], t['n'])} | "
            f"{t['synchronous']} / {t['lagging']} / {t['no_signal']} | {percent(t['robust'], t['robust_known'])} | "
            f"{percent(t['specific'], t['specific_known'])} | {percent(t['trusted_precursor'], t['n'])} |"
        )
    return "\n".join(lines)


def emergence_table(summary: Mapping[str, Any]) -> str:
    """Which runs emerged (and when), per task, level and size: the denominator of every rate above."""
    cells: dict[tuple[str, Any], dict[str, Any]] = defaultdict(dict)
    sizes: list[str] = [s["size"] for s in summary["sizes"]]
    for run in summary["runs"]:
        cells[(run["task"], run["difficulty"])][run["size"]] = run.get("emergence_step")
    lines = ["| task | class | " + " | ".join(sizes) + " |", "|---|---|" + "---|" * len(sizes)]
    levels = summary.get("difficulty_levels") or {}
    for (task, difficulty), by_size in sorted(cells.items(), key=lambda cell: (cell[0][0], difficulty_sort_key(cell[0][1], levels))):
        shown = [("–" if by_size.get(size) is None else str(by_size[size])) for size in sizes]
        lines.append(f"| {task} | {difficulty} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def floor_table(summary: Mapping[str, Any]) -> str:
    primary = summary["collapse_floor"]["primary_signal"]
    rows = [row for row in summary["collapse_floor"]["rows"] if row["signal"] == primary]
    sizes = [s["size"] for s in summary["sizes"]]
    lines = ["| task | class | " + " | ".join(sizes) + " | CV across sizes [95% CI] |", "|---|---|" + "---|" * (len(sizes) + 1)]
    for row in rows:
        by_size = {s["size"]: s["mean"] for s in row["sizes"]}
        interval = "" if row.get("cv_low") is None else f" [{number(row['cv_low'], 2)}, {number(row['cv_high'], 2)}]"
        lines.append(
            f"| {row['task']} | {row['difficulty']} | " + " | ".join(number(by_size.get(size)) for size in sizes)
            + f" | {number(row.get('cv'), 2)}{interval} |"
        )
    return f"{primary}\n\n" + "\n".join(lines)


def top_down_table(summary: Mapping[str, Any]) -> str:
    lines = ["| family | size | top-down [95% CI] | tasks |", "|---|---|---|---|"]
    for row in summary["top_down"]:
        lines.append(f"| {row['family']} | {row['size']} | {percent(row['top_down'], row['n'])} | {row['tasks']} |")
    return "\n".join(lines)


def concordance_table(summary: Mapping[str, Any]) -> str:
    lines = ["| family | class | pairs (untied) | concordance | Kendall tau-b |", "|---|---|---|---|---|"]
    rows = [{**row, "difficulty": "all"} for row in summary["concordance"]["by_family"]]
    rows += summary["concordance"].get("by_family_difficulty") or []
    for row in rows:
        untied = row["concordant"] + row["discordant"]
        lines.append(f"| {row['family']} | {row['difficulty']} | {untied} | {number(row.get('concordance'), 2)} | {number(row.get('kendall_tau'), 2)} |")
    return "\n".join(lines)


def verdict_table(summary: Mapping[str, Any]) -> str:
    """Per family over the whole sweep: how each signal's verdicts fell where the capability emerged."""
    cells: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in summary["precursor_rate"]["by_family"]:
        cells[row["family"]].append(row)
    lines = [
        "| signal | events judged | precursor | synchronous | lagging | no signal | specific | robust |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in sorted(cells.items()):
        t = pooled(rows)
        lines.append(
            f"| {name} | {t['n']} | {t['precursor']} | {t['synchronous']} | {t['lagging']} | {t['no_signal']} | "
            f"{percent(t['specific'], t['specific_known'])} | {percent(t['robust'], t['robust_known'])} |"
        )
    return "\n".join(lines)


def main(paths: list[str]) -> None:
    summary = json.loads(Path(paths[0]).read_text())
    counts = summary["counts"]
    print(f"## {summary['name']} (sweep {summary['sweep_key']}): {counts}\n")
    for title, text in (
        ("Emergence step per task, class and size (– = never)", emergence_table(summary)),
        ("Precursor rate by signal and class", precursor_table(summary)),
        ("Collapse floor", floor_table(summary)),
        ("Top-down collapse", top_down_table(summary)),
        ("Concordance of onset and emergence order", concordance_table(summary)),
    ):
        print(f"### {title}\n\n{text}\n")
    if len(paths) > 1:
        curvature = json.loads(Path(paths[1]).read_text())
        print(f"### {curvature['name']}: verdicts per signal\n\n{verdict_table(curvature)}\n")
        print(f"### {curvature['name']}: emergence steps\n\n{emergence_table(curvature)}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
