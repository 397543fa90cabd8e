"""The run directory, ``<output_dir>/<spec name>/<run_key>/``: the durable truth of a run.

Its path, the names of the files in it, its status, the lock a process holds while it runs it, the
outcome an executor reports for it, and one reader each for the resolved spec and the analysis. Every
other module reads a run directory through these, so a file's format is known in one place.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from emergence.record import JOURNAL_FILE, read_journal
from emergence.spec.controls import CONTROL_OF_TAG, CONTROL_TAG, control_twin, controlled_run_key
from emergence.spec.grid import RunSpec
from emergence.spec.identity import run_key
from emergence.spec.schema import MONITOR_KIND, MonitorSpec, Spec

SPEC_FILE = "spec.resolved.yaml"
STATUS_FILE = "status.json"
VERDICTS_FILE = "verdicts.json"
ANALYSIS_FILE = "analysis.json"
REPORT_FILE = "report.html"
JACOBIAN_FILE = "jacobian.json"  # the training-Jacobian study's spectrum, counts and curves (studies/jacobian_run.py)
CHECKPOINT_DIR = "checkpoints"
LOCK_FILE = ".lock"

# In a resolved spec beside the spec's own fields: who the run is, not how it was made.
RUN_IDENTITY_FIELDS = ("run_key", "grid_point", "sweep_key")


def run_directory(run_spec: RunSpec) -> Path:
    return Path(run_spec.spec.execution.output_dir) / run_spec.spec.name / run_spec.run_key


def is_run_directory(path: Path) -> bool:
    return (Path(path) / SPEC_FILE).exists()


def resolved_config(run_spec: RunSpec) -> dict[str, Any]:
    """The resolved spec as written to ``spec.resolved.yaml`` and sent to trackers as the run's config."""
    sweep = {"sweep_key": run_spec.sweep_key} if run_spec.sweep_key else {}
    return {"run_key": run_spec.run_key, "grid_point": run_spec.grid_point, **sweep, **run_spec.spec.model_dump(mode="json")}


def write_resolved_spec(run_dir: Path, run_spec: RunSpec) -> None:
    (Path(run_dir) / SPEC_FILE).write_text(yaml.safe_dump(resolved_config(run_spec), sort_keys=False), encoding="utf-8")


def read_resolved(run_dir: Path) -> dict[str, Any]:
    """``spec.resolved.yaml`` as a dict: the spec's fields with ``run_key``, ``grid_point`` and ``sweep_key``."""
    path = Path(run_dir) / SPEC_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no resolved spec; is {run_dir} a run directory?")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def spec_fields(resolved: dict[str, Any]) -> dict[str, Any]:
    """The fields of a resolved spec that a spec file may hold (the run's identity left out)."""
    return {k: v for k, v in resolved.items() if k not in RUN_IDENTITY_FIELDS}


def read_run_spec(run_dir: Path) -> RunSpec:
    """The run's spec, validated, from its ``spec.resolved.yaml``: a ``Spec``, or a ``MonitorSpec`` for a run
    someone else trained."""
    resolved = read_resolved(run_dir)
    schema = MonitorSpec if resolved.get("kind") == MONITOR_KIND else Spec
    spec = schema.model_validate({k: v for k, v in resolved.items() if k in schema.model_fields})
    key = resolved.get("run_key") or run_key(spec)  # type: ignore[arg-type]
    return RunSpec(
        spec=spec,
        run_key=key,
        source=str(Path(run_dir) / SPEC_FILE),
        grid_point=resolved.get("grid_point") or {},
        sweep_key=resolved.get("sweep_key"),
    )


def read_analysis(run_dir: Path, notes: list[str] | None = None) -> dict[str, Any]:
    """``analysis.json`` (events, collapse, top-down, verdicts, feature verdicts), or ``{}`` when the run
    has not been analysed (no file yet, or one torn by a process killed while writing it: said in ``notes``)."""
    return _read_json(Path(run_dir) / ANALYSIS_FILE, dict, notes) or {}


def read_verdicts(run_dir: Path, notes: list[str] | None = None) -> list[dict[str, Any]]:
    """``verdicts.json``: every signal verdict then every feature verdict, or ``[]`` before the analysis."""
    return _read_json(Path(run_dir) / VERDICTS_FILE, list, notes) or []


