"""Quiet features (METHODS.md): a feature is *quiet* when its probe beats the untrained-model baseline while
the task loss is still on its plateau, before the emergence event, and *loud* when it only becomes
decodable as the behaviour moves.

Reads what the ``probe`` and ``ablation`` measures journaled: ``probe/<family>/accuracy``, ``/baseline``,
``/se`` and ``ablation/<family>/...``.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from emergence.analysis.precursor import lead_in_intervals
from emergence.record import JournalContents

PROBE_ACCURACY_KEY = re.compile(r"^probe/(?P<family>[^/]+)/accuracy$")
LOSS_KEY = "behavior/test/loss"
MARGIN_STANDARD_ERRORS = 2.0  # "beats the baseline by > 2 standard errors of the test metric"
PLATEAU_TOLERANCE = 0.05  # "the task loss is still within 5% of its plateau value"
ABLATION_FIELDS = ("drop", "relative_drop", "control_drop", "baseline", "ablated", "ablated_lo", "ablated_hi", "control")


def probe_onset(steps: np.ndarray, accuracy: np.ndarray, baseline: np.ndarray, se: np.ndarray, persistence: int) -> int | None:
    """The first step where the probe beats its untrained-model baseline by more than 2 standard errors and
    keeps doing so for ``persistence`` measurements (or to the end of the run, if fewer remain)."""
    beats = np.nan_to_num(accuracy - baseline - MARGIN_STANDARD_ERRORS * se, nan=-1.0) > 0
    for i in range(len(steps)):
        if beats[i : i + persistence].all():
            return int(steps[i])
    return None


def plateau_loss(loss_steps: np.ndarray, loss: np.ndarray, event_step: int | None) -> float | None:
    """The loss's plateau value: its median over the second half of the steps before the event (the whole
    second half of the run without an event). Ours; METHODS.md does not define how the plateau is found."""
    if len(loss_steps) == 0:
        return None
    end = event_step if event_step is not None else int(loss_steps[-1]) + 1
    window = (loss_steps >= end / 2) & (loss_steps < end)
    values = loss[window & np.isfinite(loss)]
    return float(np.median(values)) if len(values) else None


def families(journal: JournalContents) -> list[str]:
    return sorted({m["family"] for key in journal.metric_keys() if (m := PROBE_ACCURACY_KEY.match(key))})


def probe_onsets(journal: JournalContents, persistence: int) -> dict[str, int | None]:
    """``probe/<family>/accuracy`` -> its probe onset, for the precursor verdicts."""
    onsets = {}
    for family in families(journal):
        steps, accuracy = journal.series(f"probe/{family}/accuracy")
        _, baseline = journal.series(f"probe/{family}/baseline")
        _, se = journal.series(f"probe/{family}/se")
        onsets[f"probe/{family}/accuracy"] = probe_onset(steps, accuracy, baseline, se, persistence)
    return onsets


def feature_verdicts(journal: JournalContents, events: list[dict[str, Any]], persistence: int) -> list[dict[str, Any]]:
    """One verdict per (probed feature family, emergence event): quiet, loud, never or no_emergence."""
    verdicts = []
    loss_steps, loss = journal.series(LOSS_KEY)
    onsets = probe_onsets(journal, persistence)
    ablation = {
        family: {name: last_finite(journal, f"ablation/{family}/{name}") for name in ABLATION_FIELDS} for family in families(journal)
    }
    for event in events:
        event_step = event["step"]
        plateau = plateau_loss(loss_steps, loss, event_step)
        for family in families(journal):
            steps, _ = journal.series(f"probe/{family}/accuracy")
            onset = onsets[f"probe/{family}/accuracy"]
            loss_at_onset = float(np.interp(onset, loss_steps, loss)) if onset is not None and len(loss_steps) else None
            verdict = feature_verdict(onset, event_step, loss_at_onset, plateau)
            lead = event_step - onset if onset is not None and event_step is not None else None
            verdicts.append(
                {
                    "kind": "feature",
                    "feature": family,
                    "event_metric": event["metric"],
                    "event_step": event_step,
                    "onset_step": onset,
                    "lead_steps": lead,
                    "lead_intervals": lead_in_intervals(steps, onset, event_step) if lead is not None else None,
                    "loss_at_onset": loss_at_onset,
                    "plateau_loss": plateau,
                    "baseline": last_finite(journal, f"probe/{family}/baseline"),
                    "final_accuracy": last_finite(journal, f"probe/{family}/accuracy"),
                    "verdict": verdict,
                    **{f"ablation_{name}": value for name, value in ablation[family].items()},
                }
            )
    return verdicts


def feature_verdict(onset: int | None, event_step: int | None, loss_at_onset: float | None, plateau: float | None) -> str:
    if event_step is None:
        return "no_emergence"
    if onset is None:
        return "never"
    still_on_plateau = loss_at_onset is None or plateau is None or loss_at_onset >= (1 - PLATEAU_TOLERANCE) * plateau
    return "quiet" if onset < event_step and still_on_plateau else "loud"


def last_finite(journal: JournalContents, key: str) -> float | None:
    _, values = journal.series(key)
    finite = values[np.isfinite(values)] if len(values) else values
    return float(finite[-1]) if len(finite) else None


__all__ = ["feature_verdict", "feature_verdicts", "plateau_loss", "probe_onset", "probe_onsets"]
