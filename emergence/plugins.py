"""Everything a plugin author imports: the protocols a task, measure, tracker or executor implements, the
types they receive, the optional tracker capabilities, and the registries. ``docs/plugins.md`` shows each
kind of plugin end to end.

A plugin is a distribution with an entry point in one of the groups ``emergence.tasks``,
``emergence.measures``, ``emergence.trackers`` or ``emergence.executors``; the core looks it up by the name a
spec gives and asks it what it can do, never which system it is. Names are imported on first use, so a
tracker plugin that imports ``Tracker`` from here does not pay for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emergence.lazy import lazy_exports

if TYPE_CHECKING:
    from emergence.capture import CaptureRequest, Position, Site
    from emergence.executors import (
        Executor,
        ExecutorUnavailable,
        ProgressSink,
        RunMessage,
        record_failure,
        run_in_worker,
    )
    from emergence.measures.base import (
        Cost,
        Measure,
        MeasureContext,
        MeasureOptions,
        MeasureSetup,
        SavedWeights,
    )
    from emergence.registry import Registry, UnknownNameError, executors, measures, tasks, trackers
    from emergence.rundir import RunOutcome, run_directory
    from emergence.spec.grid import RunSpec
    from emergence.spec.schema import ExecutionSpec
    from emergence.tasks.base import EOS, PAD, Example, Split, Task, TaskData, TaskInputError, Vocab
    from emergence.tracking import (
        RUN_RECORD_FIELDS,
        ChecksOptions,
        ForgetsRuns,
        RunReader,
        SweepParent,
        SweepSummary,
        Tracker,
        TrackerOptionError,
        sanitize_key,
    )

_PUBLIC = {
    # tasks
    "Task": "emergence.tasks.base",
    "Example": "emergence.tasks.base",
    "Vocab": "emergence.tasks.base",
    "Split": "emergence.tasks.base",
    "TaskData": "emergence.tasks.base",
    "TaskInputError": "emergence.tasks.base",
    "EOS": "emergence.tasks.base",
    "PAD": "emergence.tasks.base",
    # measures
    "Measure": "emergence.measures.base",
    "MeasureOptions": "emergence.measures.base",
    "MeasureSetup": "emergence.measures.base",
    "MeasureContext": "emergence.measures.base",
    "SavedWeights": "emergence.measures.base",
    "Cost": "emergence.measures.base",
    "CaptureRequest": "emergence.capture",
    "Site": "emergence.capture",
    "Position": "emergence.capture",
    # trackers and their optional capabilities
    "Tracker": "emergence.tracking",
    "SweepParent": "emergence.tracking",
    "ForgetsRuns": "emergence.tracking",
    "RunReader": "emergence.tracking",
    "ChecksOptions": "emergence.tracking",
    "TrackerOptionError": "emergence.tracking",
    "SweepSummary": "emergence.tracking",
    "RUN_RECORD_FIELDS": "emergence.tracking",
    "sanitize_key": "emergence.tracking",
    # executors
    "Executor": "emergence.executors",
    "ExecutorUnavailable": "emergence.executors",
    "RunMessage": "emergence.executors",
    "ProgressSink": "emergence.executors",
    "run_in_worker": "emergence.executors",
    "record_failure": "emergence.executors",
    "RunOutcome": "emergence.rundir",
    "run_directory": "emergence.rundir",
    "RunSpec": "emergence.spec.grid",
    "ExecutionSpec": "emergence.spec.schema",
    # registries
    "Registry": "emergence.registry",
    "UnknownNameError": "emergence.registry",
    "tasks": "emergence.registry",
    "measures": "emergence.registry",
    "trackers": "emergence.registry",
    "executors": "emergence.registry",
}

__all__ = [
    "EOS", "PAD", "RUN_RECORD_FIELDS", "CaptureRequest", "ChecksOptions", "Cost", "Example", "ExecutionSpec", "Executor", "ExecutorUnavailable",
    "ForgetsRuns", "Measure", "MeasureContext", "MeasureOptions", "MeasureSetup", "Position", "ProgressSink",
    "Registry", "RunMessage", "RunOutcome", "RunReader", "RunSpec", "SavedWeights", "Site", "Split", "SweepParent", "SweepSummary",
    "Task", "TaskData", "TaskInputError", "Tracker", "TrackerOptionError", "UnknownNameError", "Vocab", "executors", "measures",
    "record_failure", "run_directory", "run_in_worker", "sanitize_key", "tasks", "trackers",
]


__getattr__ = lazy_exports(__name__, _PUBLIC)


def __dir__() -> list[str]:
    return sorted(__all__)
