"""What the fault cases share, made once per session: the undisturbed reference run every case is compared with,
and a real MLflow tracking server for the cases that take one away."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.harness import fault_spec, mlflow_tracking, run_dir_of, run_to_end, status_of, write_spec
from tests.integration.conftest import MlflowServer, free_port


@dataclass(frozen=True)
class Reference:
    run_dir: Path
    tracking_uri: str  # a SQLite store holding the reference's MLflow run
    run_key: str


class BootingServer:
    """An ``MlflowServer`` whose first start goes on in a thread: it boots (10 s on a busy 2-core machine) while
    the reference run trains, instead of inside the first case that needs it."""

    def __init__(self, root: Path) -> None:
        self.server = MlflowServer(root, free_port())
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None

    def boot(self) -> None:
        def start() -> None:
            try:
                self.server.start()
            except BaseException as error:  # noqa: BLE001 - raised in the case that asks for the server
                self._failure = error

        self._thread = threading.Thread(target=start, name="mlflow-server-boot", daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def ready(self) -> MlflowServer:
        self.join()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        self.server.start()  # again, if a case left it stopped (a no-op while it runs)
        return self.server


@pytest.fixture(scope="session")
def _mlflow_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BootingServer]:
    booting = BootingServer(tmp_path_factory.mktemp("mlflow-server"))
    here = Path(__file__).parent  # tests/integration has a fixture of the same name, and servers of its own
    if any("mlflow_server" in getattr(item, "fixturenames", ()) and Path(item.fspath).parent == here for item in request.session.items):
        booting.boot()
    try:
        yield booting
    finally:
        booting.join()
        booting.server.stop()


@pytest.fixture
def mlflow_server(_mlflow_server: BootingServer) -> MlflowServer:
    """A real ``mlflow server`` (SQLite store, proxied artifacts) shared by the session's cases, running when the
    case begins. Cases keep apart by experiment; one that stops the server need not start it again."""
    return _mlflow_server.ready()


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory, _mlflow_server: BootingServer) -> Reference:
    root = tmp_path_factory.mktemp("reference")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    spec_path = write_spec(root / "spec.yaml", fault_spec(root / "runs", mlflow_tracking(tracking_uri)))
    log = root / "run.log"
    assert run_to_end(spec_path, log) == 0, log.read_text(errors="replace")[-4000:]
    run_dir = run_dir_of(spec_path)
    assert status_of(run_dir)["state"] == "completed"
    return Reference(run_dir, tracking_uri, run_dir.name)
