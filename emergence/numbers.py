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
from typing import Any, get_args

from pydantic import BaseModel, ValidationInfo, field_validator


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


class NoTrueOrFalseForNumbers(BaseModel):
    """A spec section (or a measure's options) whose number fields refuse a bool: pydantic reads `steps: true` as 1
    and `lr: false` as 0.0, and a spec that says yes or no where it means a number is a mistake, never a setting."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_true_or_false_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if not isinstance(value, bool) or field is None:
            return value
        types = types_in(field.annotation)
        if bool in types or Any in types:
            return value
        wanted = "a whole number" if int in types else "a number" if float in types else "a value of its own kind (a number, name or section)"
        raise ValueError(f"Input should be {wanted}, not true or false")


def types_in(annotation: Any) -> set[Any]:
    """The types a field's annotation is made of, through unions, ``Annotated`` and generics (``int | None`` ->
    {int, NoneType}; ``dict[str, Any]`` -> {str, Any}); a ``Literal``'s values are not types."""
    if isinstance(annotation, type) or annotation is Any:
        return {annotation}
    return set().union(*(types_in(arg) for arg in get_args(annotation)))
