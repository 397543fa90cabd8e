"""How the resolved runs of a spec get run: the ``Executor`` protocol, the built-in ``local`` executor, and
what one worker does with one run (``run_in_worker``), which plugin executors (emergence-ray) share.

``local`` runs one after another in this process, or, with ``execution.workers: N``, N at a time, each in a
fresh OS process forked from a server that has already imported torch (a spawned process would spend
six seconds importing it per run). A run that fails, or whose process dies, is reported and the others go on.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Literal, Protocol

from emergence import registry
from emergence.record import Journal
from emergence.rundir import RunOutcome, run_directory, write_status
from emergence.spec.grid import RunSpec
from emergence.spec.schema import ExecutionSpec

log = logging.getLogger(__name__)

# The run engine (torch, TransformerLens) is imported by the fork server once, not by this module: naming an
# executor, as `emergence validate` does, must not cost the seconds those imports take.
FORKSERVER_PRELOAD = ["emergence.runner", "emergence.executors", "emergence.analysis", "emergence.reports"]
STEP_MESSAGE_SECONDS = 0.5  # at most this often a running run reports its step (measurements always)
PARENT_CHECK_SECONDS = 2.0  # a pool worker whose sweep process died stops within this long


@dataclass(frozen=True)
class RunMessage:
    """What a run reports while it runs: the sweep's progress display is built from these alone, so a run
    in another process or on another machine reports like one in this process."""

    run_key: str
    kind: Literal["started", "step", "finished"]
    step: int = 0
    total: int = 0
    loss: float | None = None
    exact_match: float | None = None
    state: str | None = None  # finished: completed | failed | skipped
    reason: str | None = None


ProgressSink = Callable[[RunMessage], None]


class ExecutorUnavailable(RuntimeError):
    """An executor cannot run anything as the spec's ``execution`` section asks (a cluster that does not
    answer, resources no node has). Raised before any run starts; the CLI reports it and exits with 2."""


class Executor(Protocol):
    """Built from the spec's ``execution`` section; runs what it is given and returns one outcome per run,
    in order. A run that fails is an outcome with state ``failed``, never an exception."""

    def __init__(self, execution: ExecutionSpec) -> None: ...

    def execute(self, runs: Sequence[RunSpec], progress: ProgressSink | None = None) -> list[RunOutcome]: ...


def run_in_worker(
    run_spec: RunSpec, send: ProgressSink | None = None, threads: int | None = None, cwd: str | None = None
) -> RunOutcome:
    """One run wherever a worker is: set the torch threads, move to the sweep's working directory (so that
    relative paths mean what they meant where the sweep started), run, report, and turn any error into a
    ``failed`` outcome with the reason."""
    import torch

    from emergence.runner import run_one

    if cwd is not None and os.path.isdir(cwd):
        os.chdir(cwd)
    if threads is not None:
        torch.set_num_threads(threads)
    report = send or (lambda message: None)
    total = run_spec.spec.planned_steps
    report(RunMessage(run_spec.run_key, "started", total=total))
    last_sent = 0.0

    def on_step(result: Any, values: Any) -> None:
        nonlocal last_sent
        now = time.monotonic()
        if values or now - last_sent >= STEP_MESSAGE_SECONDS or result.step == total:
            last_sent = now
            exact = values.get("behavior/test/exact_match") if values else None
            report(RunMessage(run_spec.run_key, "step", result.step, total, result.loss, exact))

    try:
        outcome = run_one(run_spec, on_step)
    except Exception as error:  # noqa: BLE001 - one failing run must not stop a sweep
        outcome = record_failure(run_spec, error)
    report(RunMessage(run_spec.run_key, "finished", total=total, state=outcome.state, reason=outcome.reason))
    return outcome


def record_failure(run_spec: RunSpec, error: BaseException) -> RunOutcome:
    """A run that raised before it could report itself: its status and journal say why."""
    run_dir = run_directory(run_spec)
    reason = f"{type(error).__name__}: {error}"
    log.error("run %s failed: %s", run_spec.display_name, reason)
    try:
        Journal(run_dir).append_event("failed", reason=reason, traceback=traceback.format_exc())
        write_status(run_dir, "failed", run_key=run_spec.run_key, reason=reason)
    except OSError as write_error:
        log.error("could not record the failure in %s: %s", run_dir, write_error)
    return RunOutcome(run_spec.run_key, run_dir, "failed", reason)


def default_threads(workers: int) -> int:
    """Torch threads per worker so that the workers together use the cores once, not once each."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // workers)


@registry.executors.register("local")
class LocalExecutor:
    """One run after another in this process, or a pool of `workers` processes with one fresh process per run."""

    def __init__(self, execution: ExecutionSpec) -> None:
        self.workers = execution.workers or 1
        self.threads_asked = execution.threads_per_worker
        self.threads = execution.threads_per_worker or default_threads(self.workers)

    def execute(self, runs: Sequence[RunSpec], progress: ProgressSink | None = None) -> list[RunOutcome]:
        if self.workers == 1 or len(runs) <= 1:
            # In this process torch keeps its own thread count unless the spec names one.
            return [run_in_worker(run, progress, self.threads_asked) for run in runs]
        return ProcessPool(self.workers, self.threads).execute(runs, progress)


