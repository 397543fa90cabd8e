"""Measures. Built-ins are declared in ``builtin.py`` and imported when a run builds them; plugins come through
the ``emergence.measures`` entry point group. Importing this package imports no torch."""

from emergence.measures.base import (
    Measure,
    MeasureContext,
    MeasureDeclaration,
    MeasureOptions,
    MeasureSetup,
    SavedWeights,
)

__all__ = ["Measure", "MeasureContext", "MeasureDeclaration", "MeasureOptions", "MeasureSetup", "SavedWeights"]
