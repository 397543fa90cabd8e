"""Across the runs of a sweep: precursor rates, collapse floors against model size, and whether geometric
onsets order the emergence events (METHODS.md, "Across runs").

The summary reads only what each run left in its ``analysis.json`` (through ``RunOutcome.analysis``), so it
can be rebuilt from finished run directories without retraining anything. Failed runs are listed with
their reasons and kept out of every rate: a run that stopped early has verdicts about a training it never
finished.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emergence.analysis.concordance import concordance_rows
from emergence.analysis.intervals import cv_interval, median_interval, wilson_interval
from emergence.numbers import is_finite_number, json_safe
from emergence.rundir import read_analysis, read_status
from emergence.spec.grid import point_label

if TYPE_CHECKING:
    from emergence.rundir import RunOutcome
    from emergence.spec.grid import RunSpec

SUMMARY_VERSION = 2  # bump when a key of the summary changes meaning, so old sweep.json files are recognised

# The study's headline collapse floor (modular arithmetic: RankMe ~ 2.0 at every size) is the final layer's
# RankMe on the residual stream; the report puts this signal first when a sweep measured it.
PRIMARY_FAMILY = "geometry/rankme/resid_post"
FINAL_LAYER = "final"
PRIMARY_SIGNAL = f"{PRIMARY_FAMILY}/{FINAL_LAYER}"

# Verdicts about an event that never happened say nothing about leading it (precursor.verdict_for).
NO_EVENT_VERDICT = "no_emergence"
JUDGED_VERDICTS = ("precursor", "synchronous", "lagging", "no_signal")

_LAYER_SUFFIX = re.compile(r"/L(?P<layer>\d+)$")
_LEVEL_SUFFIX = re.compile(r"/level_(?P<level>\d+)$")


@dataclass(frozen=True)
class SweepEntry:
    """One run of the sweep, reduced to what the summary groups by and the analysis it left behind."""

    run_key: str
    display_name: str
    state: str  # completed | failed | skipped (completed earlier and read back)
    task: str
    level: int | list[int]
    difficulty: str
    size: str
    n_params: int | None
    seed: int
    grid_point: dict[str, Any]
    analysis: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    level_classes: dict[int, str] = field(default_factory=dict)  # task.difficulty given per level

    @property
    def analysed(self) -> bool:
        """Whether this run's verdicts count: it did not fail and left an analysis behind."""
        return self.state != "failed" and bool(self.analysis)


# --- entries -------------------------------------------------------------------------------------


def difficulty_label(level: int | Sequence[int], difficulty: str | Mapping[int, str] | None = None) -> str:
    """The class a run is grouped under: the spec's ``task.difficulty`` when it names one (one label, or one per
    level: a mixture joins its levels' labels, ``"easy+hard"``), else the level, ``2`` -> ``"L2"``; a mixture
    ``[1, 2]`` -> ``"L1+2"``.

    Never how fast the run learnt: a class of "easy" runs defined by early emergence would leave no room for a
    signal to lead, and "easy tasks show no lead" would hold by construction. The level (or a label the
    experimenter fixes before training) is known before the run, so a rate by class is a finding."""
    if isinstance(difficulty, Mapping):
        levels = [level] if isinstance(level, int) else sorted(set(level))
        return "+".join(difficulty.get(lvl, f"L{lvl}") for lvl in levels)
    if difficulty is not None:
        return difficulty
    if isinstance(level, int):
        return f"L{level}"
    return "L" + "+".join(str(lvl) for lvl in sorted(set(level)))


def size_label(model: Any) -> str:
    """The preset's name when the spec used one (how a reader names sizes), else ``<layers>x<d_model>``; a
    checkpoint series by its repository or folder name; an MLP by its widths."""
    if getattr(model, "source", None) is not None:
        return Path(model.name or model.path).name
    if getattr(model, "kind", None) == "mlp":
        return "mlp" + "-".join(str(size) for size in model.sizes)
    return model.preset or f"{model.n_layers}x{model.d_model}"