class ProcessPool:
    """Runs in child processes, at most ``workers`` at once, each child running exactly one run.

    Each child reports through a pipe of its own: progress messages, then its outcome. Not one shared queue:
    a queue's writers share a lock, and a child killed while holding it would block every other child for
    good. A child that dies without an outcome (killed, out of memory) becomes a failed outcome with its exit
    code. Stopping the sweep (Ctrl-C, SIGTERM) interrupts every child, so each marks its run interrupted.
    """

    def __init__(self, workers: int, threads: int) -> None:
        self.workers = workers
        self.threads = threads
        self.context = multiprocessing.get_context("forkserver")
        # Children fork from a server that imported these once; a fork costs milliseconds, an import seconds
        # (torch and TransformerLens here, matplotlib and scipy for each run's analysis and report).
        self.context.set_forkserver_preload(FORKSERVER_PRELOAD)

    def execute(self, runs: Sequence[RunSpec], progress: ProgressSink | None = None) -> list[RunOutcome]:
        waiting = list(enumerate(runs))
        running: dict[int, tuple[BaseProcess, Connection]] = {}
        outcomes: dict[int, RunOutcome] = {}
        try:
            while waiting or running:
                while waiting and len(running) < self.workers:
                    index, run = waiting.pop(0)
                    reader, writer = self.context.Pipe(duplex=False)
                    child = self.context.Process(
                        target=_child_main,
                        args=(run, writer, self.threads, os.getcwd(), os.getpid()),
                        name=f"emergence-{run.run_key}",
                    )
                    child.start()
                    writer.close()  # the child holds the writing end; reading here ends when it exits
                    running[index] = (child, reader)
                ready = multiprocessing.connection.wait([reader for _, reader in running.values()], timeout=0.2)
                for index, (child, reader) in list(running.items()):
                    if reader in ready:
                        if self._receive(reader, index, outcomes, progress):
                            continue  # more may follow
                    elif child.is_alive():
                        continue
                    # Its pipe closed, or it exited between the wait and now: read what is left, then reap it.
                    while reader.poll() and self._receive(reader, index, outcomes, progress):
                        pass
                    child.join()
                    reader.close()
                    del running[index]
                    if index not in outcomes:
                        outcomes[index] = self._died(runs[index], child.exitcode, progress)
        except BaseException:
            self._stop([child for child, _ in running.values()])
            raise
        return [outcomes[i] for i in range(len(runs))]

    @staticmethod
    def _receive(reader: Connection, index: int, outcomes: dict[int, RunOutcome], progress: ProgressSink | None) -> bool:
        """Take one item from a child; False when its pipe is closed (it exited, or died)."""
        try:
            item = reader.recv()
        except (EOFError, OSError):
            return False
        if isinstance(item, RunOutcome):
            outcomes[index] = item
        elif progress is not None:
            progress(item)
        return True

    def _died(self, run: RunSpec, exitcode: int | None, progress: ProgressSink | None) -> RunOutcome:
        how = f"killed by signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit code {exitcode}"
        outcome = record_failure(run, RuntimeError(f"worker process died ({how}) without finishing the run"))
        if progress is not None:
            progress(RunMessage(run.run_key, "finished", state="failed", reason=outcome.reason))
        return outcome

    @staticmethod
    def _stop(children: Any) -> None:
        children = list(children)
        for child in children:
            if child.is_alive():
                child.terminate()  # SIGTERM: the child marks its run interrupted, then exits
        for child in children:
            child.join(timeout=60)
            if child.is_alive():
                child.kill()


def _child_main(run: RunSpec, messages: Connection, threads: int, cwd: str, sweep_pid: int) -> None:
    # `timeout` and schedulers stop with SIGTERM: treat it as Ctrl-C so the run is marked interrupted.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    threading.Thread(target=_exit_with_sweep, args=(sweep_pid,), daemon=True).start()
    try:
        outcome = run_in_worker(run, messages.send, threads, cwd)
    except KeyboardInterrupt:  # the run has marked itself interrupted
        reason = "interrupted; run the sweep again to resume"
        outcome = RunOutcome(run.run_key, run_directory(run), "failed", reason)
        messages.send(RunMessage(run.run_key, "finished", state="failed", reason=reason))
    messages.send(outcome)
    messages.close()


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _exit_with_sweep(sweep_pid: int) -> None:
    """A sweep process killed outright (SIGKILL) cannot stop its children; they notice and stop themselves,
    so that starting the sweep again never finds a run still being written by an orphan."""
    while True:
        time.sleep(PARENT_CHECK_SECONDS)
        try:
            os.kill(sweep_pid, 0)
        except ProcessLookupError:
            os.kill(os.getpid(), signal.SIGTERM)
            return
        except PermissionError:
            continue
