"""What every run does with what it measures, whoever trains it (our loop in ``runner.py``, someone else's
through ``monitor.py``): the values go to the journal and the trackers, a tracker that fell behind is
caught up from the journal, the measures due at a step are computed on one capture, and at the end come
the analysis, the verdict tables, the tracker summary, the report, the status and the trackers' finish.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from emergence.analysis import analyze_run, write_analysis
from emergence.environment import environment_changes, run_environment
from emergence.measures.base import Measure, MeasureContext, SavedWeights
from emergence.record import Journal
from emergence.rundir import SPEC_FILE, RunOutcome, run_directory, write_status
from emergence.spec.grid import RunSpec
from emergence.tracking import (
    TrackerFanout,
    TrackerStart,
    build_trackers,
    replay_journal,
    sanitize_key,
    tracker_summary,
)

log = logging.getLogger(__name__)

TRACKER_RETRY_SECONDS = 30.0  # how often a run tries to bring a tracker that fell behind up to date
# Begins with "interrupted", as the reason of a run interrupted in training does: trackers then call it that.
INTERRUPTED_AT_THE_END = "interrupted while writing its report and finishing its trackers; run the same spec again to finish it"


class RunRecorder:
    """The journal and trackers of one run directory, and the measures computed into them."""

    def __init__(self, run_spec: RunSpec) -> None:
        self.run_spec = run_spec
        self.run_dir = run_directory(run_spec)
        self.journal = Journal(self.run_dir)
        self.trackers = TrackerFanout([])
        self._tracker_start: TrackerStart | None = None
        self._last_tracker_retry = time.monotonic()
        self.environment: dict[str, Any] = {}
        self.environment_changes: dict[str, list[Any]] = {}

    # -- what the numbers depend on --------------------------------------------------------------

    def check_environment(self) -> dict[str, Any]:
        """This process's environment (torch version and threads, CPU), compared with what the journal's last
        ``start`` recorded: a run resumed under another one goes on, but is no longer bit for bit the run an
        uninterrupted one would be, so the journal, ``status.json`` and the log say so. Call before this
        process's own ``start`` event."""
        self.environment = run_environment()
        starts = [e for e in self.journal.read().events if e.get("event") == "start"]
        self.environment_changes = environment_changes(starts[-1].get("environment") if starts else None, self.environment)
        if self.environment_changes:
            changed = ", ".join(f"{key} {before} -> {now}" for key, (before, now) in self.environment_changes.items())
            log.warning(
                "run %s resumes under another environment (%s): its values from here on will not match an "
                "uninterrupted run's bit for bit",
                self.run_dir, changed,
            )
            self.journal.append_event("environment_changed", changes=self.environment_changes)
        return self.environment

    # -- trackers ------------------------------------------------------------------------------

    def start_trackers(self, device: str, n_params: int) -> None:
        tracking = [t.model_dump() for t in self.run_spec.spec.tracking]
        self.trackers = TrackerFanout(*build_trackers(tracking, self.run_dir))
        self._tracker_start = TrackerStart.of(self.run_spec, device, n_params, self.environment)
        self.trackers.start(*self._tracker_start.arguments)
        self.trackers.log_params(self._tracker_start.params)

    def _catch_up_trackers(self, step: int | None, force: bool = False) -> None:
        """Every ``TRACKER_RETRY_SECONDS`` (or now, when ``force``: once more before the run's end), replay the
        journal so far into each tracker that fell behind; one that takes the whole replay is back in the
        fan-out (an MLflow server that came back, say)."""
        if not self.trackers.failed:
            return
        if not force and time.monotonic() - self._last_tracker_retry < TRACKER_RETRY_SECONDS:
            return
        self._last_tracker_retry = time.monotonic()
        if self._tracker_start is None:
            return
        journal = self.journal.read()
        for name, tracker in self.trackers.behind():
            try:
                replay_journal(tracker, self._tracker_start, journal)
            except Exception as error:  # noqa: BLE001 - still away: try again later
                log.info("tracker %s is still behind (%s)", name, error)
                continue
            self.trackers.revive(name)
            self.journal.append_event("tracker_caught_up", tracker=name, step=step)
            log.warning("tracker %s caught up from the journal", name)

    # -- measuring -----------------------------------------------------------------------------

    def measure(
        self,
        step: int,
        due: Sequence[Measure],
        capture: Callable[[list[Any]], Mapping[Any, Any]],
        model: Any,
        lr: float,
        values: dict[str, float],
    ) -> dict[str, float]:
        """Compute the ``due`` measures on one ``capture`` of what they need, add them to ``values`` (what the
        caller measured itself: behaviour, learning rate), and record everything at ``step``."""
        tables: dict[str, tuple[list[str], list[list[Any]]]] = {}
        if due:
            started = time.perf_counter()
            activations = capture([r for m in due for r in m.needs()])
            values["cost/capture"] = time.perf_counter() - started
            context = MeasureContext(step=step, model=model, activations=dict(activations), lr=lr)
            for measure in due:
                started = time.perf_counter()
                try:
                    values.update(measure.compute(context))
                except Exception as error:  # noqa: BLE001 - a measure failure is never a run failure
                    log.warning("measure %s failed at step %d: %s", measure.name, step, error)
                    self.journal.append_event("measure_failed", step=step, measure=measure.name, error=repr(error))
                values[f"cost/{measure.name}"] = time.perf_counter() - started
            tables = context.tables
        return self.record(step, values, tables)

    def after_run(self, measures: Sequence[Measure], saved: SavedWeights) -> None:
        """Each measure's values from the finished run's saved weights (``Measure.after_run``), recorded at their
        steps, then its tables; called before the analysis, so they are judged like any measured value. A
        measure that fails is logged and skipped, as at a measurement step; ``cost/<measure>/after_run``, at the
        last step, is how long it took."""
        for measure in measures:
            started = time.perf_counter()
            saved.tables.clear()
            try:
                by_step = measure.after_run(saved)
            except Exception as error:  # noqa: BLE001 - a measure failure is never a run failure
                log.warning("measure %s failed after the run: %s", measure.name, error)
                self.journal.append_event("measure_failed", step=max(saved.steps, default=0), measure=measure.name, error=repr(error))
                continue
            if not by_step and not saved.tables:
                continue
            for step in sorted(by_step):
                self.record(step, by_step[step])
            for name, (columns, rows) in saved.tables.items():
                self.journal.append_table(name, columns, rows)
                self.trackers.log_table(name, columns, rows)
            last = max([*by_step, *saved.steps], default=0)
            self.record(last, {f"cost/{measure.name}/after_run": time.perf_counter() - started})

    def record(
        self, step: int, values: Mapping[str, float], tables: Mapping[str, tuple[list[str], list[list[Any]]]] | None = None
    ) -> dict[str, float]:
        """Values (and tables) at ``step`` into the journal, then the trackers."""
        for name, (columns, rows) in (tables or {}).items():
            self.journal.append_table(name, columns, rows, step=step)
            self.trackers.log_table(name, columns, rows, step=step)
        clean = {sanitize_key(k): float(v) for k, v in values.items()}
        self.journal.append_values(step, clean)
        self.trackers.log_metrics(clean, step)
        self._catch_up_trackers(step)
        return clean

    # -- the end -------------------------------------------------------------------------------

    def analyze(self, chance: float, level_chance: dict[int, float] | None = None) -> dict[str, Any]:
        journal = self.journal.read()
        # A tracker still behind gets one more try before the verdicts and summary go out, so that a server that
        # came back near the end of a run gets them too, not only the values.
        self._catch_up_trackers(journal.last_step(), force=True)
        analysis = analyze_run(self.run_dir, self.run_spec.spec, journal, chance, level_chance)
        write_analysis(self.run_dir, analysis)
        for table, entries in (("verdicts", analysis["verdicts"]), ("feature_verdicts", analysis["feature_verdicts"])):
            if entries:
                columns = list(entries[0])
                rows = [[v[c] for c in columns] for v in entries]
                self.journal.append_table(table, columns, rows)
                self.trackers.log_table(table, columns, rows)
        self.trackers.set_summary(tracker_summary(analysis))
        return analysis

    def _write_report(self, status: dict[str, Any]) -> None:
        try:
            from emergence.reports import write_report

            report = write_report(self.run_dir, status)
        except Exception:  # noqa: BLE001 - a plotting problem must not lose a finished run
            log.exception("could not write the report for %s", self.run_dir)
            return
        self.trackers.log_artifact(report, "report")
        for png in sorted(Path(self.run_dir).glob("*.png")):
            self.trackers.log_artifact(png, "report")

    def finish(
        self,
        state: str,
        reason: str | None = None,
        analysis: dict[str, Any] | None = None,
        tracker_status: str | None = None,
        **details: Any,
    ) -> RunOutcome:
        """The report, the spec and journal as artifacts, the trackers finished (``tracker_status`` when it
        differs: ``interrupted``), and last the status (``completed`` or ``failed`` with the reason).

        The status comes last: a run killed while it writes its report or finishes its trackers is not yet
        ``completed``, so running it again resumes from its last checkpoint and does the end again, instead of
        skipping a run whose report and trackers never got their last word."""
        status: dict[str, Any] = {"run_key": self.run_spec.run_key, **details}
        if reason:
            status["reason"] = reason
        if self.environment:
            status["environment"] = self.environment
        if self.environment_changes:
            status["environment_changed"] = self.environment_changes
        try:
            self._catch_up_trackers(None, force=True)
            self._write_report({"state": state, **status})
            self.trackers.log_artifact(self.run_dir / SPEC_FILE, None)
            self.trackers.log_artifact(self.journal.path, None)  # every value, table and event: the run's record
            self.trackers.finish(tracker_status or state)
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM) in the end itself: the status below still says that the run stopped,
            # and a run that was completing says it did not finish, so that running it again does the end again.
            if state == "completed":
                state = "failed"
                status["reason"] = INTERRUPTED_AT_THE_END
            raise
        finally:
            if self.trackers.failed:
                status["trackers_behind"] = self.trackers.failed
            write_status(self.run_dir, state, **status)
        analysis = analysis or {}
        return RunOutcome(
            self.run_spec.run_key, self.run_dir, state, reason, analysis.get("verdicts", []), analysis.get("events", []),
            analysis, status.get("n_params"),
        )
