"""Plan a task's data from its spec: the parameters of each level, how many examples each gets, and the
distinct raw inputs; every size problem is raised here, before any example is made.

Cheap and torch-free, so spec validation and ``emergence sample`` use it; ``data.py`` builds the tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emergence import registry
from emergence.tasks.base import Task, TaskInputError

# Below this many possible inputs we enumerate the space and permute it; above, we sample and reject duplicates.
ENUMERATION_LIMIT = 2_000_000


def task_class(name: str) -> type[Task]:
    return registry.tasks.get(name)


def resolve_params(task: Task, level: int, explicit: dict[str, Any]) -> dict[str, Any]:
    if level not in task.levels:
        raise TaskInputError("level", f"task {task.name!r} has no level {level}; levels: {sorted(task.levels)}")
    params = task.default_params(level)
    unknown = sorted(set(explicit) - set(params))
    if unknown:
        hint = registry.did_you_mean(unknown[0], params) if len(unknown) == 1 else ""
        raise TaskInputError("params", f"unknown parameter(s) {unknown} for task {task.name!r}{hint}; allowed: {sorted(params)}")
    params.update(explicit)
    return params


def plan_levels(
    task: Task, level: int | list[int], params: dict[str, Any], train_size: int, test_size: int, diagnostic_size: int
) -> list[tuple[int, dict[str, Any], int, int]]:
    """(level, its params, train examples, test examples) for each level; every size problem raised here.

    Cheap (no example is made), so spec validation calls it too and a spec that asks for more examples
    than a task has fails before any run directory or tracker run exists.
    """
    levels = [level] if isinstance(level, int) else list(level)
    if diagnostic_size > test_size:
        raise TaskInputError("diagnostic_size", f"diagnostic_size {diagnostic_size} exceeds test_size {test_size}")
    plan = []
    for i, lvl in enumerate(levels):
        lvl_params = resolve_params(task, lvl, params)
        n_train = train_size // len(levels) + (i < train_size % len(levels))
        n_test = test_size // len(levels) + (i < test_size % len(levels))
        check_space(task, lvl_params, n_train + n_test)
        plan.append((lvl, lvl_params, n_train, n_test))
    return plan


def check_space(task: Task, params: dict[str, Any], n: int) -> None:
    space = task.input_space_size(params)
    if n > space:
        exact = getattr(task, "input_space_exact", True)
        how_many = f"has only {space}" if exact else f"can guarantee only {space} (a lower bound on its)"
        raise TaskInputError(
            "train_size",
            f"{task.name} with {params} {how_many} distinct inputs; train_size + test_size = {n} is larger",
        )


def distinct_inputs(task: Task, params: dict[str, Any], n: int, rng: np.random.Generator) -> list[Any]:
    check_space(task, params, n)
    space = task.input_space_size(params)
    if getattr(task, "input_space_exact", True) and space <= ENUMERATION_LIMIT:
        everything = task.enumerate_inputs(params)
        order = rng.permutation(len(everything))[:n]
        return [everything[i] for i in order]
    seen: dict[Any, None] = {}
    while len(seen) < n:
        for raw in task.random_inputs(params, rng, n - len(seen)):
            seen.setdefault(raw)
    return list(seen)[:n]
