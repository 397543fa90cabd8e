"""Which MLflow store a reference names, and where an emergence run keeps its things in that store.

The names of the tags, metrics and artifacts an emergence run writes (``tracker.py``) are the names
``reading.py`` looks for when it reads runs back, so both take them from here, and both open a store through
``open_client``; imports run one way: ``tracker`` -> ``reading`` -> ``store``.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

from mlflow import MlflowClient
from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE, MLFLOW_TRACKING_URI
from sqlalchemy.engine import make_url

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "emergence"

# -- what an emergence run writes ------------------------------------------------------------------------

RUN_KEY_TAG = "emergence.run_key"
GROUP_TAG = "emergence.group"
SWEEP_TAG = "emergence.sweep"  # the core's sweep key, on every run of a grid and on their parent
SWEEP_PARENT_TAG = "emergence.sweep_parent"
SWEEP_SIZE_TAG = "emergence.sweep_size"
PARENT_RUN_TAG = "mlflow.parentRunId"  # what the MLflow UI nests child runs by
SUMMARY_TAG_PREFIX = "emergence.summary."
SUMMARY_METRIC_PREFIX = "summary/"
RESOLVED_SPEC_ARTIFACT = "spec.resolved.json"
TABLES_DIR = "tables"
VERDICT_TABLES = ("verdicts", "feature_verdicts")  # the tables whose rows are a run's verdicts

# MLflow 3's UI sorts experiments into GenAI ones (traces, "Evaluations") and classic model training by
# this experiment tag, and shows an experiment without it as GenAI. MLflow's Python package has no
# constant for it (only its UI bundle has, as the ExperimentKind enum), so the names are spelt out here.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
CUSTOM_MODEL_DEVELOPMENT = "custom_model_development"

# -- which references name an MLflow store ---------------------------------------------------------------

# Tracking URI schemes MLflow's own tracking stores answer to; the database ones may name a driver
# (``postgresql+psycopg2://``), and ``databricks`` may stand alone or name a profile (``databricks://p``).
TRACKING_URI_SCHEMES = frozenset({"sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks"})
RUN_URI_PREFIX = "runs:/"  # runs:/<run_id>[/<artifact path>]
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):")


def is_mlflow_reference(source: str) -> bool:
    """Whether ``source`` is an MLflow tracking URI (``sqlite:///mlflow.db``, ``http://host:5000``,
    ``databricks`` ...) or a ``runs:/<run_id>`` reference. Judged by its spelling only: nothing is opened.
    A plain path (``runs/tiny``, ``C:\\runs``) is not one."""
    source = source.strip()
    if source == "databricks" or source.startswith(RUN_URI_PREFIX):
        return True
    match = _SCHEME.match(source)
    if match is None or len(match["scheme"]) == 1:  # one letter: a Windows drive
        return False
    return match["scheme"].split("+", 1)[0].lower() in TRACKING_URI_SCHEMES


def tracking_uri_problem(tracking_uri: str) -> str | None:
    """Why MLflow cannot log to ``tracking_uri``, judged by its spelling alone (nothing is opened), or None.

    An unknown scheme fails only when a run starts to log, with its run directory made; a file store (a plain
    path, ``file:``) is refused by MLflow 3 unless ``MLFLOW_ALLOW_FILE_STORE`` is true."""
    allowed = "sqlite:///path/mlflow.db, http(s)://host:port, postgresql://, mysql://, mssql://, databricks"
    uri = tracking_uri.strip()
    if uri == "databricks":
        return None
    match = _SCHEME.match(uri)
    scheme = match["scheme"] if match is not None and len(match["scheme"]) > 1 else None  # one letter: a Windows drive
    if scheme is not None and scheme.lower() != "file":
        if scheme.split("+", 1)[0].lower() in TRACKING_URI_SCHEMES:
            return None
        return f"given {tracking_uri!r}: MLflow has no tracking store for the scheme {scheme!r}; allowed: {allowed}"
    if MLFLOW_ALLOW_FILE_STORE.get():  # a file store: a plain path, or file:
        return None
    return (
        f"given {tracking_uri!r}, a file store, which MLflow 3 refuses unless MLFLOW_ALLOW_FILE_STORE=true; "
        f"allowed: {allowed} (or set MLFLOW_ALLOW_FILE_STORE=true)"
    )


def run_id_of(ref: str) -> str:
    """The run id in ``<run_id>`` or ``runs:/<run_id>[/<artifact path>]``."""
    ref = ref.strip()
    if ref.startswith(RUN_URI_PREFIX):
        ref = ref.removeprefix(RUN_URI_PREFIX).lstrip("/").split("/", 1)[0]
    if not ref or "/" in ref:
        raise LookupError(f"{ref!r} is not an MLflow run id (give <run_id> or runs:/<run_id>)")
    return ref


def resolve_tracking_uri(configured: str | None) -> str:
    """The spec's ``tracking_uri``; else ``$MLFLOW_TRACKING_URI``; else a SQLite file in the cwd.

    The default is made absolute now so that a later ``chdir`` cannot move the store.
    """
    if configured:
        return configured
    from_env = MLFLOW_TRACKING_URI.get()
    if from_env:
        return from_env
    return "sqlite:///" + str(Path("mlflow.db").absolute())


def sqlite_artifact_location(tracking_uri: str) -> str | None:
    """``<directory of the SQLite file>/mlruns`` for a SQLite store, else None (the server decides).

    Left to itself MLflow puts a SQLite store's artifacts in ``./mlruns`` of whatever directory the
    process happens to run in, so the database and its artifacts drift apart. Keeping them side by
    side matches ``mlflow ui`` run next to the default ``mlflow.db``.
    """
    database = _sqlite_database(tracking_uri)
    if database is None:
        return None
    return (Path(database).absolute().parent / "mlruns").as_uri()


def missing_local_store(tracking_uri: str) -> Path | None:
    """The file a SQLite store, or the folder a file store, would be at when it is not there (else None).

    Reading must not open such a URI: MLflow would create (and migrate) an empty store at a mistyped path.
    """
    database = _sqlite_database(tracking_uri)
    if database is not None:
        return None if Path(database).exists() else Path(database)
    if tracking_uri.startswith("file:"):
        folder = Path(unquote(urlsplit(tracking_uri).path))
        return None if folder.exists() else folder
    return None


def open_client(tracking_uri: str) -> MlflowClient:
    """An ``MlflowClient`` for ``tracking_uri``, whose store is opened one process at a time when it is SQLite.

    Opening a SQLite store that is new (or older than this MLflow) creates or migrates its tables, and MLflow
    does that without a lock: two processes that open a fresh ``mlflow.db`` at the same moment both run the
    migrations, and all but one fail (``duplicate column name: step``, ``table runs already exists``). The
    client opens its store as it is made, so making it under an exclusive lock on the database's folder lets
    the first process migrate and the others find the tables done. Only processes that open the store through
    here take the lock: an ``mlflow ui`` started at the same moment on a store that does not exist yet can
    still race (docs/reliability.md).
    """
    database = _sqlite_database(tracking_uri)
    if database is None:
        return MlflowClient(tracking_uri=tracking_uri)
    with _folder_lock(Path(database).absolute().parent):
        return MlflowClient(tracking_uri=tracking_uri)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on a folder (flock on its descriptor): nothing to create or clean up, and the
    OS drops it when a holder dies. Without flock (not POSIX), or on a folder that cannot be opened (MLflow will
    say why), no lock."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def _sqlite_database(tracking_uri: str) -> str | None:
    if not tracking_uri.startswith("sqlite"):
        return None
    url = make_url(tracking_uri)
    if not url.database or url.database == ":memory:":
        return None
    return url.database
