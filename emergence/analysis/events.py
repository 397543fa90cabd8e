"""Emergence events: the first measured step a behaviour crosses its threshold and stays there."""

from __future__ import annotations

import numpy as np


def threshold_value(fraction: float, chance: float) -> float:
    """``fraction`` of the way from chance to a perfect score of 1.0."""
    return chance + fraction * (1.0 - chance)


def emergence_step(steps: np.ndarray, values: np.ndarray, threshold: float, persistence: int) -> int | None:
    """First step t_e with b(t) >= threshold for ``persistence`` consecutive measurements, else None."""
    above = np.asarray(values) >= threshold
    for i in range(len(above) - persistence + 1):
        if above[i : i + persistence].all():
            return int(steps[i])
    return None
