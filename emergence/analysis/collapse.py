"""Collapse floor, collapse step and recovery onset of a geometry series; top-down order across layers."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import spearmanr

# A "collapse" shallower than this fraction of the initial value is measurement noise, not a collapse.
MIN_RELATIVE_DEPTH = 0.01


@dataclass(frozen=True)
class Collapse:
    signal: str
    layer: int | None
    initial: float
    floor: float
    floor_step: int
    collapse_step: int | None
    recovery_onset: int | None

    def as_dict(self) -> dict:
        return asdict(self)


def collapse_of(
    signal: str,
    layer: int | None,
    steps: np.ndarray,
    values: np.ndarray,
    collapse_fraction: float,
    recovery_fraction: float,
    persistence: int,
) -> Collapse:
    finite = np.isfinite(values)
    steps, values = steps[finite], values[finite]
    initial = float(values[0])
    floor_index = int(np.argmin(values))
    floor = float(values[floor_index])
    depth = initial - floor
    if depth <= MIN_RELATIVE_DEPTH * abs(initial):
        return Collapse(signal, layer, initial, floor, int(steps[floor_index]), None, None)
    collapse_step = int(steps[np.argmax(values <= floor + collapse_fraction * depth)])
    recovered = values > floor + recovery_fraction * depth
    recovery_onset = None
    for i in range(floor_index + 1, len(values) - persistence + 1):
        if recovered[i : i + persistence].all():
            recovery_onset = int(steps[i])
            break
    return Collapse(signal, layer, initial, floor, int(steps[floor_index]), collapse_step, recovery_onset)


def top_down(family: str, collapses: list[Collapse]) -> dict:
    """Top-down holds when collapse steps fall with depth: Spearman rho(layer, collapse step) < 0."""
    ordered = sorted((c for c in collapses if c.collapse_step is not None and c.layer is not None), key=lambda c: c.layer)
    layers = [c.layer for c in ordered]
    collapse_steps = [c.collapse_step for c in ordered]
    rho = float("nan")
    if len(ordered) >= 2 and len(set(collapse_steps)) > 1:
        rho = float(spearmanr(layers, collapse_steps).statistic)
    return {
        "family": family,
        "spearman_rho": None if math.isnan(rho) else rho,
        "holds": bool(rho < 0) if not math.isnan(rho) else False,
        "layers": layers,
        "collapse_steps": collapse_steps,
    }
