"""Reading emergence runs back out of MLflow: one record per run of an experiment (``emergence compare``,
``emergence.load_runs``) and the resolved spec of one run (``emergence run --from-run``). The tracker
class offers both as its ``RunReader`` capability, which is how the core reaches them without importing
mlflow."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException

from emergence_mlflow.store import (
    DEFAULT_EXPERIMENT,
    RESOLVED_SPEC_ARTIFACT,
    RUN_KEY_TAG,
    RUN_URI_PREFIX,
    SUMMARY_METRIC_PREFIX,
    TABLES_DIR,
    VERDICT_TABLES,
    missing_local_store,
    open_client,
    resolve_tracking_uri,
    run_id_of,
)

SEARCH_PAGE_SIZE = 1000


def read_runs(source: str | None, experiment: str | None = None) -> list[dict[str, Any]]:
    """One record per emergence run (sweep parents and deleted runs left out) with the keys of
    ``emergence.tracking.RUN_RECORD_FIELDS``: identity and size from params and tags, the state as MLflow
    says it (``FINISHED``, ``FAILED``, ``KILLED``, ``RUNNING``), verdicts from the tables.

    ``source`` is a tracking URI (empty: ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``) whose
    ``experiment`` (default ``emergence``) is read, or ``runs:/<run_id>``: that one run, in the store
    ``$MLFLOW_TRACKING_URI`` or the default names. Raises ``LookupError`` when there is no such store,
    experiment or run, or the experiment holds no emergence run.
    """
    source = (source or "").strip()
    if source.startswith(RUN_URI_PREFIX):
        client, tracking_uri = _client(None)
        run_id = run_id_of(source)
        try:
            run = client.get_run(run_id)
        except MlflowException as error:
            raise LookupError(f"no MLflow run {run_id} at {tracking_uri} ({error.message})") from None
        if RUN_KEY_TAG not in run.data.tags:
            raise LookupError(f"MLflow run {run_id} at {tracking_uri} is not an emergence run (no {RUN_KEY_TAG} tag)")
        return [_record(client, run)]

    client, tracking_uri = _client(source)
    name = experiment or DEFAULT_EXPERIMENT
    found = client.get_experiment_by_name(name)
    if found is None:
        raise LookupError(f"no experiment {name!r} at {tracking_uri}")
    records = [_record(client, run) for run in _emergence_runs(client, found.experiment_id)]
    if not records:
        raise LookupError(f"experiment {name!r} at {tracking_uri} holds no emergence run (no run tagged {RUN_KEY_TAG})")
    return records


def fetch_resolved_spec(ref: str, store: str | None = None) -> dict[str, Any]:
    """The resolved spec an emergence run logged at start (``spec.resolved.json``), as
    ``spec.resolved.yaml`` holds it. ``ref`` is ``<run_id>`` or ``runs:/<run_id>``; ``store`` the tracking
    URI (default ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``). Raises ``LookupError``."""
    run_id = run_id_of(ref)
    client, tracking_uri = _client(store)
    with tempfile.TemporaryDirectory(prefix="emergence-mlflow-") as scratch:
        try:
            local = client.download_artifacts(run_id, RESOLVED_SPEC_ARTIFACT, scratch)
        except Exception as error:  # noqa: BLE001 - MLflow raises several types for "not there"
            raise LookupError(f"mlflow run {run_id} at {tracking_uri}: no {RESOLVED_SPEC_ARTIFACT} ({error})") from None
        return json.loads(Path(local).read_text(encoding="utf-8"))


def _client(source: str | None) -> tuple[MlflowClient, str]:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file on stderr
    tracking_uri = resolve_tracking_uri(source or None)
    missing = missing_local_store(tracking_uri)
    if missing is not None:
        raise LookupError(f"no MLflow store at {tracking_uri} ({missing} does not exist)")
    return open_client(tracking_uri), tracking_uri


def _emergence_runs(client: MlflowClient, experiment_id: str) -> list[Any]:
    """Every active run of the experiment that carries a run key (a sweep's parent does not), in
    MLflow's order (newest first)."""
    runs: list[Any] = []
    page_token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{RUN_KEY_TAG}` != ''",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=SEARCH_PAGE_SIZE,
            page_token=page_token,
        )
        runs += page
        page_token = page.token
        if not page_token:
            return runs


def _record(client: MlflowClient, run: Any) -> dict[str, Any]:
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    verdicts: list[dict[str, Any]] = []
    for table in VERDICT_TABLES:
        verdicts += _table_rows(client, run.info.run_id, f"{TABLES_DIR}/{table}.json")
    step_keys = sorted(k for k in metrics if k.startswith(SUMMARY_METRIC_PREFIX + "emergence_step/"))
    step = metrics[step_keys[0]] if step_keys else None
    return {
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
        "ref": run.info.run_id,  # what fetch_resolved_spec takes, with this store
    }


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