def sweep_entries(runs: Sequence[RunSpec], outcomes: Sequence[RunOutcome]) -> list[SweepEntry]:
    """Pair each resolved run with its outcome by run key; a run the executor returned nothing for counts
    as failed rather than vanishing from the summary."""
    outcome_by_key = {outcome.run_key: outcome for outcome in outcomes}
    entries = []
    for run in runs:
        spec = run.spec
        outcome = outcome_by_key.get(run.run_key)
        level = spec.task.level if isinstance(spec.task.level, int) else list(spec.task.level)
        entries.append(
            SweepEntry(
                run_key=run.run_key,
                display_name=run.display_name,
                state=outcome.state if outcome else "failed",
                task=spec.task.name,
                level=level,
                difficulty=difficulty_label(level, getattr(spec.task, "difficulty", None)),
                level_classes=level_classes(getattr(spec.task, "difficulty", None)),
                size=size_label(spec.model),
                n_params=outcome.n_params if outcome else None,
                seed=spec.seed,
                grid_point=dict(run.grid_point),
                analysis=dict(outcome.analysis) if outcome else {},
                reason=outcome.reason if outcome else "the executor returned no outcome for this run",
            )
        )
    return entries


def entries_from_run_directories(sweep_dir: Path, summary: Mapping[str, Any]) -> list[SweepEntry]:
    """The runs of an earlier summary as their directories hold them now (state, reason, ``analysis.json``),
    with what the grid fixed (task, size, seed, parameter count) taken from the summary's rows, so that a
    sweep's summary follows its runs after ``emergence report`` has analysed them again. Runs live beside
    the sweeps folder: ``<output_dir>/<name>/sweeps/<key>/`` -> ``<output_dir>/<name>/<run_key>/``."""
    runs_root = Path(sweep_dir).parent.parent
    entries = []
    for row in summary.get("runs") or []:
        run_dir = runs_root / str(row["run_key"])
        status = read_status(run_dir) if run_dir.is_dir() else None
        analysis = read_analysis(run_dir)
        state, reason = (status.get("state"), status.get("reason")) if status else (row.get("state"), row.get("reason"))
        if not run_dir.is_dir():
            reason = f"run directory {run_dir} is gone; last known: {row.get('reason') or row.get('state')}"
        level = row.get("level", 1)
        entries.append(
            SweepEntry(
                run_key=str(row["run_key"]),
                display_name=str(row.get("name") or row["run_key"]),
                state=str(state or "failed"),
                task=str(row.get("task")),
                level=level,
                difficulty=str(row.get("difficulty") or difficulty_label(level)),
                size=str(row.get("size")),
                n_params=row.get("n_params"),
                seed=row.get("seed", 0),
                grid_point=dict(row.get("grid_point") or {}),
                analysis=analysis,
                reason=reason,
                level_classes=level_classes(row.get("level_classes")),
            )
        )
    return entries


# --- the summary ---------------------------------------------------------------------------------


