"""An emergence Tracker that writes one MLflow run per emergence run.

Everything goes through ``mlflow.MlflowClient`` with an explicit run id, never the fluent
``mlflow.start_run`` API: the fluent API keeps one active run per process (per thread), and a sweep
may hold several trackers, or several runs, in one process.

Three properties the core relies on:

* **Reattach, never duplicate.** The MLflow run is found again by its ``emergence.run_key`` tag, so
  rerunning or resuming a spec continues the same run.
* **Replay is idempotent.** The core replays the run journal into a tracker that fell behind. Params
  already present are skipped, a metric is skipped when MLflow already holds that key at that step or a
  later one, and tables overwrite their file instead of appending to it.
* **Fail fast.** Against a tracking server that has gone away MLflow's defaults retry for minutes;
  this tracker retries briefly and then raises, and ``TrackerFanout`` keeps training going.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from mlflow import MlflowClient
from mlflow.entities import LifecycleStage, Metric, Param, RunStatus, RunTag, ViewType
from mlflow.environment_variables import (
    MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
    MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    MLFLOW_HTTP_REQUEST_TIMEOUT,
)
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS
from mlflow.utils.validation import (
    MAX_BATCH_LOG_REQUEST_SIZE,
    MAX_ENTITY_KEY_LENGTH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from emergence.numbers import as_float, json_safe
from emergence.tracking import SweepSummary, TrackerOptionError
from emergence_mlflow import reading
from emergence_mlflow.store import (
    CUSTOM_MODEL_DEVELOPMENT,
    DEFAULT_EXPERIMENT,
    EXPERIMENT_KIND_TAG,
    GROUP_TAG,
    PARENT_RUN_TAG,
    RESOLVED_SPEC_ARTIFACT,
    RUN_KEY_TAG,
    SUMMARY_METRIC_PREFIX,
    SUMMARY_TAG_PREFIX,
    SWEEP_PARENT_TAG,
    SWEEP_SIZE_TAG,
    SWEEP_TAG,
    TABLES_DIR,
    is_mlflow_reference,
    open_client,
    resolve_tracking_uri,
    sqlite_artifact_location,
    tracking_uri_problem,
)

log = logging.getLogger(__name__)

FINAL_STATUS = {
    "completed": RunStatus.to_string(RunStatus.FINISHED),
    "failed": RunStatus.to_string(RunStatus.FAILED),
    "interrupted": RunStatus.to_string(RunStatus.KILLED),
}

# Two quick retries ride out a server restart or a 503 blip; with backoff factor 1 urllib3 waits
# about 0 s then 2 s (plus up to 1 s jitter), so a refused connection raises within ~3 s. The timeout
# bounds one request against a server that accepts connections but never answers: 3 x 10 s.
FAIL_FAST_HTTP_SETTINGS: dict[str, str] = {
    MLFLOW_HTTP_REQUEST_MAX_RETRIES.name: "2",
    MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.name: "1",
    MLFLOW_HTTP_REQUEST_TIMEOUT.name: "10",
}

# MLflow documents 1 MB per log_batch request (its own server barely checks, but proxies in front of
# one do: nginx refuses bodies over 1 MB by default). 100 params of 6000 characters fit only while
# they need no JSON escaping, so batches are cut by size as well as by count.
_BATCH_BYTES_BUDGET = int(MAX_BATCH_LOG_REQUEST_SIZE * 0.9)

# MLflow's portable name rule (the server rejects ':' on Windows, so we never send it).
_ILLEGAL_NAME_CHARS = re.compile(r"[^/\w.\- ]")
_HASH_SUFFIX_CHARS = 9  # "-" and 8 hex digits


class _FailFastHttp:
    """Applies ``FAIL_FAST_HTTP_SETTINGS`` while any tracker call is in flight, then restores them.

    MLflow reads its HTTP retry and timeout settings from the environment on every request and has no
    per-client setting, so the only knob is the process environment. Setting it for the duration of
    our calls, rather than for good, leaves other MLflow users in the process with their own
    behaviour. A setting the user exported explicitly always wins. Nested and concurrent calls share
    one reference count, so the last one out restores the environment exactly once.
    """

    def __init__(self, settings: Mapping[str, str]) -> None:
        self._settings = dict(settings)
        self._lock = threading.Lock()
        self._depth = 0
        self._applied: list[str] = []

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._applied = [name for name in self._settings if name not in os.environ]
                for name in self._applied:
                    os.environ[name] = self._settings[name]
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    for name in self._applied:
                        os.environ.pop(name, None)
                    self._applied = []


_fail_fast_http = _FailFastHttp(FAIL_FAST_HTTP_SETTINGS)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _failing_fast(
    method: Callable[Concatenate[MlflowTracker, _P], _R],
) -> Callable[Concatenate[MlflowTracker, _P], _R]:
    @functools.wraps(method)
    def wrapper(self: MlflowTracker, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with _fail_fast_http():
            return method(self, *args, **kwargs)

    return wrapper


def legal_name(raw: str) -> str:
    """A param, metric or tag key that MLflow accepts, unchanged when it is already legal.

    MLflow wants ``^[/\\w.\\- ]*$``, at most 250 characters, and a key that is its own normalised
    path (no empty, ``.`` or ``..`` segments, no leading ``/``). A key that has to change gets a hash
    of the original appended, so two different keys never collapse into one and the mapping does not
    depend on the order keys arrive in.
    """
    cleaned = _normalise_path_segments(_ILLEGAL_NAME_CHARS.sub("_", raw))
    if cleaned == raw and 0 < len(raw) <= MAX_ENTITY_KEY_LENGTH:
        return raw
    digest = hashlib.sha1(raw.encode("utf-8")).hexdigest()[:8]
    stem = _normalise_path_segments(cleaned[: MAX_ENTITY_KEY_LENGTH - _HASH_SUFFIX_CHARS])
    return f"{stem}-{digest}" if stem else digest


def _normalise_path_segments(name: str) -> str:
    segments = [segment for segment in name.split("/") if segment not in ("", ".")]
    segments = ["__" if segment == ".." else segment for segment in segments]
    if segments and segments[0].startswith(".."):
        # posixpath.normpath keeps "..x" but MLflow refuses any name starting with "..".
        segments[0] = "_" + segments[0][1:]
    return "/".join(segments)


def param_value(value: Any) -> str:
    """Params are strings in MLflow; containers become JSON so that lists stay readable."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, Mapping | list | tuple):
        text = json.dumps(value, sort_keys=True, default=str)
    else:
        text = str(value)
    return text[:MAX_PARAM_VAL_LENGTH]


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _string_batches(pairs: Mapping[str, str]) -> Iterator[list[tuple[str, str]]]:
    """Params or tags in batches MLflow accepts: at most 100 entries and under 1 MB of JSON."""
    batch: list[tuple[str, str]] = []
    size = 0
    for key, value in pairs.items():
        cost = len(json.dumps(key)) + len(json.dumps(value)) + 32  # 32: the field names and commas
        if batch and (len(batch) == MAX_PARAMS_TAGS_PER_BATCH or size + cost > _BATCH_BYTES_BUDGET):
            yield batch
            batch, size = [], 0
        batch.append((key, value))
        size += cost
    if batch:
        yield batch


