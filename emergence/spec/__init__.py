"""Specs: schema, YAML loading, overrides, grid expansion, run identity."""

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emergence.spec.grid import RunSpec, expand
from emergence.spec.identity import monitor_run_key, run_key
from emergence.spec.load import (
    SpecError,
    SpecProblem,
    apply_overrides,
    is_monitor_spec,
    load_raw,
    load_spec,
    validate,
    validate_monitor,
)
from emergence.spec.schema import MonitorSpec, Spec

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


DEFAULT_RUN_NAME = "default"


def resolve_monitor(
    spec: str | Path | Mapping[str, Any], overrides: list[str] | None = None, run_name: str = DEFAULT_RUN_NAME
) -> RunSpec:
    """A monitor spec (``kind: monitor``) + overrides, for the run its user calls ``run_name``: the same
    spec and name are the same run (directory, tracker runs), whatever process drives it."""
    raw, source = raw_spec(spec, overrides)
    monitor = validate_monitor(raw, source)
    return RunSpec(spec=monitor, run_key=monitor_run_key(monitor, run_name), source=source, grid_point={"run_name": run_name})  # type: ignore[arg-type]


__all__ = [
    "DEFAULT_RUN_NAME", "MonitorSpec", "RunSpec", "Spec", "SpecError", "SpecProblem", "expand", "is_monitor_spec",
    "load_raw", "load_spec", "raw_spec", "resolve", "resolve_monitor", "run_key", "validate", "validate_monitor",
]