def summarize_sweep(entries: Sequence[SweepEntry], sweep_key: str, name: str) -> dict[str, Any]:
    """Everything the sweep report shows, as a JSON-able dict (NaN and infinities become ``None``).

    Keys: ``version``, ``name``, ``sweep_key``; ``sizes`` (size, n_params; in parameter order);
    ``counts`` (runs, completed, skipped, failed, analysed, failed_runs, skipped_runs); ``runs`` (one row
    per run); ``precursor_rate`` (by_signal, by_family; rates with Wilson intervals, median leads with bootstrap
    intervals, robust and specific shares); ``top_down`` (rate per family and size); ``collapse_floor``
    (primary_signal, rows, each CV with an interval);
    ``concordance`` (by_signal, by_family, by_family_difficulty; family rows carry their items); ``by_condition`` (per signal and
    grid condition: precursors where the event came, false alarms where it did not); ``summaries`` (per
    summarised key and condition: each run's whole-run value, such as k*'s mode). Only runs that did
    not fail and left an analysis count in the sections after ``runs``.
    """
    analysed = [entry for entry in entries if entry.analysed]
    order = size_order(entries)
    first_levels = class_first_levels(entries)
    items = onset_items(analysed)
    floors = collapse_floors(analysed, order, first_levels)
    summary = {
        "version": SUMMARY_VERSION,
        "name": name,
        "sweep_key": sweep_key,
        "sizes": [{"size": size, "n_params": order[size][1]} for size in sorted(order, key=lambda s: size_sort_key(order, s))],
        "difficulty_levels": first_levels,  # a named class's lowest level: the order classes are shown in
        "counts": run_counts(entries),
        "runs": [run_row(entry) for entry in entries],
        "precursor_rate": {
            "by_signal": precursor_rates(analysed, order, signal_name, "signal", first_levels),
            "by_family": precursor_rates(analysed, order, family_of, "family", first_levels),
        },
        "top_down": top_down_rates(analysed, order),
        "collapse_floor": {
            "primary_signal": PRIMARY_SIGNAL if any(row["primary"] for row in floors) else None,
            "rows": floors,
        },
        "concordance": {
            "by_signal": concordance_rows(items, signal_name, "signal", across_runs_only=False, keep_items=False),
            "by_family": concordance_rows(items, family_of, "family", across_runs_only=True, keep_items=True),
            "by_family_difficulty": concordance_within_classes(items, first_levels),
        },
        "by_condition": condition_rows(analysed),
        "summaries": summary_rows(analysed),
    }
    return json_safe(summary)


def run_counts(entries: Sequence[SweepEntry]) -> dict[str, Any]:
    states = Counter(entry.state for entry in entries)

    def listed(state: str) -> list[dict[str, Any]]:
        return [
            {"run_key": e.run_key, "name": e.display_name, "reason": e.reason} for e in entries if e.state == state
        ]

    return {
        "runs": len(entries),
        "completed": states["completed"],
        "skipped": states["skipped"],
        "failed": states["failed"],
        "analysed": sum(entry.analysed for entry in entries),
        "failed_runs": listed("failed"),
        "skipped_runs": listed("skipped"),
    }


def run_row(entry: SweepEntry) -> dict[str, Any]:
    events = [e for e in entry.analysis.get("events") or [] if isinstance(e, dict)]
    verdicts = Counter(str(v.get("verdict")) for v in signal_verdicts(entry.analysis))
    return {
        "run_key": entry.run_key,
        "name": entry.display_name,
        "state": entry.state,
        "reason": entry.reason,
        "task": entry.task,
        "level": entry.level,
        "difficulty": entry.difficulty,
        "level_classes": entry.level_classes,
        "size": entry.size,
        "n_params": entry.n_params,
        "seed": entry.seed,
        "grid_point": entry.grid_point,
        # The first event is the spec's metric over the whole test set; the rest are a mixture's levels.
        "emergence_step": events[0].get("step") if events else None,
        "emergence_steps": {str(e.get("metric")): e.get("step") for e in events},
        "verdicts": dict(sorted(verdicts.items())),
    }


# --- grouping helpers ----------------------------------------------------------------------------


