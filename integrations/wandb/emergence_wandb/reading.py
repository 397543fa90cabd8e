"""Reading emergence runs back from W&B run folders on disk (the ``RunReader`` capability of ``WandbTracker``):
``emergence compare``, ``emergence.load_runs`` and ``emergence run --from-run``. Everything comes from the
runs' record logs (``records.py``), so offline runs need no W&B server."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emergence.rundir import RUN_IDENTITY_FIELDS
from emergence.spec.schema import Spec
from emergence_wandb import records

SWEEP_PARENT_CONFIG = "emergence_sweep_summary"  # marks the summary run's config, so `compare` leaves it out
# In a run someone else made (run_id): our config and params sit under this config key.
ADOPTED_CONFIG_KEY = "emergence"

# Tables whose rows are a run's verdicts, as `emergence compare` shows them (see emergence.run._analyze).
VERDICT_TABLES = ("verdicts", "feature_verdicts")
EMERGENCE_STEP_PREFIX = "emergence_step/"  # summary keys; -1 means the behaviour never emerged
# A run's state from its exit code (finish() writes 0 or 1); no exit code yet: the run goes on.
_STATES: dict[int | None, str] = {None: "running", 0: "completed"}

# ``scheme:`` of a URI (two letters at least: ``C:`` is a Windows drive); such a source is never a W&B folder.
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


def claims(source: str) -> bool:
    if _URI_SCHEME.match(source):
        return False
    try:
        return bool(records.find_runs([Path(source)]))
    except (OSError, ValueError):  # no such path, no permission, a name the OS refuses
        return False


def read_runs(source: str, experiment: str | None = None) -> list[dict[str, Any]]:
    found = _runs_at(source)
    if not found:
        raise LookupError(f"{source}: no W&B run folder ({records.RUN_FILE_GLOB}) in it or under it")
    try:
        logs = [records.read_run(wandb_dir, run_id) for wandb_dir, run_id in found]
    except records.CorruptRunFile as error:
        raise LookupError(str(error)) from None
    logs = [run_log for run_log in logs if not run_log.config.get(SWEEP_PARENT_CONFIG)]
    if experiment is not None:
        projects = sorted({_project_of(run_log) or "unknown" for run_log in logs})
        logs = [run_log for run_log in logs if _project_of(run_log) == experiment]
        if not logs:
            raise LookupError(f"{source}: no W&B run of project {experiment!r} (projects there: {', '.join(projects) or 'none'})")
    return [_summary_row(run_log) for run_log in logs]


def fetch_resolved_spec(ref: str) -> dict[str, Any]:
    found = _runs_at(ref)
    if len(found) != 1:
        ids = ", ".join(sorted(run_id for _, run_id in found)) or "none"
        raise LookupError(f"{ref}: W&B runs found: {ids}; give the run folder of one")
    try:
        run_log = records.read_run(*found[0])
    except records.CorruptRunFile as error:
        raise LookupError(str(error)) from None
    known = set(Spec.model_fields) | set(RUN_IDENTITY_FIELDS)
    spec = {key: value for key, value in emergence_config(run_log.config).items() if key in known}
    if "name" not in spec:
        raise LookupError(f"{ref}: W&B run {run_log.run_id} has no emergence spec in its config")
    return spec


class NoSuchPath(FileNotFoundError, LookupError):
    """A reference to W&B runs on disk that names no file or folder: a ``LookupError``, as the core's
    ``RunReader`` protocol asks, and a ``FileNotFoundError``, as what it is."""


def _runs_at(source: str) -> list[tuple[Path, str]]:
    try:
        return records.find_runs([Path(source)])
    except FileNotFoundError as error:
        raise NoSuchPath(str(error)) from None


def emergence_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """What emergence sent as a run's config: the whole config, or, in a run someone else made (run_id), its
    ``emergence`` key."""
    adopted = config.get(ADOPTED_CONFIG_KEY)
    return adopted if isinstance(adopted, Mapping) and "name" in adopted else config


def _project_of(run_log: records.RunLog) -> str | None:
    return run_log.run.project if run_log.run is not None and run_log.run.project else None


def _summary_row(run_log: records.RunLog) -> dict[str, Any]:
    """A run as one record of ``read_runs`` (the keys of ``emergence.tracking.RUN_RECORD_FIELDS``)."""
    config = emergence_config(run_log.config)
    task = config.get("task") if isinstance(config.get("task"), Mapping) else {}
    model = config.get("model") if isinstance(config.get("model"), Mapping) else {}
    tags: dict[str, str] = {}
    for tag in run_log.tags:
        key, _, value = tag.partition("=")
        tags[key] = value
    # The summary keeps keys in the order they were first set, which for emergence steps is the
    # order of the run's events: the first is the one `compare` shows, as for a run directory.
    steps = [value for key, value in run_log.summary.items() if key.startswith(EMERGENCE_STEP_PREFIX)]
    step = steps[0] if steps else None
    verdicts: list[dict[str, Any]] = []
    for name in VERDICT_TABLES:
        table = run_log.latest_table(name)
        if table is not None:
            verdicts += table.dicts()
    return {
        "run_key": str(config.get("run_key") or run_log.run_id),
        "spec": str(config.get("name") or tags.get("emergence.spec", "")),
        "task": str(task.get("name") or tags.get("emergence.task", "")),
        "level": task.get("level"),
        "n_layers": model.get("n_layers"),
        "d_model": model.get("d_model"),
        "n_params": config.get("run.n_params"),
        "seed": config.get("seed"),
        "state": _STATES.get(run_log.exit_code, "failed"),
        "emergence_step": None if not isinstance(step, int | float) or step < 0 else int(step),
        "tags": tags,
        "verdicts": verdicts,
        "ref": str(run_log.sync_dir),  # what fetch_resolved_spec takes
    }
