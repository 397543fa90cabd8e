"""What a spec's measures declare to analysis: each measure's ``Options`` (its declaration's for a built-in,
the class's own for a plugin), validated from the spec's options and asked by one method name
(``onset_rules``, ``bookkeeping_keys``, ``summaries``). Options without the method (a plugin's plain pydantic
model) declare nothing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from emergence import registry


def declared_by(measures: Iterable[Any], method: str) -> list[Any]:
    """Everything the spec's measures return from ``Options.<method>()``, in the spec's order."""
    found: list[Any] = []
    for measure in measures:
        options = registry.measures.info(measure.name).Options.model_validate(measure.options())
        declare = getattr(options, method, None)
        found.extend(declare() if callable(declare) else ())
    return found
