"""Models: TransformerLens bridges built from a spec."""

from emergence.models.build import build_model, count_parameters, resolve_device

__all__ = ["build_model", "count_parameters", "resolve_device"]
