"""Which parameters a measure looks at, and leaving the model as the measure found it.

Shared by the gradient, curvature, LLC and spectral-edge measures, which all select parameters by
name prefix and all run inside the training loop, which must go on undisturbed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

BRIDGE_WRAPPER = "._original_component"  # TransformerBridge's infix in every parameter name


def readable_name(name: str) -> str:
    """``layers.0._original_component.attn...`` -> ``layers.0.attn...``: what a person writes in a spec."""
    return name.replace(BRIDGE_WRAPPER, "")


def matches_prefix(name: str, prefix: str) -> bool:
    """Whole dotted components only: ``layers.1`` selects ``layers.1.*`` but not ``layers.10.*``."""
    prefix = prefix.rstrip(".")
    return any(candidate == prefix or candidate.startswith(prefix + ".") for candidate in (name, readable_name(name)))


@contextmanager
def evaluation_mode(model: torch.nn.Module) -> Iterator[None]:
    """eval() for the measurement (a Hessian or SGLD chain under dropout is a different problem at every
    step), then every submodule's own train/eval flag back as it was, even where it differs from the root."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


@dataclass(frozen=True)
class ParameterSlice:
    """The leading ``count`` scalars (in flattened order) of the parameter called ``name``."""

    name: str
    count: int
