"""``emergence.Monitor``: the measures, journal, analysis, report and trackers of a run, driven by someone
else's training loop (their own script, a Hugging Face ``Trainer``, Lightning) on their own model.

    monitor = emergence.Monitor("monitor.yaml", model=model, diagnostic=batch, behavior=evaluate)
    for step in range(steps):
        ...                       # the user's own training step
        monitor.step(step)        # the measures due now: one capture, the journal, the trackers
    monitor.finish()              # events, verdicts, report, tracker summary

The run directory and everything in it are those of a run ``emergence run`` trains, so ``report``,
``compare``, ``sync`` and the sweep summary work on a monitored run unchanged. Its identity is the monitor
spec plus the ``run_name`` its user gives: a loop restarted from its own checkpoint at step s makes a new
Monitor with the same name, which reattaches to the same directory and tracker runs; its first step
supersedes every journal entry from that step on, so nothing is counted twice.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch

from emergence import batches, registry
from emergence.analysis import chance_of
from emergence.capture import CaptureRequest
from emergence.measures.base import Measure, MeasureSetup
from emergence.measures.monitored_loss import LossFn, LossInputError, MonitoredLoss
from emergence.module_capture import (
    MODULE_POSITIONS,
    ModuleCapture,
    ModuleSite,
    MonitorInputError,
    match_sites,
)
from emergence.recorder import RunRecorder
from emergence.rundir import RunDirectoryLock, RunResult, read_run_result, write_resolved_spec, write_status
from emergence.schedule import MeasurementSchedule
from emergence.spec import DEFAULT_RUN_NAME, resolve_monitor
from emergence.version import __version__

log = logging.getLogger(__name__)

BEHAVIOR_PREFIX = "behavior/"
NO_LAST_STEP = -1  # a MeasurementSchedule's total_steps when the loop's length is not known

Behavior = Callable[[], Mapping[str, float]]


class Monitor:
    """Measure, journal, analyse and log a model that someone else's loop trains.

    ``spec``: a monitor spec file or mapping (``kind: monitor``: name, measures, schedule, analysis,
    tracking). ``model``: any ``torch.nn.Module``. ``diagnostic``: a fixed batch the measures capture on at
    every measurement step (a tensor, a tuple of positional inputs, or a mapping of keyword inputs such
    as a tokenizer's output). ``behavior``: called at measurement steps, returns ``{metric: value}``
    (keys without a ``/`` are filed under ``behavior/``); ``analysis.emergence.metric`` names the one whose
    rise is the emergence event. ``positions``: for each diagnostic example, the sequence position to
    capture (default: the last). ``optimizer``: where the learning rate is read from. ``total_steps``:
    the loop's length, when known (the last step is then always measured). ``loss_fn(model, batch)``: the
    loss of a batch shaped like ``diagnostic`` (or a subset of its examples), one number or one per example
    (shape ``[n]``), for the curvature, the LLC and (per example) the gradient ranks. ``features``:
    ``{name: labels}``, one integer label per diagnostic example (-1: none), for the probes.

    Bad input (a site that matches no module, a diagnostic batch the model cannot take, a measure whose
    input is missing, a loss or labels of the wrong shape) raises ``MonitorInputError`` or ``SpecError`` here, before any tracker run exists.
    """

    def __init__(
        self,
        spec: str | Path | Mapping[str, Any],
        *,
        model: torch.nn.Module,
        diagnostic: Any,
        run_name: str = DEFAULT_RUN_NAME,
        overrides: Sequence[str] = (),
        behavior: Behavior | None = None,
        positions: torch.Tensor | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        total_steps: int | None = None,
        loss_fn: LossFn | None = None,
        features: Mapping[str, Any] | None = None,
    ) -> None:
        self.run_spec = resolve_monitor(spec, list(overrides), run_name)
        self.spec = self.run_spec.spec
        self.model = model
        self.diagnostic = diagnostic
        self.behavior = behavior
        self.optimizer = optimizer
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.n_params = sum(p.numel() for p in model.parameters())
        self.loss = self._check_loss(loss_fn)
        self.features = None if features is None else feature_labels(features, batch_size(diagnostic))
        self.measures, site_layers = self._build_measures(positions, total_steps)
        self._capture = ModuleCapture(model, site_layers, positions)
        self._check_capture()
        self.schedule = MeasurementSchedule.from_spec(self.spec.schedule, NO_LAST_STEP if total_steps is None else total_steps)
        self.recorder = RunRecorder(self.run_spec)
        self.run_dir = self.recorder.run_dir
        self._lock = RunDirectoryLock(self.run_dir, wait_seconds=0)
        if not self._lock.__enter__():
            raise MonitorInputError(f"{self.run_dir} is in use by another process (a Monitor with run_name {run_name!r}?)")
        self._open()

    # -- building ------------------------------------------------------------------------------

    def _build_measures(
        self, positions: torch.Tensor | None, total_steps: int | None
    ) -> tuple[list[tuple[Measure, int | None]], dict[str, list[ModuleSite]]]:
        """Each measure of the spec with its cadence, and the modules each site pattern matched."""
        classes, options, sites = [], [], {}
        for index, measure_spec in enumerate(self.spec.measures):
            measure_class = registry.measures.get(measure_spec.name)
            self._check_inputs(f"measures.{index}", measure_class)
            measure_options = measure_class.Options.model_validate(measure_spec.options())
            position = getattr(measure_options, "position", None)
            if position is not None and position not in MODULE_POSITIONS:
                raise MonitorInputError(f"measures.{index}.position: given {position!r}; a Monitor captures {', '.join(MODULE_POSITIONS)}")
            for pattern in getattr(measure_options, "sites", None) or []:
                try:
                    sites[pattern] = match_sites(self.model, pattern)
                except MonitorInputError as error:
                    raise MonitorInputError(f"measures.{index}.sites: {error}") from None
            classes.append((measure_class, measure_spec))
            options.append(measure_options)
        if positions is not None and positions.shape[:1] != torch.Size([batch_size(self.diagnostic)]):
            raise MonitorInputError(f"positions: {tuple(positions.shape)}, but the diagnostic batch has {batch_size(self.diagnostic)} examples")
        site_layers = {pattern: [(s.family, s.layer) for s in matched] for pattern, matched in sites.items()}
        layers = [layer for matched in site_layers.values() for _, layer in matched]
        setup = MeasureSetup(
            n_layers=max(layers, default=-1) + 1, d_model=0, task=None, device=self.device, seed=self.spec.seed,
            total_steps=total_steps, site_layers=site_layers, loss=self.loss, features=self.features,
        )
        built = []
        for index, ((cls, measure_spec), opts) in enumerate(zip(classes, options, strict=True)):
            try:
                built.append((cls(opts, setup), measure_spec.cadence(cls.default_every)))
            except ValueError as error:  # a measure that cannot work with what it was given says so here
                raise MonitorInputError(f"measures.{index} ({cls.name}): {error}") from None
        return built, sites

    def _check_loss(self, loss_fn: LossFn | None) -> MonitoredLoss | None:
        if loss_fn is None:
            return None
        try:
            return MonitoredLoss(self.model, loss_fn, self.diagnostic)
        except LossInputError as error:
            raise MonitorInputError(str(error)) from None

    def _check_inputs(self, where: str, measure_class: type[Measure]) -> None:
        """A measure that reads the task in a trained run runs under a Monitor only on what stands in for it:
        a ``loss_fn`` (one loss per example for the gradient ranks) or ``features``."""
        if not measure_class.needs_task:
            return
        name, inputs = measure_class.name, measure_class.monitor_inputs
        if not inputs:
            raise MonitorInputError(
                f"{where}: measure {name!r} reads the task of a run that emergence trains (its answer positions and "
                "feature labels); a Monitor cannot give it that"
            )
        if "features" in inputs and self.features is None:
            raise MonitorInputError(f"{where}: measure {name!r} needs features={{name: labels}}, one label per diagnostic example")
        if ("loss_fn" in inputs or "per_example_loss" in inputs) and self.loss is None:
            raise MonitorInputError(f"{where}: measure {name!r} needs loss_fn=(model, batch) -> loss on the diagnostic batch")
        if "per_example_loss" in inputs and self.loss is not None and not self.loss.per_example:
            raise MonitorInputError(
                f"{where}: measure {name!r} needs one loss per example: loss_fn returned one number; "
                f"return shape [{self.loss.n}] (reduction='none')"
            )

    def _requests(self, measures: Sequence[Measure]) -> list[CaptureRequest]:
        return [request for measure in measures for request in measure.needs()]

    def _check_capture(self) -> None:
        """One capture of everything, now: a batch the model cannot take fails here, not mid-training."""
        requests = self._requests([m for m, _ in self.measures])
        try:
            self._capture(self.diagnostic, requests)
        except MonitorInputError:
            raise
        except Exception as error:  # noqa: BLE001 - whatever the model raises, say it is the batch
            raise MonitorInputError(
                f"diagnostic: {type(self.model).__name__} cannot take the diagnostic batch ({type(error).__name__}: {error})"
            ) from error

    def _open(self) -> None:
        write_resolved_spec(self.run_dir, self.run_spec)
        self._superseded = False
        self._last_step: int | None = None
        environment = self.recorder.check_environment()
        write_status(self.run_dir, "running", run_key=self.run_spec.run_key, monitored=True, environment=environment)
        self.recorder.journal.append_event(
            "start", device=str(self.device), n_params=self.n_params, version=__version__, model=type(self.model).__name__,
            monitor=True, environment=environment,
        )
        self.recorder.start_trackers(str(self.device), self.n_params)

    # -- the loop ------------------------------------------------------------------------------

    def _supersede(self, step: int) -> None:
        """A loop restarted from its checkpoint measures again from ``step``: what the journal holds from
        there on is dropped, once, at the first value of this Monitor."""
        if self._superseded:
            return
        self._superseded = True
        journal = self.recorder.journal
        last = journal.read().last_step()
        if last is not None and last >= step:
            journal.truncate_after(step - 1)
            journal.append_event("resume", step=step)
            log.info("%s: journal entries from step %d on are superseded", self.run_dir, step)

    def _lr(self) -> float:
        if self.optimizer is None:
            return float("nan")
        return float(self.optimizer.param_groups[0]["lr"])

    def due(self, step: int) -> bool:
        """Whether ``step`` is a measurement step of the spec's schedule or of any measure's own cadence."""
        return self.schedule.due(step) or any(self.schedule.due(step, every) for _, every in self.measures)

    def step(self, step: int, values: Mapping[str, float] | None = None) -> dict[str, float]:
        """At ``step`` of the user's loop: the measures due now (one capture of the diagnostic batch),
        ``behavior()`` when the schedule is due, and ``values`` if given, into the journal and the trackers.
        Returns what was recorded (``{}`` when nothing was due)."""
        self._supersede(step)  # the first step of a restarted loop, due or not, is where the old journal ends
        due = [measure for measure, every in self.measures if self.schedule.due(step, every)]
        on_schedule = self.schedule.due(step)
        if not due and not on_schedule and not values:
            return {}
        self._last_step = step
        recorded: dict[str, float] = {}
        if self.optimizer is not None:
            recorded["train/lr"] = self._lr()
        if self.behavior is not None and on_schedule:
            started = time.perf_counter()
            recorded.update(behavior_keys(self.behavior()))
            recorded["cost/behavior"] = time.perf_counter() - started
        recorded.update(behavior_keys(values or {}))
        return self.recorder.measure(
            step, due, lambda requests: self._capture(self.diagnostic, requests), self.model, self._lr(), recorded
        )

    def log(self, values: Mapping[str, float], step: int) -> dict[str, float]:
        """Any other series at ``step`` (a validation loss, a gradient norm), journaled and sent to the trackers
        like the measures (keys without a ``/`` are filed under ``behavior/``)."""
        self._supersede(step)
        self._last_step = step if self._last_step is None else max(self._last_step, step)
        return self.recorder.record(step, behavior_keys(values))

    # -- state, for the user's own checkpoints --------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """What the measures carry from one call to the next (the spectral edge's window of updates): save
        it in your checkpoint, so a restarted loop continues exactly (:meth:`load_state_dict`)."""
        return {"measures": {f"{i}:{m.name}": m.state_dict() for i, (m, _) in enumerate(self.measures)}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = state.get("measures", {})
        for i, (measure, _) in enumerate(self.measures):
            if f"{i}:{measure.name}" in saved:
                measure.load_state_dict(saved[f"{i}:{measure.name}"])

    # -- the end -------------------------------------------------------------------------------

    def finish(self, state: str = "completed", reason: str | None = None, tracker_status: str | None = None) -> RunResult:
        """Analyse the journal (events, collapse, verdicts), write the report, finish the tracker runs;
        ``state="failed"`` with a ``reason`` for a loop that stopped early (no analysis then). Returns the run."""
        if self._lock is None:
            return read_run_result(self.run_dir)
        analysis = None
        if state == "completed":
            chance, level_chance = chance_of(self.spec)
            analysis = self.recorder.analyze(chance, level_chance)
        else:
            self.recorder.journal.append_event("failed", step=self._last_step, reason=reason)
        self.recorder.finish(state, reason, analysis, tracker_status, step=self._last_step, n_params=self.n_params)
        self._lock.__exit__(None, None, None)
        self._lock = None
        return read_run_result(self.run_dir)

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if kind is None:
            self.finish()
        elif issubclass(kind, KeyboardInterrupt):
            self.finish("failed", f"interrupted at step {self._last_step}", tracker_status="interrupted")
        else:
            log.error("the monitored loop raised: %s", "".join(traceback.format_exception(kind, error, trace)).strip())
            self.finish("failed", f"{kind.__name__}: {error}")


def behavior_keys(values: Mapping[str, float]) -> dict[str, float]:
    """A user's metric names as journal keys: one without a ``/`` goes under ``behavior/``."""
    return {(key if "/" in key else BEHAVIOR_PREFIX + key): float(value) for key, value in values.items()}


def batch_size(batch: Any) -> int:
    try:
        return batches.batch_size(batch)
    except ValueError as error:
        raise MonitorInputError(str(error)) from None


def feature_labels(features: Mapping[str, Any], n: int) -> dict[str, np.ndarray]:
    """``features={name: labels}`` as integer arrays of one label per diagnostic example (-1: no label)."""
    labels = {}
    for name, given in features.items():
        values = np.asarray(given.detach().cpu() if isinstance(given, torch.Tensor) else given)
        if values.shape != (n,):
            raise MonitorInputError(f"features.{name}: labels of shape {values.shape}; the diagnostic batch has {n} examples, give ({n},)")
        if not np.issubdtype(values.dtype, np.number) or not np.array_equal(values, np.rint(values)):
            raise MonitorInputError(f"features.{name}: labels must be integers (classes, or -1 for no label); given {values.dtype}")
        labels[name] = values.astype(np.int64)
    if not labels:
        raise MonitorInputError("features: empty; give {name: labels}")
    return labels
