"""Whether a signal's onsets order the emergence events they precede: pairwise concordance over (run, signal,
event) items, with Kendall's tau-b, counting only pairs from different runs where the layers of one run would
otherwise pair up over the same event (``summarize_sweep``'s ``concordance`` section)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import kendalltau

from emergence.numbers import finite_number

PAIR_BLOCK_ROWS = 1024  # rows of the pair matrices held at once by pair_counts

# What the report's concordance plot needs of each (run, signal, event) item.
ITEM_FIELDS = ("run_key", "signal", "layer", "size", "difficulty", "event_metric", "onset_step", "event_step")


def concordance_rows(
    items: Sequence[dict[str, Any]], group: Callable[[str], str], label: str, across_runs_only: bool, keep_items: bool
) -> list[dict[str, Any]]:
    """Does the signal's onset order the emergence events? Per group of items (one signal, or one family).

    A pair of items is concordant when onset and event are ordered the same way (strictly), discordant when
    opposite; a tie in either is left out of the concordance. ``across_runs_only`` keeps only pairs from
    different runs: within one run the layers of a family share the event, so such pairs say nothing about
    the order of events. Kendall's tau-b comes from scipy over all items when every pair counts; with pairs
    restricted, from the same formula on the kept pairs, (C - D) / sqrt((P - T_onset) (P - T_event)).
    ``keep_items`` puts the items in each row (for the report's scatter plot; a family's items hold its
    signals', so the summary keeps them once).
    """
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        groups[group(item["signal"])].append(item)
    rows = []
    for name in sorted(groups):
        members = groups[name]
        onsets = np.array([m["onset_step"] for m in members], dtype=float)
        events = np.array([m["event_step"] for m in members], dtype=float)
        # Integer run codes: comparing them is several times faster than comparing key strings.
        runs = np.unique([m["run_key"] for m in members], return_inverse=True)[1] if across_runs_only else None
        pairs = pair_counts(onsets, events, runs)
        tau, p_value = kendall(onsets, events, pairs, restricted=across_runs_only)
        untied = pairs["concordant"] + pairs["discordant"]
        rows.append(
            {
                label: name,
                "n_items": len(members),
                "n_runs": len({m["run_key"] for m in members}),
                "n_pairs": pairs["pairs"],
                "concordant": pairs["concordant"],
                "discordant": pairs["discordant"],
                "ties": pairs["ties"],
                "concordance": pairs["concordant"] / untied if untied else None,
                "kendall_tau": tau,
                "kendall_p": p_value,
                **({"items": [{k: m[k] for k in ITEM_FIELDS} for m in members]} if keep_items else {}),
            }
        )
    return rows


def pair_counts(onsets: np.ndarray, events: np.ndarray, runs: np.ndarray | None = None) -> dict[str, int]:
    """Concordant, discordant and tied pairs among items (each unordered pair once); with ``runs``, only
    pairs of items from different runs. Vectorised in blocks of rows, so a family of tens of thousands of
    items (runs x layers x events) stays within a few hundred MB."""
    totals = dict.fromkeys(("pairs", "concordant", "discordant", "ties", "tied_onset", "tied_event"), 0)
    n = len(onsets)
    for start in range(0, n, PAIR_BLOCK_ROWS):
        rows = slice(start, min(start + PAIR_BLOCK_ROWS, n))
        onset_order = np.sign(onsets[rows, None] - onsets[None, :]).astype(np.int8)
        event_order = np.sign(events[rows, None] - events[None, :]).astype(np.int8)
        counted = np.arange(n)[None, :] > np.arange(n)[rows, None]  # j > i: every unordered pair once
        if runs is not None:
            counted &= runs[rows, None] != runs[None, :]
        product = onset_order * event_order
        tied_onset = counted & (onset_order == 0)
        tied_event = counted & (event_order == 0)
        totals["pairs"] += int(counted.sum())
        totals["concordant"] += int((counted & (product > 0)).sum())
        totals["discordant"] += int((counted & (product < 0)).sum())
        totals["ties"] += int((tied_onset | tied_event).sum())
        totals["tied_onset"] += int(tied_onset.sum())
        totals["tied_event"] += int(tied_event.sum())
    return totals


def kendall(
    onsets: np.ndarray, events: np.ndarray, pairs: Mapping[str, int], restricted: bool
) -> tuple[float | None, float | None]:
    """(tau-b, p-value); ``None`` below three items or when every pair is tied. No p-value for restricted
    pairs: scipy's null distribution assumes every pair of items counts."""
    if len(onsets) < 3:
        return None, None
    if not restricted:
        result = kendalltau(onsets, events)
        return finite_number(result.statistic), finite_number(result.pvalue)
    denominator = math.sqrt((pairs["pairs"] - pairs["tied_onset"]) * (pairs["pairs"] - pairs["tied_event"]))
    if denominator == 0:
        return None, None
    return (pairs["concordant"] - pairs["discordant"]) / denominator, None
