"""Which metric keys get a precursor verdict.

By default (``analysis.precursor.signals: null``) every measured key is a signal, except:

- behaviour: ``behavior/`` and the emergence metric itself, whatever its name. The event is defined on
  behaviour, so judging a behaviour series as a precursor of itself says nothing: test loss falling before
  exact match crosses its threshold is the same capability seen through another score, not a change inside
  the model that came first.
- what the run writes about itself rather than the model: ``train/`` (the learning rate the schedule sets)
  and ``cost/`` (timings).
- what a measure declares as bookkeeping about its own estimate (``MeasureOptions.bookkeeping_keys``: Lanczos
  iterations and residuals, standard errors, per-chain LLC values ...): the measure knows which of its numbers
  describe the model, so analysis asks it instead of guessing from key names.

A spec that lists ``precursor.signals`` gets exactly the keys its patterns match, bookkeeping included.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from emergence.analysis.declarations import declared_by
from emergence.analysis.onsets import matches
from emergence.spec.schema import AnalysisSpec

# Namespaces the run itself writes (runner, recorder, Monitor), never a measure.
NOT_SIGNAL_PREFIXES = ("behavior/", "train/", "cost/")


def measure_bookkeeping_keys(measures: Iterable[Any]) -> list[str]:
    """The bookkeeping patterns the spec's measures declare (their options' ``bookkeeping_keys``); options
    without the method (a plugin's plain pydantic model) declare none, so all their keys are signals."""
    return declared_by(measures, "bookkeeping_keys")


def builtin_bookkeeping_keys() -> list[str]:
    """Every built-in measure's bookkeeping at its default options: for an analysis called without a spec's measures."""
    from emergence.measures.builtin import BUILTIN_MEASURES

    return [pattern for declaration in BUILTIN_MEASURES for pattern in declaration.Options.model_construct().bookkeeping_keys()]


def is_behavior(key: str, metric: str) -> bool:
    """A behaviour key: under ``behavior/``, or the emergence metric (and its per-level series) by any name."""
    return key.startswith("behavior/") or key == metric or key.startswith(metric + "/")


def signal_keys(keys: Iterable[str], spec: AnalysisSpec, bookkeeping: Sequence[str]) -> list[str]:
    """The keys judged as signals, in journal order: the spec's patterns when it lists any, else the default
    set described in the module docstring."""
    if spec.precursor.signals is not None:
        return [key for key in keys if any(matches(key, pattern) for pattern in spec.precursor.signals)]
    metric = spec.emergence.metric
    return [
        key
        for key in keys
        if not key.startswith(NOT_SIGNAL_PREFIXES)
        and not is_behavior(key, metric)
        and not any(matches(key, pattern) for pattern in bookkeeping)
    ]
