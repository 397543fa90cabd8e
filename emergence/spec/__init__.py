"""Specs: schema, YAML loading, overrides, grid expansion, run identity."""

from emergence.spec.grid import RunSpec, expand
from emergence.spec.identity import run_key
from emergence.spec.load import SpecError, load_raw, load_spec, validate
from emergence.spec.schema import Spec


def resolve(path: str, overrides: list[str] | None = None) -> list[RunSpec]:
    """Spec file + overrides -> every resolved run of its grid (one run when there is no grid)."""
    return expand(load_raw(path, overrides), str(path))


__all__ = ["RunSpec", "Spec", "SpecError", "expand", "load_raw", "load_spec", "resolve", "run_key", "validate"]
