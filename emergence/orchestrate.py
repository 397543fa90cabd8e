"""Spec -> resolved runs -> executor -> ``run_one`` for each; completed runs are skipped, interrupted ones resume."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import Protocol

from emergence import registry
from emergence.run import ProgressCallback, RunOutcome, run_directory, run_one
from emergence.spec.grid import RunSpec


class Executor(Protocol):
    def execute(self, runs: Sequence[RunSpec], progress: ProgressCallback | None = None) -> list[RunOutcome]: ...


@registry.executors.register("local")
class LocalExecutor:
    """Runs one after another in this process; a failing run is reported and the others go on."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers

    def execute(self, runs: Sequence[RunSpec], progress: ProgressCallback | None = None) -> list[RunOutcome]:
        return [run_one(run, progress) for run in runs]


def execute(runs: Sequence[RunSpec], force: bool = False, progress: ProgressCallback | None = None) -> list[RunOutcome]:
    if force:
        for run in runs:
            shutil.rmtree(run_directory(run), ignore_errors=True)
    execution = runs[0].spec.execution
    executor = registry.executors.get(execution.executor)(workers=execution.workers)
    return executor.execute(runs, progress)