def signal_verdicts(analysis: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The per-signal verdicts of one run. Runs analysed before verdicts carried a ``kind`` hold only
    signal verdicts in this list (feature verdicts live under ``feature_verdicts``), so no kind = signal."""
    return [
        v for v in analysis.get("verdicts") or [] if isinstance(v, dict) and v.get("kind", "signal") == "signal"
    ]


def signal_name(signal: str) -> str:
    return signal


def family_of(signal: str) -> str:
    """``geometry/rankme/resid_post/L3`` -> ``geometry/rankme/resid_post``; a key without a layer is its own family."""
    return _LAYER_SUFFIX.sub("", signal)


def layer_of(signal: str) -> int | None:
    match = _LAYER_SUFFIX.search(signal)
    return int(match["layer"]) if match else None


def level_classes(difficulty: Any) -> dict[int, str]:
    """``task.difficulty`` given per level, as ``{level: class}`` (JSON's string keys made ints again); {} otherwise."""
    return {int(level): str(label) for level, label in difficulty.items()} if isinstance(difficulty, Mapping) else {}


def event_difficulty(entry: SweepEntry, event_metric: Any) -> str:
    """The difficulty of the capability an event marks: a mixture's per-level event (``.../level_2``) is
    the emergence of that level, so it counts as ``L2`` (or that level's class when the spec names one per
    level); the whole-test-set event keeps the run's class."""
    match = _LEVEL_SUFFIX.search(str(event_metric or ""))
    if not match:
        return entry.difficulty
    level = int(match["level"])
    return entry.level_classes.get(level, f"L{level}")


_LEVEL_LABEL = re.compile(r"L(\d+(?:\+\d+)*)")


def class_first_levels(entries: Sequence[SweepEntry]) -> dict[str, int]:
    """Each difficulty class a spec names (``task.difficulty``), with the lowest level of the sweep's runs it
    labels: ``{"easy": 1, "medium": 2, "hard": 3}``, what orders classes by difficulty rather than by name."""
    first: dict[str, int] = {}
    for entry in entries:
        levels = [entry.level] if isinstance(entry.level, int) else list(entry.level)
        labels = [(level, entry.level_classes.get(level)) for level in levels]
        labels += [(min(levels, default=0), entry.difficulty)]  # a mixture's joined label ("easy+hard") too
        for level, label in labels:
            if label and not level_numbers(label):
                first[label] = min(first.get(label, level), level)
    return first


def difficulty_sort_key(difficulty: str, first_levels: Mapping[str, int] | None = None) -> tuple[int, tuple[int, ...], str]:
    """A spec's own classes first, by the lowest level each labels (``easy, medium, hard``: ``first_levels``,
    from :func:`class_first_levels`; by name where unknown); then single levels in order, then mixtures:
    ``L1, L2, L3, L1+2, L1+2+3``."""
    levels = level_numbers(difficulty)
    if not levels:
        return (0, ((first_levels or {}).get(difficulty, 10**9),), difficulty)
    return (len(levels), levels, difficulty)


def level_numbers(difficulty: str) -> tuple[int, ...]:
    """The levels of a label made from levels (``L2`` -> (2,), ``L1+2`` -> (1, 2)); () for a class a spec names."""
    match = _LEVEL_LABEL.fullmatch(difficulty)
    return tuple(int(part) for part in match[1].split("+")) if match else ()


def size_order(entries: Sequence[SweepEntry]) -> dict[str, tuple[float, int | None]]:
    """Each size's sort key and parameter count: the median count over its runs (different tasks have
    different vocabularies, so one size's count varies a little); sizes with no count sort last."""
    counts: dict[str, list[int]] = {}
    for entry in entries:
        counts.setdefault(entry.size, []).extend([entry.n_params] if entry.n_params is not None else [])
    order = {}
    for size, known in counts.items():
        median = int(np.median(known)) if known else None
        order[size] = (float(median) if median is not None else math.inf, median)
    return order


def size_sort_key(order: Mapping[str, tuple[float, int | None]], size: str) -> tuple[float, str]:
    return (order.get(size, (math.inf, None))[0], size)


# --- precursor rate ------------------------------------------------------------------------------


def precursor_rates(
    entries: Sequence[SweepEntry],
    order: Mapping[str, tuple[float, int | None]],
    group: Callable[[str], str],
    label: str,
    first_levels: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Precursor rate per (signal or family, difficulty, size), with what makes it trustworthy; difficulties in
    order of ``first_levels`` (:func:`difficulty_sort_key`).

    One trial is one verdict: a signal (one layer of a family) against one emergence event of one run.
    ``n`` counts only trials whose event happened; a ``no_emergence`` verdict is shown in its own column
    but is no evidence either way. ``no_signal`` does count: the event came and the signal showed nothing.

    Beside the rate: its Wilson 95% interval (``rate_low``, ``rate_high``); the median lead in steps, a median
    over runs of each run's median lead, with a bootstrap interval over runs (the replicates: seeds, and tasks
    where a cell holds several); among the judged trials the share robust over the analysis grid and the
    share specific against the null control (over those where each was decided); and the **trusted rate**,
    precursors that are both robust and specific, with its interval (None unless every trial was decided).
    """
    cells: dict[tuple[str, str, str], list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for entry in entries:
        for verdict in signal_verdicts(entry.analysis):
            key = (group(str(verdict.get("signal"))), event_difficulty(entry, verdict.get("event_metric")), entry.size)
            cells[key].append((entry.run_key, verdict))
    rows = []
    for key in sorted(cells, key=lambda k: (k[0], difficulty_sort_key(k[1], first_levels), size_sort_key(order, k[2]))):
        name, difficulty, size = key
        members = cells[key]
        tally = Counter(str(verdict.get("verdict")) for _, verdict in members)
        judged = [verdict for _, verdict in members if verdict.get("verdict") in JUDGED_VERDICTS]
        rate_interval = wilson_interval(tally["precursor"], len(judged))
        leads = run_median_leads(members)
        rows.append(
            {
                label: name,
                "difficulty": difficulty,
                "size": size,
                "n_params": order.get(size, (math.inf, None))[1],
                "runs": len({run_key for run_key, _ in members}),
                "n": len(judged),
                "precursor": tally["precursor"],
                "rate": tally["precursor"] / len(judged) if judged else None,
                "rate_low": rate_interval[0] if rate_interval else None,
                "rate_high": rate_interval[1] if rate_interval else None,
                **{verdict: tally[verdict] for verdict in JUDGED_VERDICTS[1:]},
                NO_EVENT_VERDICT: tally[NO_EVENT_VERDICT],
                **median_lead(leads),
                **trust(judged),
            }
        )
    return rows


def run_median_leads(members: Sequence[tuple[str, Mapping[str, Any]]]) -> list[float]:
    """Each run's median lead in steps over its verdicts in a cell that have both an onset and an event."""
    by_run: dict[str, list[float]] = defaultdict(list)
    for run_key, verdict in members:
        if is_finite_number(verdict.get("lead_steps")):
            by_run[run_key].append(float(verdict["lead_steps"]))
    return [float(np.median(leads)) for leads in by_run.values()]


def median_lead(run_leads: Sequence[float]) -> dict[str, Any]:
    interval = median_interval(run_leads)
    return {
        "median_lead_steps": float(np.median(run_leads)) if run_leads else None,
        "median_lead_low": interval[0] if interval else None,
        "median_lead_high": interval[1] if interval else None,
        "lead_runs": len(run_leads),
    }


def trust(judged: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Robust and specific shares of judged verdicts, and the rate of precursors that are both."""
    robust_known = [v for v in judged if v.get("robust") is not None]
    specific_known = [v for v in judged if v.get("specific") is not None]
    trusted = sum(v.get("verdict") == "precursor" and v.get("robust") is True and v.get("specific") is True for v in judged)
    # A precursor whose specificity is undecided (no onset: impossible; no control: the whole cell) cannot be
    # counted either way, so the trusted rate needs every precursor decided on both counts.
    precursors = [v for v in judged if v.get("verdict") == "precursor"]
    decided = all(v.get("robust") is not None and v.get("specific") is not None for v in precursors) and bool(
        robust_known and specific_known
    )
    interval = wilson_interval(trusted, len(judged)) if decided else None
    return {
        "robust": sum(v.get("robust") is True for v in robust_known),
        "robust_known": len(robust_known),
        "robust_share": sum(v.get("robust") is True for v in robust_known) / len(robust_known) if robust_known else None,
        "specific": sum(v.get("specific") is True for v in specific_known),
        "specific_known": len(specific_known),
        "specific_share": sum(v.get("specific") is True for v in specific_known) / len(specific_known) if specific_known else None,
        "trusted_precursor": trusted if decided else None,
        "trusted_rate": trusted / len(judged) if decided and judged else None,
        "trusted_low": interval[0] if interval else None,
        "trusted_high": interval[1] if interval else None,
    }


# --- top-down order ------------------------------------------------------------------------------

ALL_SIZES = "all"


def top_down_rates(entries: Sequence[SweepEntry], order: Mapping[str, tuple[float, int | None]]) -> list[dict[str, Any]]:
    """How often the collapse runs top-down (Spearman rho(layer, collapse step) < 0), per family and size and
    per family over every size (``size: "all"``), with a Wilson 95% interval. One trial is one (run, family)
    whose order could be decided: at least two layers collapsed, at different steps (rho defined)."""
    cells: dict[tuple[str, str], list[tuple[SweepEntry, bool]]] = defaultdict(list)
    for entry in entries:
        for family in entry.analysis.get("top_down") or []:
            if not isinstance(family, Mapping) or not is_finite_number(family.get("spearman_rho")):
                continue
            holds = float(family["spearman_rho"]) < 0
            for size in (entry.size, ALL_SIZES):
                cells[(str(family.get("family")), size)].append((entry, holds))
    rows = []
    for family, size in sorted(cells, key=lambda k: (k[0], k[1] == ALL_SIZES, size_sort_key(order, k[1]))):
        trials = cells[(family, size)]
        holds = sum(h for _, h in trials)
        interval = wilson_interval(holds, len(trials))
        rows.append(
            {
                "family": family,
                "size": size,
                "tasks": len({entry.task for entry, _ in trials}),
                "n": len(trials),
                "top_down": holds,
                "rate": holds / len(trials),
                "rate_low": interval[0] if interval else None,
                "rate_high": interval[1] if interval else None,
            }
        )
    return rows


# --- per grid condition: precursors where the capability emerged, false alarms where it did not ----------

CONDITION_ALL = "all"  # the condition of a sweep whose grid varies nothing but the seed


def condition_of(entry: SweepEntry) -> str:
    """The run's grid point without its seed (``training.optimizer.weight_decay=1.0``): the seeds of one
    condition are its repetitions."""
    point = {key: value for key, value in entry.grid_point.items() if key != "seed"}
    return ", ".join(point_label(key, value) for key, value in point.items()) or CONDITION_ALL


def condition_rows(entries: Sequence[SweepEntry]) -> list[dict[str, Any]]:
    """Per (signal, condition): over the verdicts whose event happened, how many were precursors and by how
    many steps each signal led (negative: it lagged); over those whose event never came (a control that
    should not grok), how many still showed an onset: a **false alarm**, the signal firing with nothing to
    announce. A rule that always finds an onset (the peak) false-alarms in every such run by construction:
    read its count beside its rule (``onset_rules``)."""
    cells: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        for verdict in signal_verdicts(entry.analysis):
            cells[(str(verdict.get("signal")), condition_of(entry))].append({**verdict, "run_key": entry.run_key})
    rows = []
    for (signal, condition), verdicts in sorted(cells.items()):
        emerged = [v for v in verdicts if v.get("event_step") is not None]
        quiet = [v for v in verdicts if v.get("event_step") is None]
        leads = [float(v["lead_steps"]) for v in emerged if is_finite_number(v.get("lead_steps"))]
        precursor_leads = [float(v["lead_steps"]) for v in emerged if v.get("verdict") == "precursor" and is_finite_number(v.get("lead_steps"))]
        alarms = [v for v in quiet if v.get("onset_step") is not None]
        rows.append(
            {
                "signal": signal,
                "condition": condition,
                "runs": len({v["run_key"] for v in verdicts}),
                "events": len(emerged),
                "precursor": sum(v.get("verdict") == "precursor" for v in emerged),
                "synchronous": sum(v.get("verdict") == "synchronous" for v in emerged),
                "lagging": sum(v.get("verdict") == "lagging" for v in emerged),
                "no_signal": sum(v.get("verdict") == "no_signal" for v in emerged),
                # Of the verdicts where it emerged: the same over the robustness grid; onset not shared by the control.
                "robust": sum(v.get("robust") is True for v in emerged),
                "specific": sum(v.get("specific") is True for v in emerged),
                "trusted_precursor": sum(
                    v.get("verdict") == "precursor" and v.get("robust") is True and v.get("specific") is True for v in emerged
                ),
                "mean_lead_steps": float(np.mean(leads)) if leads else None,
                "mean_precursor_lead_steps": float(np.mean(precursor_leads)) if precursor_leads else None,
                "leads": leads,
                "no_event": len(quiet),
                "false_alarms": len(alarms),
                "false_alarm_onsets": [v.get("onset_step") for v in alarms],
                "onset_rules": sorted({str(v.get("onset_rule")) for v in verdicts if v.get("onset_rule")}),
            }
        )
    return rows


def summary_rows(entries: Sequence[SweepEntry]) -> list[dict[str, Any]]:
    """Per (summarised key, condition): each run's whole-run value (``analysis/summaries.py``: the spectral gap
    position's most frequent value) and share, and the value most runs give, so conditions compare at a glance
    (k* under AdamW against Muon)."""
    cells: dict[tuple[str, str], list[tuple[str, Mapping[str, Any]]]] = defaultdict(list)
    for entry in entries:
        for key, whole_run in (entry.analysis.get("summaries") or {}).items():
            cells[(key, condition_of(entry))].append((entry.run_key, whole_run))
    rows = []
    for (key, condition), members in sorted(cells.items()):
        values = [float(whole_run["value"]) for _, whole_run in members]
        counts = Counter(values)
        rows.append(
            {
                "key": key,
                "condition": condition,
                "statistic": members[0][1].get("statistic"),
                "runs": len(members),
                "value": min(counts, key=lambda value: (-counts[value], value)),
                "run_values": values,
                "run_shares": [float(whole_run.get("share", float("nan"))) for _, whole_run in members],
                "run_keys": [run_key for run_key, _ in members],
            }
        )
    return rows


# --- collapse floor ------------------------------------------------------------------------------


def collapse_floors(
    entries: Sequence[SweepEntry], order: Mapping[str, tuple[float, int | None]], first_levels: Mapping[str, int] | None = None
) -> list[dict[str, Any]]:
    """Collapse floor per (task, difficulty, signal) and size, and its coefficient of variation across sizes.

    Per size: the mean floor over the runs of that size (seeds), with the sample standard deviation
    (ddof = 1: the seeds are a sample of what training could give; ``None`` for a single run).
    Across sizes: CV = population standard deviation (ddof = 0) of the per-size means over their mean.
    Population, because the sizes in the sweep are the whole set the scale-invariance claim is about, not
    a sample of sizes; it also keeps two sizes comparable with more (for two, CV = |a - b| / (a + b)).
    ``None`` with fewer than two sizes or a zero mean. ``cv_low``, ``cv_high``: a 95% bootstrap interval that
    resamples each size's runs (seeds) on its own; None when a size has a single run.

    Besides each measured key, every per-layer family gets a ``<family>/final`` row from each run's deepest
    measured layer, since layer ``L3`` is the last layer of one size and a middle layer of the next.
    """
    floors: dict[tuple[str, str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    params: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for entry in entries:
        if entry.n_params is not None:
            params[(entry.task, entry.difficulty, entry.size)].append(entry.n_params)
        for signal, floor in run_floors(entry.analysis).items():
            floors[(entry.task, entry.difficulty, signal)][entry.size].append(floor)

    def primary_first(key: tuple[str, str, str]) -> tuple[Any, ...]:
        task, difficulty, signal = key
        return (task, difficulty_sort_key(difficulty, first_levels), signal != PRIMARY_SIGNAL, signal)

    rows = []
    for task, difficulty, signal in sorted(floors, key=primary_first):
        by_size = floors[(task, difficulty, signal)]
        sizes = [
            size_floor(size, by_size[size], params.get((task, difficulty, size)), order)
            for size in sorted(by_size, key=lambda s: size_sort_key(order, s))
        ]
        interval = cv_interval([s["floors"] for s in sizes])
        rows.append(
            {
                "task": task,
                "difficulty": difficulty,
                "signal": signal,
                "primary": signal == PRIMARY_SIGNAL,
                "sizes": sizes,
                "cv": coefficient_of_variation([s["mean"] for s in sizes]),
                "cv_low": interval[0] if interval else None,
                "cv_high": interval[1] if interval else None,
            }
        )
    return rows


def run_floors(analysis: Mapping[str, Any]) -> dict[str, float]:
    """Signal -> collapse floor for one run, plus ``<family>/final`` for each family's deepest layer."""
    floors: dict[str, float] = {}
    deepest: dict[str, tuple[int, float]] = {}
    for row in analysis.get("collapse") or []:
        if not isinstance(row, dict) or not is_finite_number(row.get("floor")):
            continue
        signal, floor = str(row.get("signal")), float(row["floor"])
        floors[signal] = floor
        layer = layer_of(signal)
        family = family_of(signal)
        if layer is not None and (family not in deepest or layer > deepest[family][0]):
            deepest[family] = (layer, floor)
    floors.update({f"{family}/{FINAL_LAYER}": floor for family, (_, floor) in deepest.items()})
    return floors


def size_floor(
    size: str, floors: Sequence[float], counts: Sequence[int] | None, order: Mapping[str, tuple[float, int | None]]
) -> dict[str, Any]:
    values = np.asarray(floors, dtype=float)
    n_params = int(np.median(counts)) if counts else order.get(size, (math.inf, None))[1]
    return {
        "size": size,
        "n_params": n_params,
        "n": len(values),
        "mean": float(values.mean()),
        "sd": float(values.std(ddof=1)) if len(values) > 1 else None,
        "floors": [float(v) for v in values],
    }


def coefficient_of_variation(means: Sequence[float]) -> float | None:
    """Population standard deviation over mean (see ``collapse_floors``); ``None`` when undefined."""
    values = np.asarray(means, dtype=float)
    if len(values) < 2 or values.mean() == 0:
        return None
    return float(values.std(ddof=0) / abs(values.mean()))


# --- concordance ---------------------------------------------------------------------------------


def onset_items(entries: Sequence[SweepEntry]) -> list[dict[str, Any]]:
    """Every (run, signal, event) with both an onset and an event step: the points the ordering is judged on."""
    items = []
    for entry in entries:
        for verdict in signal_verdicts(entry.analysis):
            onset, event = verdict.get("onset_step"), verdict.get("event_step")
            if not (is_finite_number(onset) and is_finite_number(event)):
                continue
            signal = str(verdict.get("signal"))
            items.append(
                {
                    "run_key": entry.run_key,
                    "signal": signal,
                    "layer": layer_of(signal),
                    "size": entry.size,
                    "difficulty": event_difficulty(entry, verdict.get("event_metric")),
                    "event_metric": verdict.get("event_metric"),
                    "onset_step": onset,
                    "event_step": event,
                }
            )
    return items


def concordance_within_classes(items: Sequence[dict[str, Any]], first_levels: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """Concordance per family within each difficulty class: whether onsets order the events among runs of one
    class (the anatomy study's within-class figure), where a sweep across classes could be concordant only
    because hard tasks both change and emerge later."""
    rows = []
    for difficulty in sorted({item["difficulty"] for item in items}, key=lambda d: difficulty_sort_key(d, first_levels)):
        members = [item for item in items if item["difficulty"] == difficulty]
        rows += [{"difficulty": difficulty, **row} for row in concordance_rows(members, family_of, "family", True, False)]
    return rows


__all__ = [
    "PRIMARY_SIGNAL",
    "SweepEntry",
    "coefficient_of_variation",
    "difficulty_label",
    "entries_from_run_directories",
    "summarize_sweep",
    "sweep_entries",
]
