"""Quiet features (METHODS.md): a feature is *quiet* when its probe beats the untrained-model baseline while
the task loss is still on its plateau, before the emergence event, and *loud* when it only becomes
decodable as the behaviour moves.

Reads what the ``probe`` and ``ablation`` measures journaled: ``probe/<family>/accuracy``, ``/baseline``,
``/se`` and ``ablation/<family>/...``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from emergence.analysis.precursor import lead_in_intervals
from emergence.record import JournalContents

PROBE_ACCURACY_KEY = re.compile(r"^probe/(?P<family>[^/]+)/accuracy$")
LOSS_KEY = "behavior/test/loss"
MARGIN_STANDARD_ERRORS = 2.0  # "beats the baseline by > 2 standard errors of the test metric"
PLATEAU_TOLERANCE = 0.05  # "the task loss is still within 5% of its plateau value"
ABLATION_FIELDS = ("drop", "relative_drop", "control_drop", "baseline", "ablated", "ablated_lo", "ablated_hi", "control")


def beats_baseline(accuracy: np.ndarray, baseline: np.ndarray, se: np.ndarray) -> np.ndarray:
    """Per measurement: does the probe beat its untrained-model baseline by more than 2 standard errors?"""
    return np.nan_to_num(accuracy - baseline - MARGIN_STANDARD_ERRORS * se, nan=-1.0) > 0


def probe_onset(steps: np.ndarray, accuracy: np.ndarray, baseline: np.ndarray, se: np.ndarray, persistence: int) -> int | None:
    """The first step where the probe beats its untrained-model baseline by more than 2 standard errors and
    keeps doing so for ``persistence`` measurements (or to the end of the run, if fewer remain)."""
    beats = beats_baseline(accuracy, baseline, se)
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


@dataclass(frozen=True)
class ProbeSeries:
    """One probed family's journaled series, read once (every ``JournalContents.series`` call walks the
    whole journal)."""

    steps: np.ndarray
    accuracy: np.ndarray
    baseline: np.ndarray
    se: np.ndarray

    @classmethod
    def read(cls, journal: JournalContents, family: str) -> ProbeSeries:
        steps, accuracy = journal.series(f"probe/{family}/accuracy")
        _, baseline = journal.series(f"probe/{family}/baseline")
        _, se = journal.series(f"probe/{family}/se")
        return cls(steps, accuracy, baseline, se)

    def beats(self) -> np.ndarray:
        return beats_baseline(self.accuracy, self.baseline, self.se)

    def onset(self, persistence: int) -> int | None:
        return probe_onset(self.steps, self.accuracy, self.baseline, self.se, persistence)


def probe_onsets(journal: JournalContents, persistence: int) -> dict[str, int | None]:
    """``probe/<family>/accuracy`` -> its probe onset, for the precursor verdicts."""
    return {f"probe/{family}/accuracy": ProbeSeries.read(journal, family).onset(persistence) for family in families(journal)}


def feature_verdicts(journal: JournalContents, events: list[dict[str, Any]], persistence: int) -> list[dict[str, Any]]:
    """One verdict per (probed feature family, emergence event): quiet, loud, never or no_emergence."""
    verdicts = []
    loss_steps, loss = journal.series(LOSS_KEY)
    series = {family: ProbeSeries.read(journal, family) for family in families(journal)}
    onsets = {family: probed.onset(persistence) for family, probed in series.items()}
    ablation = {
        family: {name: last_finite(journal, f"ablation/{family}/{name}") for name in ABLATION_FIELDS} for family in series
    }
    for event in events:
        event_step = event["step"]
        plateau = plateau_loss(loss_steps, loss, event_step)
        for family, probed in series.items():
            onset = onsets[family]
            loss_at_onset = float(np.interp(onset, loss_steps, loss)) if onset is not None and len(loss_steps) else None
            quiet_step = first_quiet_step(probed.steps, probed.beats(), loss_steps, loss, plateau, event_step)
            lead = event_step - onset if onset is not None and event_step is not None else None
            verdicts.append(
                {
                    "kind": "feature",
                    "feature": family,
                    "event_metric": event["metric"],
                    "event_step": event_step,
                    "onset_step": onset,
                    "lead_steps": lead,
                    "lead_intervals": lead_in_intervals(probed.steps, onset, event_step) if lead is not None else None,
                    "loss_at_onset": loss_at_onset,
                    "plateau_loss": plateau,
                    "quiet_step": quiet_step,
                    "baseline": finite_last(probed.baseline),
                    "final_accuracy": finite_last(probed.accuracy),
                    "verdict": feature_verdict(onset, event_step, quiet_step),
                    **{f"ablation_{name}": value for name, value in ablation[family].items()},
                }
            )
    return verdicts


def first_quiet_step(
    steps: np.ndarray, beats: np.ndarray, loss_steps: np.ndarray, loss: np.ndarray, plateau: float | None, event_step: int | None
) -> int | None:
    """The first measured step before the event where the probe beats its baseline while the test loss is
    within 5% of its plateau value (METHODS.md: "at a step where the task loss is still within 5% of its
    plateau value and before the emergence event")."""
    if plateau is None or event_step is None or len(loss_steps) == 0:
        return None
    for step, beat in zip(steps, beats, strict=True):
        if step >= event_step:
            break
        if beat and abs(float(np.interp(step, loss_steps, loss)) - plateau) <= PLATEAU_TOLERANCE * abs(plateau):
            return int(step)
    return None


def feature_verdict(onset: int | None, event_step: int | None, quiet_step: int | None) -> str:
    """quiet: decodable on the loss plateau before the event; loud: decodable only once the loss has left
    its plateau (with the event, or in the fall just before it); never: no probe onset."""
    if event_step is None:
        return "no_emergence"
    if onset is None:
        return "never"
    return "quiet" if quiet_step is not None else "loud"


def last_finite(journal: JournalContents, key: str) -> float | None:
    return finite_last(journal.series(key)[1])


def finite_last(values: np.ndarray) -> float | None:
    """The last finite value of a series, or None."""
    finite = values[np.isfinite(values)] if len(values) else values
    return float(finite[-1]) if len(finite) else None


__all__ = ["feature_verdict", "feature_verdicts", "first_quiet_step", "plateau_loss", "probe_onset", "probe_onsets"]
