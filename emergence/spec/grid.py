"""Expand a spec's ``grid:`` (dotted path -> list of values) into one resolved run per combination."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from emergence.spec.identity import run_key, sweep_key
from emergence.spec.load import SpecError, SpecProblem, set_path, validate
from emergence.spec.schema import Spec


@dataclass(frozen=True)
class RunSpec:
    spec: Spec  # fully resolved: grid applied and emptied, defaults filled
    run_key: str
    source: str
    grid_point: dict[str, Any] = field(default_factory=dict)
    sweep_key: str | None = None  # shared by the runs of one grid of more than one point; trackers group by it

    @property
    def display_name(self) -> str:
        suffix = ",".join(point_label(k, v) for k, v in self.grid_point.items())
        name = f"{self.spec.name}[{suffix}]" if suffix else self.spec.name
        task = getattr(self.spec, "task", None)  # a monitored run has none
        # A shuffled-label run shares its twin's name and grid point; trackers must tell the two apart.
        return f"{name}:shuffled" if task is not None and task.shuffle_answers else name


def point_label(path: str, value: Any) -> str:
    if isinstance(value, dict):  # a section merged in: name what it changes
        return f"{path}(" + ",".join(f"{k}={v}" for k, v in value.items()) + ")"
    return f"{path}={value}"


def grid_value_into(raw: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set one grid value at its dotted path. A mapping is merged into the mapping the spec has there, so a
    grid over whole sections (``task: [{name: copy, level: 1, train_size: 900}, ...]``) changes only what it
    names and keeps the rest of the base section; any other value replaces what is there."""
    current: Any = raw
    for part in parts:
        current = current.get(part) if isinstance(current, dict) else None
    if isinstance(value, dict) and isinstance(current, dict):
        value = merge_mappings(current, value)
    set_path(raw, parts, value)


def merge_mappings(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        both_mappings = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = merge_mappings(merged[key], value) if both_mappings else copy.deepcopy(value)
    return merged


# Every run of a grid is resolved (validated, keyed) before any runs, and every one is a training run; a
# product past this is a mistake (a list where a range was meant, one path too many), not a sweep.
MAX_GRID_RUNS = 10_000


def check_grid_size(grid: dict[str, list[Any]], source: str) -> None:
    """Refuse a grid whose product is past ``MAX_GRID_RUNS`` from the lengths of its lists, before expanding it."""
    runs = math.prod(len(values) for values in grid.values())
    if runs > MAX_GRID_RUNS:
        factors = " x ".join(f"{path}: {len(values):,}" for path, values in grid.items())
        raise SpecError(source, [SpecProblem(
            "grid", f"given a grid of {runs:,} runs ({factors}); allowed: at most {MAX_GRID_RUNS:,} runs per spec "
            "(split the sweep into several specs, or give fewer values)", given=runs,
        )])


def once_each(problems: list[SpecProblem]) -> list[SpecProblem]:
    """A problem every grid point shares (a misspelt grid path) said once, with how many points have it."""
    by_problem: dict[tuple[str, str], list[SpecProblem]] = {}
    for problem in problems:
        by_problem.setdefault((problem.path.split(" (grid point ")[0], problem.message), []).append(problem)
    said = []
    for same in by_problem.values():
        first = same[0]
        more = f" (and {len(same) - 1} more grid point(s))" if len(same) > 1 else ""
        said.append(SpecProblem(first.path + more, first.message, first.given, first.allowed))
    return said


def expand(raw: dict[str, Any], source: str) -> list[RunSpec]:
    """Validate the spec, then every grid point, before anything runs: a bad point fails the whole sweep early."""
    base = validate(raw, source)
    grid = base.grid
    check_grid_size(grid, source)
    without_grid = {k: v for k, v in copy.deepcopy(raw).items() if k != "grid"}
    runs = []
    problems: list[SpecProblem] = []
    paths = list(grid)
    for values in itertools.product(*(grid[p] for p in paths)):
        point = dict(zip(paths, values, strict=True))
        point_raw = copy.deepcopy(without_grid)
        try:
            for path, value in point.items():
                grid_value_into(point_raw, path.split("."), copy.deepcopy(value))
            spec = validate(point_raw, source)
        except KeyError as error:
            problems.append(SpecProblem(f"grid.{path}", str(error).strip("'\""), given=value))
            continue
        except SpecError as error:
            problems += [p.at(f"{p.path} (grid point {point})") for p in error.problems]
            continue
        runs.append(RunSpec(spec=spec, run_key=run_key(spec), source=source, grid_point=point))
    if problems:
        raise SpecError(source, once_each(problems))
    if len(runs) > 1:
        key = sweep_key([r.run_key for r in runs])
        runs = [dataclasses.replace(r, sweep_key=key) for r in runs]
    return runs
