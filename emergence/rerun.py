"""Fetch the resolved spec of an earlier run, so ``emergence run --from-run REF`` can run it again.

REF is a run directory (``runs/<spec>/<run_key>``), an MLflow run (``mlflow:<run_id>`` or
``runs:/<run_id>``, from ``--mlflow URI``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``),
or a W&B run folder (offline ``wandb/offline-run-...`` or online ``wandb/run-...``, holding the run's
``run-<id>.wandb`` record log), also given as the run directory whose ``wandb/`` holds it. The spec comes back
with every default filled in, so it resolves to the same run key unless an override changes a result.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

from emergence.record import SPEC_FILE

RUN_IDENTITY_FIELDS = ("run_key", "grid_point", "sweep_key")  # in a resolved spec, but not spec fields
WANDB_RUN_FILES = "run-*.wandb"  # the record log in every W&B run folder, offline or online


def spec_of_run(ref: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """The spec (a dict, as a spec file would hold it) that made the run REF."""
    if ref.startswith(("mlflow:", "runs:/")):
        resolved = _from_mlflow(ref.split(":", 1)[1].lstrip("/"), tracking_uri)
    else:
        path = Path(ref)
        if (path / SPEC_FILE).exists():
            resolved = yaml.safe_load((path / SPEC_FILE).read_text(encoding="utf-8"))
        elif any(path.glob(WANDB_RUN_FILES)) or any((path / "wandb").glob(f"*/{WANDB_RUN_FILES}")):
            resolved = _from_wandb(ref)
        else:
            raise FileNotFoundError(
                f"{ref}: not a run directory (no {SPEC_FILE}), not a W&B run folder (no {WANDB_RUN_FILES}), "
                "and not mlflow:<run_id>"
            )
    return {k: v for k, v in resolved.items() if k not in RUN_IDENTITY_FIELDS}


def _from_mlflow(run_id: str, tracking_uri: str | None) -> dict[str, Any]:
    """Through the MLflow tracker plugin: the core never imports mlflow itself."""
    from emergence import registry

    return registry.trackers.get("mlflow").fetch_resolved_spec(run_id, tracking_uri)


def _from_wandb(ref: str) -> dict[str, Any]:
    """Through the W&B tracker plugin, which reads the run's record log: the core never imports wandb."""
    from emergence import registry

    return registry.trackers.get("wandb").fetch_resolved_spec(ref)


def write_fetched_spec(spec: dict[str, Any], ref: str) -> Path:
    """The fetched spec as a file (specs are files everywhere else: errors name it, runs record it)."""
    directory = Path(tempfile.mkdtemp(prefix="emergence-from-run-"))
    path = directory / f"{spec.get('name', 'run')}.yaml"
    header = f"# fetched by `emergence run --from-run {ref}`\n"
    path.write_text(header + yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path
