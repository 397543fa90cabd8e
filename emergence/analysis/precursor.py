"""Precursor verdicts: did a signal's onset come before the emergence event, and by how much?"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def verdict_for(lead_intervals: float | None, has_event: bool, min_lead_intervals: float) -> str:
    if not has_event:
        return "no_emergence"
    if lead_intervals is None:
        return "no_signal"
    if lead_intervals >= min_lead_intervals:
        return "precursor"
    if lead_intervals <= -min_lead_intervals:
        return "lagging"
    return "synchronous"


PERMUTATIONS = 1999  # p-values down to 1/2000; the test of a 1,000-point series takes milliseconds


def change_point_onset(steps: np.ndarray, values: np.ndarray, alpha: float, persistence: int) -> int | None:
    """The first step after the signal's most significant shift in level (Pettitt's statistic), or None
    when that shift is not significant at ``alpha`` by a permutation test.

    Our onset for signals that do not collapse and recover (gradient ranks, curvature, the LLC); METHODS.md
    defines onsets only for geometry, probes and the spectral gap. The statistic is rank-based, so a single
    curvature spike or an outlying estimate cannot place the change point, and it needs no threshold on the
    signal's scale. The p-value comes from shuffling the series (seeded, so an analysis is reproducible)
    rather than Pettitt's asymptotic bound, which is conservative for the 10-20 measurements a costly
    measure gets in a run. Both segments keep at least ``persistence`` measurements; non-finite values are
    skipped.
    """
    finite = np.isfinite(values)
    steps, values = steps[finite], values[finite]
    n = len(values)
    if n < 2 * persistence:
        return None
    # Pettitt's U_t = sum over i <= t < j of sign(x_i - x_j) equals (t + 1)(n + 1) - 2 * (sum of the first t + 1 ranks).
    allowed = np.arange(persistence - 1, n - persistence)
    ranks = rankdata(values)

    def pettitt_u(rank_rows: np.ndarray) -> np.ndarray:
        """|U_t| at every allowed split, for one ranking or a stack of them (last axis: the series)."""
        return np.abs((allowed + 1) * (n + 1) - 2 * np.cumsum(rank_rows, axis=-1)[..., allowed])

    observed = pettitt_u(ranks)
    split = int(allowed[np.argmax(observed)])
    shuffled = np.random.default_rng(0).permuted(np.tile(ranks, (PERMUTATIONS, 1)), axis=1)
    exceed = int((pettitt_u(shuffled).max(axis=-1) >= observed.max() - 1e-9).sum())
    p_value = (1 + exceed) / (1 + PERMUTATIONS)
    return int(steps[split + 1]) if p_value < alpha else None


def lead_in_intervals(steps: np.ndarray, onset: int, event_step: int) -> int:
    """Measurement intervals between onset and event on the signal's own (possibly uneven) schedule."""
    return int(np.searchsorted(steps, event_step) - np.searchsorted(steps, onset))


# Changes smaller than this, relative to the series' size, are rounding: far below what float32 activations can
# tell apart (1.2e-7), so only float64 arithmetic on unchanged inputs makes them.
FLAT_RELATIVE = 1e-9


def _flat(differences: np.ndarray, series: np.ndarray) -> bool:
    """A series that does not move but for rounding: standardised, its rounding noise would correlate with
    anything, and the lag found would change with torch's thread count (measured: -20 against 10 steps)."""
    scale = float(np.nanmax(np.abs(series))) if len(series) else 0.0
    return bool(differences.std() <= FLAT_RELATIVE * scale) or differences.std() == 0


def xcorr_lag_steps(
    signal_steps: np.ndarray, signal: np.ndarray, behavior_steps: np.ndarray, behavior: np.ndarray, spacing: int
) -> int | None:
    """The lag maximising the cross-correlation of first differences; positive = the signal moves first.

    Both series are resampled on one even grid (the schedule's ``every``), because the early log-spaced
    measurements would otherwise weigh the first steps far more than the rest.
    """
    end = min(signal_steps[-1], behavior_steps[-1])
    grid = np.arange(0, end + 1, spacing)
    if len(grid) < 6:
        return None
    d_signal = np.diff(np.interp(grid, signal_steps, signal))
    d_behavior = np.diff(np.interp(grid, behavior_steps, behavior))
    if _flat(d_signal, signal) or _flat(d_behavior, behavior):
        return None
    d_signal = (d_signal - d_signal.mean()) / d_signal.std()
    d_behavior = (d_behavior - d_behavior.mean()) / d_behavior.std()
    max_lag = len(d_signal) // 2
    best_lag, best = 0, -np.inf
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            a, b = d_signal[: len(d_signal) - lag], d_behavior[lag:]
        else:
            a, b = d_signal[-lag:], d_behavior[: len(d_behavior) + lag]
        # |correlation|: a collapse that recovers as behaviour rises correlates with either sign.
        score = abs(float(np.mean(a * b)))
        if score > best:
            best_lag, best = lag, score
    return best_lag * spacing
