"""The Python API behind ``import emergence``: what the command line does, as functions a script or notebook
calls. Each imports the heavy parts (torch, the run engine, plugins) only when it is called."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from emergence.rundir import JOURNAL_FILE, RunOutcome, RunResult, is_run_directory, read_run_result
from emergence.spec import RunSpec, expand, raw_spec, resolve

SpecSource = str | Path | Mapping[str, Any]


def validate(spec: SpecSource, overrides: Sequence[str] = ()) -> list[RunSpec]:
    """Every run ``spec`` resolves to (one per grid point), validated; nothing is created.

    ``spec`` is a spec file or a mapping as a spec file would hold it; ``overrides`` are dotted-path
    assignments (``"model.n_layers=4"``). A problem raises ``emergence.SpecError``, whose ``problems`` each
    carry the dotted path, the given value and the allowed values, and whose text is what
    ``emergence validate`` prints."""
    return resolve(spec, list(overrides))


def run(
    spec: SpecSource,
    overrides: Sequence[str] = (),
    *,
    force: bool = False,
    progress: bool = True,
    **execution: Any,
) -> list[RunResult]:
    """Train (or resume), measure, analyse and log every run of ``spec``; one ``RunResult`` per run, in grid order.

    ``execution`` sets fields of the spec's ``execution`` section (``workers=2``, ``executor="ray"``,
    ``output_dir="runs"``). A run completed earlier is read back, not run again (``force=True`` reruns it);
    an interrupted one resumes. A run that fails is a result with ``state == "failed"`` and its ``reason``;
    bad input raises ``SpecError``, an executor that cannot start raises ``ExecutorUnavailable``."""
    from rich.console import Console

    from emergence.orchestrate import execute
    from emergence.progress import SweepProgress

    raw, source = raw_spec(spec, list(overrides))
    if execution:
        section = raw.get("execution")
        raw["execution"] = {**(section if isinstance(section, Mapping) else {}), **execution}
    runs = expand(raw, source)
    with SweepProgress(runs, Console(), enabled=progress) as display:
        outcomes = execute(runs, force=force, progress=display)
    by_key = {run_spec.run_key: run_spec for run_spec in runs}
    return [result_of(by_key[outcome.run_key], outcome) for outcome in outcomes]


def result_of(run_spec: RunSpec, outcome: RunOutcome) -> RunResult:
    """The result of a run just executed: its directory as it now is, with the executor's state and reason."""
    if is_run_directory(outcome.run_dir):
        return read_run_result(outcome.run_dir, state=outcome.state, reason=outcome.reason)
    # Failed before it wrote anything (a worker that died at once): what the spec says, and why.
    spec = run_spec.spec
    return RunResult(
        run_key=run_spec.run_key, spec=spec.name, task=spec.task.name, level=spec.task.level, n_layers=getattr(spec.model, "n_layers", None),
        d_model=getattr(spec.model, "d_model", None), n_params=outcome.n_params, seed=spec.seed, state=outcome.state, emergence_step=None,
        reason=outcome.reason, directory=None, source=str(outcome.run_dir),
    )


def load_run(run_dir: str | Path) -> RunResult:
    """One run directory (``runs/<spec>/<run_key>``), finished, failed or still running."""
    path = Path(run_dir)
    if not is_run_directory(path):
        raise FileNotFoundError(f"{path}: not a run directory (no spec.resolved.yaml)")
    return read_run_result(path)


def load_runs(
    source: str | Path | Sequence[str | Path] = "runs",
    *,
    experiment: str | None = None,
    spec: str | None = None,
    task: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> list[RunResult]:
    """Every run at ``source`` (or at each of several), the runs ``emergence compare`` shows.

    A source is a run directory or a folder of them, or a tracker store whose plugin reads runs back:
    ``"sqlite:///mlflow.db"`` or any MLflow tracking URI (``experiment`` picks the experiment), a W&B run
    folder, or ``"<tracker>:<location>"`` to name the tracker. ``spec``, ``task`` and ``tags`` keep only
    the runs that match. Runs read from a tracker have no ``directory`` and no ``journal``."""
    from emergence.compare import read_runs, select

    sources = [source] if isinstance(source, str | Path) else list(source)
    found: list[RunResult] = []
    for one in sources:
        found += read_runs(one, experiment)
    return select(found, spec, task, tags)


def spec_of(run: RunResult | str | Path, store: str | None = None) -> dict[str, Any]:
    """The spec that made an earlier run, as a mapping ``emergence.run`` takes: of a ``RunResult`` (from
    ``load_run`` or ``load_runs``, whatever store it came from), a run directory, or a tracker reference
    (``"mlflow:<run_id>"`` with ``store`` its tracking URI, a W&B run folder). Every default is filled in,
    so running it again is the same run (the same run key) unless an override changes a result."""
    from emergence.rerun import spec_of_result, spec_of_run

    if isinstance(run, RunResult):
        return spec_of_result(run, store)
    return spec_of_run(str(run), store)


def report(path: str | Path) -> Path:
    """Analyse a run again from its journal (no retraining) and rewrite its report; for a sweep directory,
    summarise its runs as they are now and rewrite the sweep report. Returns the report's path."""
    from emergence.reports import is_sweep_directory, refresh_sweep_report

    path = Path(path)
    if is_sweep_directory(path):
        refresh_sweep_report(path)
        return path / "report.html"
    if not (path / JOURNAL_FILE).exists():
        raise FileNotFoundError(f"{path}: no {JOURNAL_FILE} here; is this a run directory or a sweep directory?")
    from emergence.analysis import reanalyze
    from emergence.reports import write_report

    reanalyze(path)
    return write_report(path)


__all__ = ["load_run", "load_runs", "report", "result_of", "run", "spec_of", "validate"]