def _now_ms() -> int:
    return int(time.time() * 1000)


# Our params in a run made by someone else (run_id): MLflow params are write-once, and a Trainer logs its own
# (``seed``, ``learning_rate`` ...), so ours must not take its names.
ATTACHED_PARAM_PREFIX = "emergence."
# On such a run: a later run of the same run key without run_id must not reattach to it (it is not ours).
HOSTED_TAG = "emergence.hosted"
HOSTED_RUNS_SKIPPED = 100  # a run-key search looks past this many hosted runs for one of our own


class MlflowTracker:
    """Logs an emergence run to MLflow.

    ``options`` is the spec's tracking entry: ``experiment`` (default ``emergence``), ``tracking_uri``
    (default ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the current directory) and
    ``tags`` (added to the run's tags). ``run_dir`` is the emergence run directory.

    The class methods are the capabilities the core asks for: ``SweepParent`` (``prepare_sweep``,
    ``finish_sweep``), ``ForgetsRuns`` (``forget_runs``), ``RunReader`` (``claims``, ``read_runs``,
    ``fetch_resolved_spec``) and ``ChecksOptions`` (``check_options``).
    """

    def __init__(self, options: Mapping[str, Any], run_dir: Path) -> None:
        self.options = dict(options)
        self.run_dir = Path(run_dir)
        self.experiment_name: str = self.options.get("experiment") or DEFAULT_EXPERIMENT
        self.tracking_uri = resolve_tracking_uri(self.options.get("tracking_uri"))
        self._client: MlflowClient | None = None
        self.run_id: str | None = None
        self.reattached = False
        self.param_prefix = ""  # ATTACHED_PARAM_PREFIX in a run someone else made
        # What MLflow already holds for this run, so that replays and reattaches skip it.
        self._params: dict[str, str] = {}
        self._latest_step: dict[str, int] = {}
        self._latest_value: dict[str, float] = {}
        self._tables: list[dict[str, str]] = []
        self._names: dict[str, str] = {}

    @property
    def client(self) -> MlflowClient:
        # Built on first use, not in __init__: for SQLite it opens (and may create and migrate) the
        # database, which can fail, and the core builds trackers outside TrackerFanout's protection.
        if self._client is None:
            self._client = open_client(self.tracking_uri)  # a new SQLite store is migrated by one process at a time
        return self._client

    # -- lifecycle -------------------------------------------------------------------------------

    @_failing_fast
    def start(
        self, run_key: str, name: str, group: str, tags: Mapping[str, str], config: Mapping[str, Any]
    ) -> None:
        run_tags = {**(self.options.get("tags") or {}), **tags, RUN_KEY_TAG: run_key}
        if group:
            run_tags[GROUP_TAG] = group
        legal_tags = {self._name(key): str(value)[:MAX_TAG_VAL_LENGTH] for key, value in run_tags.items()}
        if self.options.get("run_id"):
            self._attach(str(self.options["run_id"]), legal_tags, config)
            return
        experiment_id = self._experiment_id()
        sweep = tags.get(SWEEP_TAG)
        if sweep:
            parent = self._find_sweep_parent(experiment_id, sweep) or self._create_sweep_parent(experiment_id, sweep, group)
            legal_tags[PARENT_RUN_TAG] = parent.info.run_id
        existing = self._find_run(experiment_id, run_key)
        if existing is None:
            run = self.client.create_run(experiment_id, run_name=name, tags=legal_tags)
            self.run_id = run.info.run_id
            self.reattached = False
        else:
            self.run_id = existing.info.run_id
            self.reattached = True
            self._remember(existing)
            self.client.update_run(self.run_id, status=RunStatus.to_string(RunStatus.RUNNING), name=name)
            self._log_tags(legal_tags)
        if config:
            text = json.dumps(config, indent=2, sort_keys=True, default=str)
            self.client.log_text(self.run_id, text, RESOLVED_SPEC_ARTIFACT)

    def _attach(self, run_id: str, tags: Mapping[str, str], config: Mapping[str, Any]) -> None:
        """Log into a run someone else made and will end (a Trainer's own MLflow run, through the emergence
        callbacks): no experiment or run of ours; our params go under ``emergence.``, out of its way."""
        existing = self.client.get_run(run_id)
        self.run_id = existing.info.run_id
        self.reattached = True
        self.param_prefix = ATTACHED_PARAM_PREFIX
        self._remember(existing)
        self._log_tags({**tags, HOSTED_TAG: "true"})
        if config:
            text = json.dumps(config, indent=2, sort_keys=True, default=str)
            self.client.log_text(self.run_id, text, RESOLVED_SPEC_ARTIFACT)

    @_failing_fast
    def finish(self, status: str) -> None:
        if status not in FINAL_STATUS:
            raise ValueError(f"unknown run status {status!r}; allowed: {', '.join(FINAL_STATUS)}")
        if self.options.get("run_id"):
            return  # a run we attached to is ended by whoever made it
        self.client.set_terminated(self._require_run(), status=FINAL_STATUS[status])

    # -- values ----------------------------------------------------------------------------------

    @_failing_fast
    def log_params(self, flat: Mapping[str, Any]) -> None:
        run_id = self._require_run()
        pending: dict[str, str] = {}
        for raw_key, raw_value in flat.items():
            key, value = self._name(self.param_prefix + str(raw_key)), param_value(raw_value)
            logged = self._params.get(key, pending.get(key))
            if logged is None:
                pending[key] = value
            elif logged != value:
                # MLflow params are write-once; a changed value can only come from options that do
                # not enter the run key (destinations, paths), so the first value stands.
                log.warning("mlflow param %r is already %r; keeping it, not %r", key, logged, value)
        for batch in _string_batches(pending):
            self.client.log_batch(run_id, params=[Param(key, value) for key, value in batch])
            self._params.update(batch)

    @_failing_fast
    def log_metrics(self, values: Mapping[str, float], step: int) -> None:
        run_id = self._require_run()
        step = int(step)
        timestamp = _now_ms()
        metrics: list[Metric] = []
        for raw_key, raw_value in values.items():
            key, value = self._name(raw_key), as_float(raw_value)
            if value is None:
                log.debug("mlflow: skipping metric %r, %r is not a number", raw_key, raw_value)
                continue
            if step <= self._latest_step.get(key, -1):
                continue  # already in MLflow: a replay, or a resumed run recomputing old steps
            metrics.append(Metric(key, value, timestamp, step))
        self._log_metric_batches(run_id, metrics)

    @_failing_fast
    def set_summary(self, summary: Mapping[str, Any]) -> None:
        run_id = self._require_run()
        # Summary metrics sit at the last step so that MLflow's "latest value" is the summary.
        step = max(self._latest_step.values(), default=0)
        timestamp = _now_ms()
        metrics: list[Metric] = []
        tags: dict[str, str] = {}
        for raw_key, raw_value in summary.items():
            if raw_value is None:
                continue
            number = None if isinstance(raw_value, str) else as_float(raw_value)
            if number is not None:
                key = self._name(SUMMARY_METRIC_PREFIX + str(raw_key))
                if self._latest_value.get(key) != number:  # NaN never equals, so it is always sent
                    metrics.append(Metric(key, number, timestamp, step))
            else:
                text = raw_value if isinstance(raw_value, str) else json.dumps(json_safe(raw_value))
                tags[self._name(SUMMARY_TAG_PREFIX + str(raw_key))] = text[:MAX_TAG_VAL_LENGTH]
        self._log_metric_batches(run_id, metrics)
        self._log_tags(tags)

    # -- files -----------------------------------------------------------------------------------

    @_failing_fast
    def log_table(
        self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int | None = None
    ) -> None:
        """Writes the table in the layout ``MlflowClient.log_table`` uses (pandas "split", no index).

        ``MlflowClient.log_table`` itself appends to a table file that already exists, which turns
        every replay or rerun into duplicated rows; a table here is a snapshot, so it overwrites.
        """
        run_id = self._require_run()
        stem = legal_name(name).replace("/", "_")
        file_name = f"{stem}.json" if step is None else f"{stem}_step{int(step):08d}.json"
        table = {
            "columns": [str(column) for column in columns],
            # NaN and infinities become null, as pandas writes them: strict JSON has no NaN.
            "data": [[json_safe(cell) for cell in row] for row in rows],
        }
        with tempfile.TemporaryDirectory(prefix="emergence-mlflow-") as scratch:
            local = Path(scratch) / file_name
            local.write_text(json.dumps(table, allow_nan=False), encoding="utf-8")
            self.client.log_artifact(run_id, str(local), artifact_path=TABLES_DIR)
        self._register_table(run_id, f"{TABLES_DIR}/{file_name}")

    @_failing_fast
    def log_artifact(self, path: Path, name: str | None = None) -> None:
        """Uploads a file, or a directory tree, under the artifact directory ``name`` (default: root).

        A directory keeps its own name as the top folder unless ``name`` says otherwise.
        """
        run_id = self._require_run()
        local = Path(path)
        if local.is_dir():
            self.client.log_artifacts(run_id, str(local), artifact_path=name or local.name)
        elif local.is_file():
            self.client.log_artifact(run_id, str(local), artifact_path=name)
        else:
            raise FileNotFoundError(f"no artifact to log at {local}")

    # -- helpers ---------------------------------------------------------------------------------

    def _require_run(self) -> str:
        if self.run_id is None:
            raise RuntimeError("MlflowTracker.start must be called before logging")
        return self.run_id

    def _name(self, raw: str) -> str:
        # Memoised: the same few thousand metric keys come back at every measurement step.
        name = self._names.get(raw)
        if name is None:
            name = self._names[raw] = legal_name(raw)
        return name

    def _experiment_id(self) -> str:
        """The experiment's id, made now if there is none. MLflow 3's UI files an experiment without an
        ``mlflow.experimentKind`` tag under GenAI, so ours get (or are given) the kind of model training."""
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            try:
                return self.client.create_experiment(
                    self.experiment_name,
                    artifact_location=sqlite_artifact_location(self.tracking_uri),
                    tags={EXPERIMENT_KIND_TAG: CUSTOM_MODEL_DEVELOPMENT},
                )
            except MlflowException as error:
                # Another run of the same sweep created it between our lookup and our create.
                if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                    raise
                experiment = self.client.get_experiment_by_name(self.experiment_name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == LifecycleStage.DELETED:
            raise MlflowException(
                f"MLflow experiment {self.experiment_name!r} is deleted; restore it "
                f"(`mlflow experiments restore --experiment-id {experiment.experiment_id}`) "
                "or name another experiment in the spec's tracking entry"
            )
        if EXPERIMENT_KIND_TAG not in experiment.tags:  # a kind someone chose stays
            self.client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, CUSTOM_MODEL_DEVELOPMENT)
        return experiment.experiment_id

    # -- refusing what cannot work before anything runs (the ChecksOptions capability) -----------------

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """A tracking URI (the entry's, else ``$MLFLOW_TRACKING_URI``) that no MLflow store answers to."""
        configured = options.get("tracking_uri")
        problem = tracking_uri_problem(resolve_tracking_uri(configured))
        if problem is not None:
            where = "" if configured else " (from $MLFLOW_TRACKING_URI)"
            raise TrackerOptionError("tracking_uri", problem + where, configured or resolve_tracking_uri(None))

    # -- reading runs back (the RunReader capability): `emergence compare`, `emergence run --from-run` -----

    @classmethod
    def claims(cls, source: str) -> bool:
        """MLflow tracking URIs (schemes ``sqlite``, ``http(s)``, ``file``, ``postgresql``, ``mysql``,
        ``mssql``, ``databricks``, and ``databricks`` alone) and ``runs:/<run_id>``; never a plain path.
        Judged by the spelling only: no store is opened."""
        return is_mlflow_reference(source)

    @classmethod
    def read_runs(cls, source: str, experiment: str | None = None) -> list[dict[str, Any]]:
        """One record per emergence run of ``experiment`` (default ``emergence``) in the store at the
        tracking URI ``source``, or of the run ``runs:/<run_id>``: see ``reading.read_runs``."""
        with _fail_fast_http():
            return reading.read_runs(source, experiment)

    @classmethod
    def fetch_resolved_spec(cls, ref: str, store: str | None = None) -> dict[str, Any]:
        """The resolved spec of the run ``<run_id>`` or ``runs:/<run_id>`` in the store at the tracking URI
        ``store`` (default ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``)."""
        with _fail_fast_http():
            return reading.fetch_resolved_spec(ref, store)

    # -- sweeps: one parent run per sweep, the sweep's runs nested under it -----------------------------

    @classmethod
    def prepare_sweep(cls, options: Mapping[str, Any], sweep_key: str, name: str, run_keys: Sequence[str]) -> None:
        """Before any run of the sweep starts: the experiment and the parent run exist, made once here so
        that runs in parallel processes find them instead of racing to create them."""
        tracker = cls(options, run_dir=Path("."))
        with _fail_fast_http():
            experiment_id = tracker._experiment_id()
            parent = tracker._find_sweep_parent(experiment_id, sweep_key) or tracker._create_sweep_parent(experiment_id, sweep_key, name)
            tracker.client.set_tag(parent.info.run_id, SWEEP_SIZE_TAG, str(len(run_keys)))
            tracker.client.update_run(parent.info.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            # Runs finished by an earlier sweep (a grid that has since grown) are skipped, never started
            # again: nest them under this sweep's parent here, so that it shows the whole grid.
            for run_key in run_keys:
                found = tracker._find_run(experiment_id, run_key)
                if found is not None and found.data.tags.get(PARENT_RUN_TAG) != parent.info.run_id:
                    tracker.client.set_tag(found.info.run_id, PARENT_RUN_TAG, parent.info.run_id)

    @classmethod
    def finish_sweep(cls, options: Mapping[str, Any], sweep_key: str, status: str, summary: SweepSummary | None = None) -> None:
        """The parent run gets the sweep's summary: values as ``summary/...`` metrics, tables under
        ``tables/``, the report under ``sweep/``. Running the sweep again updates it in place."""
        tracker = cls(options, run_dir=Path("."))
        with _fail_fast_http():
            parent = tracker._find_sweep_parent(tracker._experiment_id(), sweep_key)
            if parent is None:
                return
            tracker.run_id = parent.info.run_id
            tracker._remember(parent)
            if summary is not None:
                tracker.set_summary(summary.values)
                for name, (columns, rows) in summary.tables.items():
                    tracker.log_table(name, columns, rows)
                for path in summary.files:
                    tracker.log_artifact(path, "sweep")
            tracker.client.set_terminated(parent.info.run_id, status=FINAL_STATUS[status])

    @classmethod
    def forget_runs(cls, options: Mapping[str, Any], run_keys: Sequence[str]) -> None:
        """Before ``--force`` reruns these runs: their MLflow runs are deleted (to MLflow's trash, where the
        UI can restore them), so the reruns log into fresh runs instead of one that already holds every step."""
        tracker = cls(options, run_dir=Path("."))
        with _fail_fast_http():
            experiment = tracker.client.get_experiment_by_name(tracker.experiment_name)
            if experiment is None:
                return
            for run_key in run_keys:
                while (found := tracker._find_run(experiment.experiment_id, run_key)) is not None:
                    tracker.client.delete_run(found.info.run_id)

    def _find_sweep_parent(self, experiment_id: str, sweep_key: str) -> Any:
        return self._oldest_active_run(experiment_id, f"tags.`{SWEEP_TAG}` = '{sweep_key}' and tags.`{SWEEP_PARENT_TAG}` = 'true'")

    def _create_sweep_parent(self, experiment_id: str, sweep_key: str, name: str) -> Any:
        return self.client.create_run(
            experiment_id, run_name=f"{name} (sweep {sweep_key})", tags={SWEEP_TAG: sweep_key, SWEEP_PARENT_TAG: "true"}
        )

    def _find_run(self, experiment_id: str, run_key: str) -> Any:
        """Our run of this run key; never a run we only logged into (a Trainer's, through ``run_id``), which
        its owner made and may have made again for the same spec."""
        if "'" in run_key:
            raise ValueError(f"run key {run_key!r} cannot be searched for in MLflow")
        return self._oldest_active_run(experiment_id, f"tags.`{RUN_KEY_TAG}` = '{run_key}'", skip_hosted=True)

    def _oldest_active_run(self, experiment_id: str, filter_string: str, skip_hosted: bool = False) -> Any:
        # Two processes racing to create the same run (or parent) can both succeed; the oldest one wins.
        runs = self.client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            run_view_type=ViewType.ACTIVE_ONLY,
            order_by=["attributes.start_time ASC"],
            max_results=HOSTED_RUNS_SKIPPED + 1 if skip_hosted else 1,
        )
        return next((run for run in runs if not (skip_hosted and run.data.tags.get(HOSTED_TAG))), None)

    def _remember(self, run: Any) -> None:
        self._params = dict(run.data.params)
        # RunData keeps each metric's latest entry with its step only in _metric_objs; the public
        # ``metrics`` dict drops the step, and one get_metric_history call per key is far too slow.
        for metric in getattr(run.data, "_metric_objs", []):
            self._latest_step[metric.key] = max(metric.step, self._latest_step.get(metric.key, -1))
        self._latest_value = dict(run.data.metrics)
        logged = run.data.tags.get(MLFLOW_LOGGED_ARTIFACTS)
        if logged:
            with contextlib.suppress(ValueError):
                self._tables = [entry for entry in json.loads(logged) if isinstance(entry, dict)]

    def _log_metric_batches(self, run_id: str, metrics: Sequence[Metric]) -> None:
        for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=chunk)
            for metric in chunk:
                self._latest_step[metric.key] = max(metric.step, self._latest_step.get(metric.key, -1))
                self._latest_value[metric.key] = metric.value

    def _log_tags(self, tags: Mapping[str, str]) -> None:
        run_id = self._require_run()
        for batch in _string_batches(tags):
            self.client.log_batch(run_id, tags=[RunTag(key, value) for key, value in batch])

    def _register_table(self, run_id: str, artifact_file: str) -> None:
        """Lists the table in ``mlflow.loggedArtifacts`` so that the MLflow UI shows it as a table."""
        entry = {"path": artifact_file, "type": "table"}
        if entry in self._tables:
            return
        listed = json.dumps([*self._tables, entry])
        if len(listed) > MAX_TAG_VAL_LENGTH:
            # MLflow would truncate the tag into invalid JSON; the file is logged regardless.
            log.debug("mlflow: %s not listed in %s, the tag is full", artifact_file, MLFLOW_LOGGED_ARTIFACTS)
            return
        self.client.set_tag(run_id, MLFLOW_LOGGED_ARTIFACTS, listed)
        self._tables.append(entry)
