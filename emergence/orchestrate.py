"""Spec -> resolved runs -> executor -> ``run_one`` for each; completed runs are skipped, interrupted ones resume."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from typing import Any, Protocol

from emergence import registry
from emergence.run import ProgressCallback, RunOutcome, run_directory, run_one
from emergence.spec.grid import RunSpec

log = logging.getLogger(__name__)


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
    sweep_trackers = _sweep_trackers(runs)
    for tracker_class, options in sweep_trackers:
        _quietly(tracker_class.prepare_sweep, options, runs[0].sweep_key, runs[0].spec.name, [r.run_key for r in runs])
    outcomes = executor.execute(runs, progress)
    status = "completed" if all(o.state in ("completed", "skipped") for o in outcomes) else "failed"
    for tracker_class, options in sweep_trackers:
        _quietly(tracker_class.finish_sweep, options, runs[0].sweep_key, status)
    return outcomes


def _sweep_trackers(runs: Sequence[RunSpec]) -> list[tuple[Any, dict[str, Any]]]:
    """The tracker classes of a sweep that know about sweeps (``prepare_sweep``/``finish_sweep``), each with
    its spec entry: set up once here, before any run starts, so that parallel runs do not race to create
    the same experiment or parent run."""
    if not runs or runs[0].sweep_key is None:
        return []
    found = []
    for tracking in runs[0].spec.tracking:
        try:
            tracker_class = registry.trackers.get(tracking.backend)
        except Exception:  # noqa: BLE001 - the run itself reports a tracker it cannot build
            continue
        if hasattr(tracker_class, "prepare_sweep") and hasattr(tracker_class, "finish_sweep"):
            found.append((tracker_class, tracking.model_dump()))
    return found


def _quietly(call: Any, *args: Any) -> None:
    """A tracker's sweep bookkeeping may fail (a server away); the runs go on and log on their own."""
    try:
        call(*args)
    except Exception as error:  # noqa: BLE001
        log.warning("tracker sweep set-up failed (%s); runs go on without a parent run", error)
