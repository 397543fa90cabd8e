"""emergence: what changes inside a transformer before it acquires a capability, and did it come first.

The Python API (``docs/api.md``)::

    import emergence

    runs = emergence.run("specs/tiny.yaml", ["seed=1"])      # -> list[RunResult]
    result = emergence.load_run(runs[0].directory)
    result.journal["geometry/rankme/resid_post/L1"].plot()   # a pandas DataFrame, one row per measured step
    table = emergence.load_runs("runs", spec="tiny")          # or "sqlite:///mlflow.db", a W&B folder ...

Importing this package is light: torch and the run engine are imported when a run starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emergence.lazy import lazy_exports
from emergence.version import __version__

if TYPE_CHECKING:
    from emergence.api import load_run, load_runs, report, run, spec_of, validate
    from emergence.executors import ExecutorUnavailable
    from emergence.module_capture import MonitorInputError
    from emergence.monitor import Monitor
    from emergence.rundir import RunResult
    from emergence.spec import RunSpec, SpecError, SpecProblem

# name -> the module that defines it; each is imported the first time it is asked for.
_PUBLIC = {
    "run": "emergence.api",
    "validate": "emergence.api",
    "load_run": "emergence.api",
    "load_runs": "emergence.api",
    "report": "emergence.api",
    "spec_of": "emergence.api",
    "RunResult": "emergence.rundir",
    "RunSpec": "emergence.spec",
    "SpecError": "emergence.spec",
    "SpecProblem": "emergence.spec",
    "ExecutorUnavailable": "emergence.executors",
    "Monitor": "emergence.monitor",
    "MonitorInputError": "emergence.module_capture",
}

__all__ = [
    "ExecutorUnavailable", "Monitor", "MonitorInputError", "RunResult", "RunSpec", "SpecError", "SpecProblem", "__version__",
    "load_run", "load_runs", "report", "run", "spec_of", "validate",
]


__getattr__ = lazy_exports(__name__, _PUBLIC)


def __dir__() -> list[str]:
    return sorted(__all__)
