"""Live progress of a run or a sweep in the terminal, drawn from the ``RunMessage``s runs report.

One bar per running run (step, loss, exact match, time left); for a sweep, above them, one line for the
whole sweep: runs done, running, failed, and the time left, estimated from the steps done so far.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from emergence.executors import RunMessage
from emergence.spec.grid import RunSpec


class SweepProgress:
    """Called with every ``RunMessage`` (in the sweep's process); use as a context manager around the sweep."""

    def __init__(self, runs: Sequence[RunSpec], console: Console, enabled: bool = True) -> None:
        self.runs = {run.run_key: run for run in runs}
        self.total_steps = {run.run_key: run.spec.planned_steps for run in runs}
        self.console = console
        self.is_sweep = len(runs) > 1
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
            transient=False,
        )
        self.steps_done = dict.fromkeys(self.runs, 0)
        self.run_tasks: dict[str, TaskID] = {}
        self.started_at: dict[str, float] = {}
        self.finished: dict[str, str] = {}
        self.sweep_task: TaskID | None = None
        if self.is_sweep:
            self.sweep_task = self.progress.add_task(
                self._sweep_line(), total=sum(self.total_steps.values()), detail=""
            )

    def __enter__(self) -> SweepProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def __call__(self, message: RunMessage) -> None:
        key = message.run_key
        if key not in self.runs:
            return
        if message.kind == "started":
            self.started_at[key] = time.monotonic()
            self.run_tasks[key] = self.progress.add_task(
                "  " + escape(self.runs[key].display_name), total=self.total_steps[key], detail="starting"
            )
        elif message.kind == "step":
            self.steps_done[key] = message.step
            detail = f"step {message.step}/{message.total}  loss {message.loss:.4f}" if message.loss is not None else ""
            if message.exact_match is not None:
                detail += f"  exact {message.exact_match:.3f}"
            if key in self.run_tasks:
                self.progress.update(self.run_tasks[key], completed=message.step, detail=detail)
        elif message.kind == "finished":
            self._finish(key, message)
        if self.sweep_task is not None:
            self.progress.update(self.sweep_task, completed=sum(self.steps_done.values()), description=self._sweep_line())

    def _finish(self, key: str, message: RunMessage) -> None:
        state = message.state or "failed"
        self.finished[key] = state
        if state == "skipped" and key not in self.started_at and self.sweep_task is not None:
            # Done before this sweep began: out of the total, so it cannot inflate the speed (time left) estimate.
            self.total_steps[key] = 0
            self.progress.update(self.sweep_task, total=sum(self.total_steps.values()))
        if state == "failed":
            self.total_steps[key] = self.steps_done[key]  # its remaining steps will not be run in this sweep
            if self.sweep_task is not None:
                self.progress.update(self.sweep_task, total=sum(self.total_steps.values()))
        self.steps_done[key] = self.total_steps[key]
        task = self.run_tasks.pop(key, None)
        if task is not None and self.is_sweep:
            self.progress.remove_task(task)  # a sweep keeps only running runs on screen
        elif task is not None:
            self.progress.update(task, completed=self.steps_done[key], detail=state)
        if self.is_sweep:
            took = f" in {time.monotonic() - self.started_at[key]:.0f} s" if key in self.started_at else ""
            reason = f" ({message.reason})" if message.reason and state != "completed" else ""
            colour = {"completed": "green", "skipped": "cyan"}.get(state, "red")
            line = f"[{colour}]{state}[/{colour}] {escape(self.runs[key].display_name)}{took}{escape(reason)}"
            self.console.print(line, highlight=False)

    def _sweep_line(self) -> str:
        states = list(self.finished.values())
        done = sum(s in ("completed", "skipped") for s in states)
        failed = sum(s == "failed" for s in states)
        running = len(self.run_tasks)
        return f"sweep: {done}/{len(self.runs)} done, {running} running, {failed} failed"
