"""Specs: schema, YAML loading, overrides, grid expansion, run identity."""

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emergence.spec.grid import RunSpec, expand
from emergence.spec.identity import run_key
from emergence.spec.load import SpecError, SpecProblem, apply_overrides, load_raw, load_spec, validate
from emergence.spec.schema import Spec

MAPPING_SOURCE = "<spec>"  # how errors name a spec given as a mapping rather than a file


def raw_spec(spec: str | Path | Mapping[str, Any], overrides: list[str] | None = None) -> tuple[dict[str, Any], str]:
    """A spec file, or a mapping as a spec file would hold it, with the overrides applied; and how errors
    name it."""
    if isinstance(spec, Mapping):
        return apply_overrides(copy.deepcopy(dict(spec)), overrides or [], MAPPING_SOURCE), MAPPING_SOURCE
    return load_raw(spec, overrides), str(spec)


def resolve(spec: str | Path | Mapping[str, Any], overrides: list[str] | None = None) -> list[RunSpec]:
    """Spec file (or mapping) + overrides -> every resolved run of its grid (one run when there is no grid)."""
    return expand(*raw_spec(spec, overrides))


__all__ = ["RunSpec", "Spec", "SpecError", "SpecProblem", "expand", "load_raw", "raw_spec", "load_spec", "resolve", "run_key", "validate"]
