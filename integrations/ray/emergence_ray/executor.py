"""The ``ray`` executor: every run of a sweep is one Ray task, on a local Ray instance or on a cluster.

Each task calls ``emergence.executors.run_in_worker`` (through ``run_in_ray_task``, which only makes sure
the task can be interrupted), exactly what a process of the built-in pool does, so a run's numbers do not
depend on the executor. The driver (the process that called ``execute``) waits for the tasks, relays
their progress messages, and turns a task that Ray lost (worker killed, out of memory, node gone) into a
failed outcome while the other runs go on.

``ray`` is imported inside methods only: validating a spec loads this class, and that must stay cheap.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import signal
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import emergence.runner  # noqa: F401  the run engine, imported with this module: see below
from emergence.executors import ExecutorUnavailable, ProgressSink, RunMessage, record_failure, run_in_worker
from emergence.rundir import RunOutcome, run_directory
from emergence.spec.grid import RunSpec
from emergence.spec.schema import ExecutionSpec
from emergence_ray.progress import InboxSender, ProgressInbox

log = logging.getLogger(__name__)

# Ray workers import the module of a remote function as soon as it is exported to them, before their first
# task; importing the run engine (torch, TransformerLens, the measures) here makes that the moment a worker
# pays for it, so a task starts its run at once. `emergence validate` and `ls` never import this module.

WAIT_SECONDS = 0.2  # how often the driver relays progress while runs go on
PROBE_SECONDS = 5.0  # how long a cluster address may take to accept a connection before it counts as unreachable
CANCEL_GRACE_SECONDS = 60.0  # after Ctrl-C, how long runs get to mark themselves interrupted before they are killed
RAY_CLIENT_PORT = 10001  # the port `ray start --head` serves the Ray Client on; ray://host means ray://host:10001
RAY_CLIENT_PREFIX = "ray://"


class RayClusterUnreachable(ExecutorUnavailable, ConnectionError):
    """``execution.address`` names a cluster that does not answer. Raised before any run starts: it is the
    same for every run, and ``ray.init`` itself would wait minutes before giving up."""


class RayResourcesUnavailable(ExecutorUnavailable, ValueError):
    """A run asks for more CPUs or GPUs than any node of a Ray instance started here has; Ray would keep
    such a task waiting forever."""


class RayRunLost(RuntimeError):
    """Ray gave back no outcome for a run: its worker process or node died, or Ray stopped the task."""


@dataclass(frozen=True)
class TaskResources:
    """What one run asks Ray for, and the torch threads it then uses."""

    cpus: float
    gpus: float
    threads: int

    @classmethod
    def of(cls, execution: ExecutionSpec) -> TaskResources:
        cpus, gpus = float(execution.resources.cpus), float(execution.resources.gpus)
        # A run that reserved 2.5 cores may use 2 threads without crowding a neighbour; one reserving
        # half a core still needs one thread. threads_per_worker overrides, as it does for the local pool.
        threads = execution.threads_per_worker or max(1, math.floor(cpus))
        return cls(cpus, gpus, threads)

    def task_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.cpus, "num_gpus": self.gpus, "max_retries": 0}
        if self.gpus > 0:
            # A fresh worker process per GPU run: a reused one would keep the previous run's CUDA context
            # and cached allocations on a GPU that other runs share. Ray does this by itself only when
            # num_gpus is given to ray.remote (not to .options()), so it is said outright here.
            options["max_calls"] = 1
        return options


def run_in_ray_task(run_spec: RunSpec, send: ProgressSink | None, threads: int, cwd: str) -> RunOutcome:
    """What each Ray task runs: ``run_in_worker``, made sure to be interruptible.

    ``ray.cancel(force=False)`` interrupts a running task by simulating a SIGINT in its worker
    (``_thread.interrupt_main``), which does nothing where SIGINT is ignored; and it is ignored in every
    Ray worker of a driver that was started in the background (``emergence run ... &``, nohup), since
    such a shell starts it with SIGINT ignored and Ray's processes inherit that. Restored here, a
    cancelled run gets its KeyboardInterrupt and marks itself interrupted instead of running on until
    it is killed."""
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return run_in_worker(run_spec, send, threads, cwd)


def local_instance_cpus(execution: ExecutionSpec) -> int | None:
    """CPUs of a Ray instance started here: room for ``workers`` runs of ``resources.cpus`` each (rounded up,
    since Ray counts a node's CPUs in whole numbers); ``None`` lets Ray count the cores."""
    if execution.workers is None:
        return None
    return max(1, math.ceil(execution.workers * execution.resources.cpus - 1e-9))


def cluster_endpoint(address: str) -> tuple[str, int]:
    """``host:port`` or ``ray://host[:port]`` -> (host, port), or a ValueError that says what is expected."""
    rest = address[len(RAY_CLIENT_PREFIX):] if address.startswith(RAY_CLIENT_PREFIX) else address
    host, separator, port = rest.rpartition(":")
    if not separator and address.startswith(RAY_CLIENT_PREFIX):
        host, port = rest, str(RAY_CLIENT_PORT)
    host = host.strip("[]")  # [::1]:6379
    if not host or not port.isdigit():
        raise ValueError(
            f"execution.address {address!r} is not a Ray address: give null (a new local instance), auto (the "
            "running cluster), host:port (its GCS, port 6379 by default) or ray://host:10001 (the Ray Client)"
        )
    return host, int(port)


def check_reachable(address: str) -> None:
    """One TCP connection to the cluster's port, so that a wrong or stopped cluster is reported in seconds."""
    host, port = cluster_endpoint(address)
    try:
        with socket.create_connection((host, port), timeout=PROBE_SECONDS):
            pass
    except OSError as error:
        raise RayClusterUnreachable(
            f"execution.address {address!r}: no Ray cluster answers at {host}:{port} ({error}). Start one "
            "(`ray start --head` on the head node), fix the address, or use address: null for a local instance"
        ) from error


@dataclass
class RaySession:
    """The Ray instance an ``execute`` call uses, and what that means for where runs write."""

    started_here: bool  # this call started it: shut it down afterwards, and it spans this machine only
    remote: bool  # runs may land on other machines: paths must be absolute and shared


@contextlib.contextmanager
def ray_session(execution: ExecutionSpec) -> Iterator[RaySession]:
    """Connect to the Ray instance the spec asks for (reusing one this process already has), and shut down
    an instance started here when the sweep is over."""
    import ray

    if ray.is_initialized():
        if execution.address is not None:
            log.info("Ray is already initialised in this process; execution.address %r is not used", execution.address)
        yield RaySession(started_here=False, remote=_spans_other_machines())
        return
    started_here = _connect(execution)
    try:
        yield RaySession(started_here, remote=not started_here and _spans_other_machines())
    finally:
        if started_here:
            ray.shutdown()


def _connect(execution: ExecutionSpec) -> bool:
    """``ray.init`` for ``execution.address``; returns whether it started a new local instance."""
    address = execution.address
    if address == "auto":
        named = os.environ.get("RAY_ADDRESS", "")  # Ray's own way to name the cluster "auto" means
        address = named if named not in ("", "auto") else _running_cluster()
        if address is None:
            log.warning("execution.address is auto but no Ray cluster is running here; starting a local Ray instance")
    if address is None:
        _init(address="local", num_cpus=local_instance_cpus(execution), include_dashboard=False, log_to_driver=True)
        return True
    if execution.workers is not None:
        log.info("execution.workers sizes a new local Ray instance only; the cluster at %s sets its own size", address)
    if address.startswith(RAY_CLIENT_PREFIX) and importlib.util.find_spec("grpc") is None:
        raise RayClusterUnreachable(
            f"execution.address {address!r} needs the Ray Client: pip install -c constraints.txt 'emergence-ray[client]'"
        )
    check_reachable(address)
    if address.startswith(RAY_CLIENT_PREFIX):
        _init(address=address)  # the client forwards every non-default argument to the server's ray.init
    else:
        _init(address=address, log_to_driver=True)
    return False


def _running_cluster() -> str | None:
    """The address of the Ray cluster running on this machine, found the way ``ray.init(address="auto")``
    finds it, or None. A cluster that is recorded but no longer answers counts as none: connecting to it
    would hang for minutes."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        address = canonicalize_bootstrap_address("auto")
    except Exception as error:  # noqa: BLE001 - ConnectionError (none running), or Ray's internals moved
        log.debug("no running Ray cluster found: %s", error)
        return None
    if address is None:
        return None
    try:
        check_reachable(address)
    except RayClusterUnreachable:
        log.warning("Ray recorded a cluster at %s, but it does not answer (stopped?)", address)
        return None
    return address


def _init(**options: Any) -> None:
    """``ray.init``, keeping this process's SIGTERM handler: Ray installs one that exits at once, which would
    skip what the CLI's own handler does (mark runs interrupted, stop the workers)."""
    import ray

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if in_main_thread else None
    try:
        ray.init(logging_level=logging.WARNING, **options)
    finally:
        if in_main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _spans_other_machines() -> bool:
    import ray
    from ray.util.client import ray as ray_client

    if ray_client.is_connected():
        return True
    return sum(1 for node in ray.nodes() if node.get("Alive")) > 1


class RayExecutor:
    """Runs each resolved run as one Ray task asking for ``resources.cpus`` CPUs and ``resources.gpus`` GPUs.

    ``address``: null starts a new local instance of ``workers * resources.cpus`` CPUs (all cores when
    ``workers`` is null) and shuts it down afterwards; ``auto`` joins the cluster running here, or starts a
    local instance when there is none; ``host:port`` or ``ray://host:10001`` joins that cluster. A Ray
    instance already initialised in this process is used as it is.
    """

    def __init__(self, execution: ExecutionSpec) -> None:
        self.execution = execution
        self.resources = TaskResources.of(execution)
        if execution.address not in (None, "auto"):
            try:
                cluster_endpoint(execution.address)  # a malformed address is an error before Ray starts
            except ValueError as error:
                raise ExecutorUnavailable(str(error)) from None

    def execute(self, runs: Sequence[RunSpec], progress: ProgressSink | None = None) -> list[RunOutcome]:
        if not runs:
            return []
        with ray_session(self.execution) as session:
            self._check_resources(session)
            _warn_about_unshared_paths(runs, session)
            return self._run_all(runs, progress, session)

    def _run_all(self, runs: Sequence[RunSpec], progress: ProgressSink | None, session: RaySession) -> list[RunOutcome]:
        import ray

        _warn_about_unreserved_gpu(runs, self.resources)
        remote_run = ray.remote(**self.resources.task_options())(run_in_ray_task)
        cwd = os.getcwd()  # on a local instance relative paths (runs/, sqlite:///mlflow.db) mean the same place
        inbox = ray.remote(num_cpus=0)(ProgressInbox).remote() if progress is not None else None
        relay = ProgressRelay(inbox, progress)
        send = InboxSender(inbox) if inbox is not None else None
        run_of: dict[Any, tuple[int, RunSpec]] = {}
        outcomes: dict[int, RunOutcome] = {}
        unfinished: list[Any] = []
        try:
            for index, run in enumerate(runs):
                ref = remote_run.remote(run, send, self.resources.threads, cwd)
                run_of[ref] = (index, run)
                unfinished.append(ref)
            while unfinished:
                finished, unfinished = ray.wait(unfinished, num_returns=len(unfinished), timeout=WAIT_SECONDS)
                relay.pass_on()  # before the outcomes, so each run's last steps come before its end
                for ref in finished:
                    index, run = run_of[ref]
                    outcomes[index] = self._collect(ref, run, session)
                    relay.finish(run, outcomes[index])
        except BaseException:  # Ctrl-C, SIGTERM, or the driver itself failing: stop the runs cleanly
            _cancel(unfinished)
            raise
        finally:
            if inbox is not None:
                with contextlib.suppress(Exception):
                    ray.kill(inbox)
        return [outcomes[index] for index in range(len(runs))]

    def _collect(self, ref: Any, run: RunSpec, session: RaySession) -> RunOutcome:
        """The outcome the task returned, or a failed one when Ray lost the task."""
        import ray

        try:
            return ray.get(ref)
        except Exception as error:  # noqa: BLE001 - RayError mostly; any failure of one run must not stop a sweep
            lost = RayRunLost(_describe(error))
            run_dir = run_directory(run)
            # The driver records the failure only where it sees what the worker wrote: on this machine, or
            # on a shared file system; elsewhere it would make a stray local directory.
            if session.started_here or run_dir.exists():
                return record_failure(run, lost)
            log.error("run %s failed: %s", run.display_name, lost)
            return RunOutcome(run.run_key, run_dir, "failed", f"{type(lost).__name__}: {lost}")

    def _check_resources(self, session: RaySession) -> None:
        """Ray keeps a task that no node can hold waiting forever (for an autoscaler to add one). On an
        instance started here none will come: say so now. On a cluster, warn and let Ray wait."""
        import ray

        try:
            nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
        except Exception as error:  # noqa: BLE001 - the check is a courtesy; Ray schedules regardless
            log.debug("could not list the Ray nodes: %s", error)
            return
        asked = {"CPU": self.resources.cpus, "GPU": self.resources.gpus}
        if any(all(node.get(name, 0.0) >= amount for name, amount in asked.items()) for node in nodes):
            return
        largest = {name: max((node.get(name, 0.0) for node in nodes), default=0.0) for name in asked}
        problem = (
            f"each run asks for {asked['CPU']:g} CPU and {asked['GPU']:g} GPU (execution.resources), but no Ray node "
            f"has that much (the largest has {largest['CPU']:g} CPU, {largest['GPU']:g} GPU)"
        )
        if session.started_here:
            hint = "lower execution.resources, or raise execution.workers" if self.execution.workers else "lower execution.resources"
            raise RayResourcesUnavailable(f"{problem}; {hint}")
        log.warning("%s; the runs wait until the cluster grows", problem)


class ProgressRelay:
    """Passes what the runs posted to the inbox on to the sweep's progress sink, in the driver.

    A run's own ``finished`` message may reach the inbox after the driver has its outcome (posts are not
    waited for), and a run that Ray lost sends none; so the driver reports every run finished itself,
    from its outcome, and drops whatever that run posts afterwards."""

    def __init__(self, inbox: Any, progress: ProgressSink | None) -> None:
        self.inbox = inbox
        self.progress = progress
        self.finished: set[str] = set()

    def pass_on(self) -> None:
        if self.inbox is None or self.progress is None:
            return
        import ray

        for message in ray.get(self.inbox.take_all.remote()):
            if message["kind"] != "finished" and message["run_key"] not in self.finished:
                self.progress(RunMessage(**message))

    def finish(self, run: RunSpec, outcome: RunOutcome) -> None:
        self.finished.add(run.run_key)
        if self.progress is not None:
            total = run.spec.planned_steps
            self.progress(RunMessage(run.run_key, "finished", total=total, state=outcome.state, reason=outcome.reason))


def _cancel(unfinished: list[Any]) -> None:
    """Interrupt every unfinished run (a running task gets a KeyboardInterrupt, marks its run interrupted and
    stops; a queued one never starts), wait a while for them to finish doing so, then kill what is left."""
    if not unfinished:
        return
    import ray

    for ref in unfinished:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=False)
    log.warning("interrupting %d Ray task(s); each marks its run interrupted (rerun the spec to resume)", len(unfinished))
    with contextlib.suppress(Exception):
        _, stragglers = ray.wait(unfinished, num_returns=len(unfinished), timeout=CANCEL_GRACE_SECONDS)
        for ref in stragglers:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)


