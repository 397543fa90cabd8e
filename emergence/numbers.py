"""Numbers on their way to JSON, plots and trackers: one place that knows about NaN, infinities, bools and
numpy or torch scalars.

Two encodings exist on purpose. The journal keeps a non-finite value as the string ``"nan"``/``"inf"`` so
that it round-trips (:func:`encode_nonfinite` / :func:`decode_nonfinite`): a NaN is a measurement. Files
and tables meant for other readers (``sweep.json``, tracker tables) write it as ``null``
(:func:`json_safe`), as pandas does, because strict JSON has no NaN.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Mapping
from typing import Any


def plain(value: Any) -> Any:
    """A numpy or torch scalar as the Python number it holds; anything else unchanged."""
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, int | float | str | bool):
        with contextlib.suppress(TypeError, ValueError):
            scalar = item()
            if not callable(getattr(scalar, "item", None)):
                return scalar
    return value


def as_float(value: Any) -> float | None:
    """Any real number (bools, numpy and torch scalars included) as a float; None for anything else."""
    value = plain(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def finite_number(value: Any) -> float | None:
    """A finite real number that is not a bool, as a float; None for NaN, infinities and non-numbers."""
    value = plain(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return None
    return float(value)


def is_finite_number(value: Any) -> bool:
    return finite_number(value) is not None


def json_safe(value: Any) -> Any:
    """Strict JSON, recursively: NaN and infinities become None, scalars Python numbers, tuples lists,
    keys strings, and anything else its text."""
    value = plain(value)
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None  # float(): a numpy float64 becomes a plain float
    if isinstance(value, Mapping):
        return {str(key): json_safe(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(inner) for inner in value]
    return str(value)


NONFINITE_TEXT = ("nan", "inf", "-inf")


def encode_nonfinite(value: Any) -> Any:
    """For the journal: a non-finite float as its text, so that it comes back as the same float."""
    value = plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def decode_nonfinite(value: Any) -> Any:
    """The inverse of :func:`encode_nonfinite`."""
    if isinstance(value, str) and value in NONFINITE_TEXT:
        return float(value)
    return value
