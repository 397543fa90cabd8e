"""Measures. Built-ins register on import; plugins through the ``emergence.measures`` entry point group."""

from emergence.measures import ablation, curvature, geometry, gradients, llc, probes, spectral  # noqa: F401  (registers the built-ins)
from emergence.measures.base import Measure, MeasureContext, MeasureOptions, MeasureSetup

__all__ = ["Measure", "MeasureContext", "MeasureOptions", "MeasureSetup"]
