"""The null control of a run (``analysis.control: shuffled_labels``): the same spec with the training answers
permuted across examples (``task.shuffle_answers: true``), so that nothing can be learnt that generalises.

The twin is a run of its own (its own run key, directory and tracker runs), derived from the real run's spec
alone, and the real run is derived back from the twin's: each finds the other without a registry of pairs,
after a restart, in another process, or from a run directory that ``emergence report`` analyses again.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from emergence.spec.grid import RunSpec
from emergence.spec.identity import run_key
from emergence.spec.schema import MonitorSpec, Spec

CONTROL_OF_TAG = "emergence.control_of"  # on the control's tracker runs: the run key of the run it controls
CONTROL_TAG = "emergence.control"  # on the real run's tracker runs: the run key of its control


def _with_shuffled(spec: Spec, shuffled: bool) -> Spec:
    # model_copy, not validation: only one boolean of an already valid spec changes.
    return spec.model_copy(update={"task": spec.task.model_copy(update={"shuffle_answers": shuffled})})


def wants_control(spec: Spec | MonitorSpec) -> bool:
    """A real run (answers not shuffled) whose analysis asks for a control."""
    task = getattr(spec, "task", None)
    return spec.analysis.control is not None and task is not None and not task.shuffle_answers


def is_control(spec: Spec | MonitorSpec) -> bool:
    """The control twin of some run: shuffled answers, and the analysis that asked for it."""
    task = getattr(spec, "task", None)
    return spec.analysis.control is not None and task is not None and task.shuffle_answers


def control_twin(run: RunSpec) -> RunSpec | None:
    """The control run of ``run``, or None when its spec asks for none (or ``run`` is a control itself).

    Same grid point and sweep: a tracker that nests a sweep's runs under a parent shows the control beside
    the run it controls; the sweep summary itself counts only the runs of the grid.
    """
    if not isinstance(run.spec, Spec) or not wants_control(run.spec):
        return None
    twin = _with_shuffled(run.spec, True)
    return replace(run, spec=twin, run_key=run_key(twin))


def controlled_run_key(spec: Spec | MonitorSpec) -> str | None:
    """For a control twin, the run key of the run it controls; None for any other spec."""
    if not isinstance(spec, Spec) or not is_control(spec):
        return None
    return run_key(_with_shuffled(spec, False))


def control_directory(run_dir: Path, spec: Spec | MonitorSpec) -> Path | None:
    """Where the control of the run in ``run_dir`` lives (beside it: same spec name, its own key), or None."""
    if not isinstance(spec, Spec) or not wants_control(spec):
        return None
    return Path(run_dir).parent / run_key(_with_shuffled(spec, True))