def _describe(error: BaseException) -> str:
    """A one-line reason for a lost task. A RayTaskError's text carries the whole remote traceback, which
    belongs in the journal (``record_failure`` keeps it), not in a status line."""
    cause = getattr(error, "cause", None)
    shown = cause if isinstance(cause, BaseException) else error
    first_line = next((line.strip() for line in str(shown).splitlines() if line.strip()), "")
    return f"the Ray task gave no outcome ({type(shown).__name__}: {first_line})"


def _warn_about_unshared_paths(runs: Sequence[RunSpec], session: RaySession) -> None:
    """On a cluster a run writes where its node is: a relative output_dir or a SQLite tracking store lands
    on whichever machine ran it, out of the driver's (and the next sweep's) sight."""
    if not session.remote:
        return
    spec = runs[0].spec
    if not Path(spec.execution.output_dir).is_absolute():
        log.warning(
            "execution.output_dir %r is relative, but runs may land on other machines of the Ray cluster: give an "
            "absolute path on a file system every node shares, or completed runs will not be found again",
            spec.execution.output_dir,
        )
    for tracking in spec.tracking:
        if tracking.backend != "mlflow" or (tracking.tracking_uri or "").startswith(("http://", "https://", "databricks")):
            continue
        if tracking.tracking_uri is None:
            # The driver's $MLFLOW_TRACKING_URI does not travel to the workers of a cluster.
            where = "is not set: each node uses its own $MLFLOW_TRACKING_URI, else its own sqlite:///mlflow.db"
        else:
            where = f"{tracking.tracking_uri!r} is a store local to whichever node runs the run"
        log.warning("mlflow tracking_uri %s; on a Ray cluster give a tracking server (http://host:5000)", where)


def _warn_about_unreserved_gpu(runs: Sequence[RunSpec], resources: TaskResources) -> None:
    """Ray 2.60 hides no GPU from a task that reserved none, so such runs all pile onto the first GPU."""
    on_gpu = [run for run in runs if run.spec.training.device.startswith("cuda")]
    if resources.gpus == 0 and on_gpu:
        log.warning(
            "%d run(s) train on CUDA (first: %s on %s) but execution.resources.gpus is 0: Ray reserves no GPU for "
            "them, so they may crowd one GPU; ask for a share (resources.gpus: 0.25)",
            len(on_gpu), on_gpu[0].display_name, on_gpu[0].spec.training.device,
        )