def _read_json(path: Path, shape: type, notes: list[str] | None) -> Any:
    """The JSON value in ``path`` if it has ``shape``; None when the file is missing, and None with a line in
    ``notes`` when it cannot be read, is not JSON, or holds something else."""
    problem = None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        problem = f"{path.name} could not be read ({error}); ignored."
    except json.JSONDecodeError as error:
        problem = f"{path.name} could not be parsed ({error}); ignored."
    else:
        if isinstance(value, shape):
            return value
        problem = f"{path.name} is not {'an object' if shape is dict else 'a list'}; ignored."
    if notes is not None:
        notes.append(problem)
    return None


def write_status(run_dir: Path, state: str, **details: Any) -> None:
    """``state`` is ``running``, ``completed`` or ``failed`` (with a ``reason``); written atomically."""
    path = Path(run_dir) / STATUS_FILE
    tmp = path.with_suffix(".tmp")
    text = json.dumps({"state": state, **details}, indent=2, default=str)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        # A full disk has no room for a second copy, yet the status must say why the run stopped: rewrite it in
        # place, its old blocks freed first. Only here, since a crash in that instant would tear it.
        tmp.unlink(missing_ok=True)
        with path.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


def replace_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically: a reader never sees half a file."""
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(data, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_status(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / STATUS_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def is_completed(run_dir: Path) -> bool:
    return (read_status(run_dir) or {}).get("state") == "completed"


@dataclass
class RunOutcome:
    """What an executor reports for one run (small and picklable: it crosses process boundaries)."""

    run_key: str
    run_dir: Path
    state: str  # completed | failed | skipped (completed earlier, read back)
    reason: str | None = None
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    analysis: dict[str, Any] = field(default_factory=dict)  # the whole of analysis.json: a sweep summary reads it
    n_params: int | None = None


def completed_outcome(run_spec: RunSpec, run_dir: Path) -> RunOutcome:
    """The outcome of a run completed earlier, read back from its directory."""
    analysis = read_analysis(run_dir)
    n_params = (read_status(run_dir) or {}).get("n_params")
    return RunOutcome(
        run_spec.run_key, run_dir, "skipped", "already completed", analysis.get("verdicts", []), analysis.get("events", []),
        analysis, n_params,
    )


LOCK_WAIT_SECONDS = 30.0  # a worker orphaned by a killed sweep needs a few seconds to mark its run interrupted


class RunDirectoryLock:
    """An exclusive lock on a run directory while a process runs it, so that two sweeps started over the
    same runs (or a sweep and a straggler) never write one run at once. A sweep started right after a
    killed one waits a little for the old workers to let go. The OS drops the lock when the process dies,
    so a killed run never leaves a stale one behind."""

    def __init__(self, run_dir: Path, wait_seconds: float | None = None) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.wait_seconds = LOCK_WAIT_SECONDS if wait_seconds is None else wait_seconds
        self._handle: Any = None

    def __enter__(self) -> bool:
        import fcntl

        self._handle = self.path.open("w")
        deadline = time.monotonic() + self.wait_seconds
        while True:
            try:
                fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self._handle.close()
                    self._handle = None
                    return False
                time.sleep(0.5)

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()  # closing releases the lock


def execute_once(run_spec: RunSpec, run_dir: Path, execute: Callable[[], RunOutcome]) -> RunOutcome:
    """Run ``execute`` in ``run_dir`` unless the run is completed already, holding the directory's lock: a run
    completed earlier (or by another process while this one waited for the lock) is read back, and one that
    another process holds is a failed outcome, not a second writer. Every kind of run starts this way."""
    if (read_status(run_dir) or {}).get("state") == "completed":
        return completed_outcome(run_spec, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunDirectoryLock(run_dir) as held:
        if not held:
            # Not completed by this sweep, so not a success: the sweep says so and exits non-zero.
            reason = "running in another process (its run directory is locked); not started twice: run the sweep again later"
            return RunOutcome(run_spec.run_key, run_dir, "failed", reason)
        if (read_status(run_dir) or {}).get("state") == "completed":  # completed by the other while we waited
            return completed_outcome(run_spec, run_dir)
        return execute()


@dataclass
class RunResult:
    """One run as a script or notebook sees it: who it is, what it found, and its journal.

    Read from a run directory (:func:`read_run_result`, everything) or from a tracker's store (what the
    tracker keeps: identity, size, state, emergence step, verdicts; ``directory`` is then None). The first
    twelve fields are the columns ``emergence compare`` prints, in its order.
    """

    run_key: str
    spec: str  # the spec's name; the whole resolved spec is ``resolved_spec``
    task: str
    level: Any
    n_layers: Any
    d_model: Any
    n_params: Any
    seed: Any
    state: str  # completed | failed | running | skipped (completed earlier) | the tracker's own word for it
    emergence_step: Any
    tags: dict[str, str] = field(default_factory=dict)
    verdicts: list[dict[str, Any]] = field(default_factory=list, repr=False)  # signal verdicts, then probed features
    reason: str | None = None
    directory: Path | None = None
    resolved_spec: dict[str, Any] = field(default_factory=dict, repr=False)
    events: list[dict[str, Any]] = field(default_factory=list, repr=False)
    analysis: dict[str, Any] = field(default_factory=dict, repr=False)
    source: str | None = None  # where it was read from: a run directory, a tracking URI, a W&B folder
    ref: str | None = None  # this run for `emergence.spec_of` and `--from-run`, given the same store

    @property
    def journal(self) -> Any:
        """Every measured value as a pandas DataFrame: one row per measured step (the index), one column per
        metric key; a step measured twice (a resumed run) keeps its last values."""
        if self.directory is None:
            raise LookupError(
                f"run {self.run_key} was read from {self.source}, which keeps its values but not its journal; "
                "load its run directory (emergence.load_run) for the journal"
            )
        import pandas as pd

        rows: dict[int, dict[str, float]] = {}
        for step, values in read_journal(self.directory).values:
            rows.setdefault(step, {}).update(values)
        frame = pd.DataFrame.from_dict(rows, orient="index").sort_index()
        frame.index.name = "step"
        return frame

    @property
    def signal_verdicts(self) -> list[dict[str, Any]]:
        return [v for v in self.verdicts if v.get("kind", "signal") == "signal"]

    @property
    def feature_verdicts(self) -> list[dict[str, Any]]:
        return [v for v in self.verdicts if v.get("kind") == "feature"]


def read_run_result(run_dir: Path, state: str | None = None, reason: str | None = None) -> RunResult:
    """A run directory as a :class:`RunResult` (``state``/``reason`` replace what ``status.json`` says)."""
    run_dir = Path(run_dir)
    resolved = read_resolved(run_dir)
    status = read_status(run_dir) or {}
    analysis = read_analysis(run_dir)
    events = analysis.get("events") or []
    model, task = resolved.get("model") or {}, resolved.get("task") or {}
    tags = {k: str(v) for tracking in resolved.get("tracking") or [] for k, v in (tracking.get("tags") or {}).items()}
    tags |= control_tags(run_dir, resolved)
    return RunResult(
        run_key=str(resolved.get("run_key", run_dir.name)),
        spec=str(resolved.get("name", run_dir.parent.name)),
        task=str(task.get("name") or ""),
        level=task.get("level"),
        n_layers=model.get("n_layers"),
        d_model=model.get("d_model"),
        n_params=_n_params(run_dir, status),
        seed=resolved.get("seed"),
        state=state or str(status.get("state", "unknown")),
        emergence_step=events[0].get("step") if events else None,
        tags=tags,
        verdicts=read_verdicts(run_dir),
        reason=reason if state else status.get("reason"),
        directory=run_dir,
        resolved_spec=resolved,
        events=events,
        analysis=analysis,
        source=str(run_dir),
        ref=str(run_dir),
    )


def control_tags(run_dir: Path, resolved: dict[str, Any]) -> dict[str, str]:
    """The tags a tracker gives a run of a control pair (``emergence.control_of`` on the control, ``emergence.control``
    on the real run), found from the run directory alone, so a folder of runs tells the two apart as a store does."""
    if not (resolved.get("analysis") or {}).get("control") or "task" not in resolved:
        return {}
    run_spec = read_run_spec(run_dir)
    if (controlled := controlled_run_key(run_spec.spec)) is not None:
        return {CONTROL_OF_TAG: controlled}
    twin = control_twin(run_spec)
    return {CONTROL_TAG: twin.run_key} if twin is not None else {}


def _n_params(run_dir: Path, status: dict[str, Any]) -> Any:
    """The parameter count the run recorded as it started (the journal's first line), else at its end."""
    journal = Path(run_dir) / JOURNAL_FILE
    if journal.exists():
        with journal.open(encoding="utf-8") as handle:
            first = handle.readline()
        if first.strip():
            with contextlib.suppress(json.JSONDecodeError):
                found = json.loads(first).get("n_params")
                if found is not None:
                    return found
    return status.get("n_params")
