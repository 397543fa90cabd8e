"""Fixtures that stand up real tracking backends for the integration tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVER_START_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MlflowServer:
    """A real ``mlflow server`` on localhost, with a SQLite store and proxied artifacts.

    ``stop()`` and ``start()`` keep the port and the store, so a test can take the server away in the
    middle of a run and bring the same server back.
    """

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.uri = f"http://127.0.0.1:{port}"
        self.store_uri = f"sqlite:///{root / 'mlflow.db'}"
        self.artifacts = root / "artifacts"
        self.log_path = root / "server.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        mlflow_cli = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
        command = [
            mlflow_cli, "server",
            "--backend-store-uri", self.store_uri,
            "--serve-artifacts", "--artifacts-destination", str(self.artifacts),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", "1",
        ]  # fmt: skip
        env = {
            **os.environ,
            # The job runner forks a handful of huey consumers that these tests never use; on a
            # two-core machine they double the start-up time.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        with self.log_path.open("ab") as server_log:
            # A session of its own: `mlflow server` forks uvicorn, and stop() must reach both.
            self._process = subprocess.Popen(
                command,
                cwd=self.root,
                env=env,
                stdout=server_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_until_healthy()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            # The group id is the server's own pid (start_new_session), so this reaches only the
            # server and the uvicorn worker it forked.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)
        # uvicorn may outlive its parent for a moment; the port must be free before a restart.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        self._wait_until_port_free()

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"mlflow server exited early; see {self.log_path}:\n{self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    healthy = response.status == 200
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                healthy = False
            if healthy:
                # /health answers before the worker has opened the store; one API call makes the
                # worker pay that cost here rather than inside the first test that talks to it.
                warm_up = f"{self.uri}/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
                with urllib.request.urlopen(warm_up, timeout=SERVER_START_TIMEOUT_S):
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"mlflow server did not answer within {SERVER_START_TIMEOUT_S} s:\n{self._log_tail()}"
        )

    def _wait_until_port_free(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.1)

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


@pytest.fixture(scope="session")
def _shared_mlflow_server(
    tmp_path_factory: pytest.TempPathFactory, migrated_sqlite_store: Path
) -> Iterator[MlflowServer]:
    root = tmp_path_factory.mktemp("mlflow-server")
    shutil.copyfile(migrated_sqlite_store, root / "mlflow.db")
    server = MlflowServer(root, free_port())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mlflow_server(_shared_mlflow_server: MlflowServer) -> MlflowServer:
    """A real MLflow tracking server, running when the test begins.

    One server serves the whole session (starting one takes several seconds); tests keep apart by
    experiment and run key. A test may stop() it, and should start() it again; if it does not, the
    next test that asks for the server gets it restarted.
    """
    _shared_mlflow_server.start()
    return _shared_mlflow_server


@pytest.fixture(scope="session")
def migrated_sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store with every migration applied, made once per session.

    Migrating a new store costs 1-2 s of CPU (several seconds on a busy two-core machine); copying
    this file costs milliseconds. Its built-in "Default" experiment points at a scratch directory, so
    tests log to experiments of their own.
    """
    import mlflow  # a missing integration is a failure, never a skip
    root = tmp_path_factory.mktemp("mlflow-template")
    path = root / "mlflow.db"
    previous = Path.cwd()
    os.chdir(root)  # MLflow resolves the Default experiment's artifact root against the cwd
    try:
        mlflow.MlflowClient(f"sqlite:///{path}").search_experiments(max_results=1)
    finally:
        os.chdir(previous)
    return path


@pytest.fixture
def sqlite_tracking_uri(tmp_path: Path, migrated_sqlite_store: Path) -> str:
    """A fresh SQLite tracking store of this test's own, under ``tmp_path``."""
    store = tmp_path / "mlflow.db"
    shutil.copyfile(migrated_sqlite_store, store)
    return f"sqlite:///{store}"


@pytest.fixture
def dead_tracking_uri() -> str:
    """A tracking server address where nothing listens: a server that has gone away."""
    return f"http://127.0.0.1:{free_port()}"
