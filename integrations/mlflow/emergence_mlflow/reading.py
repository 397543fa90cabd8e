"""Reading emergence runs back out of MLflow: the resolved spec of one run (``emergence run --from-run``)
and one summary row per run of an experiment (``emergence compare``). The tracker class exposes both as
classmethods, which is how the core reaches them without importing mlflow."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from emergence_mlflow.tracker import (
    RESOLVED_SPEC_ARTIFACT,
    RUN_KEY_TAG,
    SUMMARY_METRIC_PREFIX,
    TABLES_DIR,
    resolve_tracking_uri,
)


def fetch_resolved_spec(run_id: str, tracking_uri: str | None) -> dict[str, Any]:
    """The resolved spec an emergence run logged at start (``spec.resolved.json``)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file on stderr
    client = MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))
    with tempfile.TemporaryDirectory(prefix="emergence-mlflow-") as scratch:
        try:
            local = client.download_artifacts(run_id, RESOLVED_SPEC_ARTIFACT, scratch)
        except Exception as error:  # noqa: BLE001 - MLflow raises several types for "not there"
            raise LookupError(f"mlflow run {run_id}: no {RESOLVED_SPEC_ARTIFACT} ({error})") from None
        return json.loads(Path(local).read_text(encoding="utf-8"))

def run_summaries(tracking_uri: str | None, experiment: str) -> list[dict[str, Any]]:
    """One dict per emergence run of ``experiment`` (sweep parents left out), with the fields of
    ``emergence.compare.RunRow``: identity and size from params and tags, verdicts from the tables."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # two bars per run on stderr
    client = MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise LookupError(f"no experiment {experiment!r} at {resolve_tracking_uri(tracking_uri)}")
    rows = []
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` != ''", max_results=5000)
    for run in runs:
        params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
        verdicts: list[dict[str, Any]] = []
        for table in ("verdicts", "feature_verdicts"):
            verdicts += _table_rows(client, run.info.run_id, f"{TABLES_DIR}/{table}.json")
        step_keys = sorted(k for k in metrics if k.startswith(SUMMARY_METRIC_PREFIX + "emergence_step/"))
        step = metrics[step_keys[0]] if step_keys else None
        rows.append(
            {
                "run_key": tags.get(RUN_KEY_TAG, run.info.run_id),
                "spec": tags.get("emergence.spec", ""),
                "task": params.get("task.name", tags.get("emergence.task", "")),
                "level": params.get("task.level", tags.get("emergence.level")),
                "n_layers": params.get("model.n_layers"),
                "d_model": params.get("model.d_model"),
                "n_params": params.get("run.n_params"),
                "seed": params.get("seed"),
                "state": run.info.status,
                "emergence_step": None if step is None or step < 0 else int(step),
                "tags": dict(tags),
                "verdicts": verdicts,
            }
        )
    return rows


def _table_rows(client: MlflowClient, run_id: str, path: str) -> list[dict[str, Any]]:
    """A table artifact (pandas "split" layout) as dicts; empty when the run has none (it ended before
    its analysis)."""
    with tempfile.TemporaryDirectory(prefix="emergence-mlflow-") as scratch:
        try:
            local = client.download_artifacts(run_id, path, scratch)
        except Exception:  # noqa: BLE001
            return []
        table = json.loads(Path(local).read_text(encoding="utf-8"))
    return [dict(zip(table["columns"], row, strict=True)) for row in table.get("data", [])]
