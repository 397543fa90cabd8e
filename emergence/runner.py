"""One run: task, model, loop, measures, journal, analysis, trackers, in that order.

The run directory is the durable truth. A rerun of the same resolved spec finds the same directory
(by run key): a completed run is left alone, an interrupted one resumes from its last checkpoint.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import torch

from emergence import registry
from emergence.capture import CaptureRequest, capture
from emergence.measures import Measure, MeasureSetup, SavedWeights
from emergence.measures.behavior import behavior_values
from emergence.measures.builtin import IMPLEMENTATION_MODULES
from emergence.models import build_model, count_parameters, resolve_device
from emergence.recorder import RunRecorder
from emergence.rundir import (
    CHECKPOINT_DIR,
    RunOutcome,
    execute_once,
    write_resolved_spec,
    write_status,
)
from emergence.schedule import MeasurementSchedule
from emergence.spec.controls import control_twin
from emergence.spec.grid import RunSpec
from emergence.spec.schema import CheckpointSeriesSpec, Spec
from emergence.tasks import TaskData, build_task
from emergence.train import (
    StepResult,
    Trainer,
    TrainingDiverged,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from emergence.train.checkpoint import list_checkpoints
from emergence.version import __version__

log = logging.getLogger(__name__)

# The registry imports a built-in measure's module only when a run first builds it, so that validating a spec
# needs no torch. The run engine imports them all up front instead: a worker (a pool's fork server, a Ray
# task) that has imported this module is ready to run, and no run pays for sklearn or devinterp midway.
for _module in IMPLEMENTATION_MODULES:
    importlib.import_module(_module)

TRAIN_EVAL_SIZE = 256

ProgressCallback = Callable[[StepResult, Mapping[str, float]], None]


def measure_setup(spec: Spec, task: TaskData, device: torch.device) -> MeasureSetup:
    """What measures may know of a run: sizes, data, device, seed, and how to get fresh examples of the
    task and the untrained model."""
    t = spec.task
    vocab_size, n_ctx = len(task.vocab), task.seq_len

    def make_examples(train_size: int, test_size: int, seed: int) -> TaskData:
        return build_task(t.name, t.level, t.params, train_size, test_size, 0, seed)

    def initial_model() -> torch.nn.Module:
        # fork_rng: building seeds the global generator, and training's randomness must not depend on
        # whether (or when) a measure asked for the untrained model.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return build_model(spec.model, vocab_size, n_ctx, spec.seed, device)

    return MeasureSetup(
        spec.model.n_layers, spec.model.d_model, task, device, spec.seed,
        make_examples=make_examples, initial_model=initial_model, total_steps=spec.training.steps,
    )


def build_measures(run_spec: RunSpec, setup: MeasureSetup) -> list[tuple[Measure, int | None]]:
    """Each measure with its cadence: the spec's ``every``, else the measure's default, else the schedule."""
    built = []
    for measure_spec in run_spec.spec.measures:
        measure_class = registry.measures.get(measure_spec.name)
        options = measure_class.Options.model_validate(measure_spec.options())
        built.append((measure_class(options, setup), measure_spec.cadence(measure_class.default_every)))
    return built


class Run:
    def __init__(self, run_spec: RunSpec, progress: ProgressCallback | None = None) -> None:
        self.run_spec = run_spec
        self.spec = run_spec.spec
        self.recorder = RunRecorder(run_spec)
        self.run_dir = self.recorder.run_dir
        self.journal = self.recorder.journal
        self.progress = progress
        self._recent_losses: list[float] = []

    # -- setup ---------------------------------------------------------------------------------

    def _prepare(self) -> None:
        spec = self.spec
        torch.manual_seed(spec.seed)
        self.device = resolve_device(spec.training.device)
        t = spec.task
        self.task: TaskData = build_task(
            t.name, t.level, t.params, t.train_size, t.test_size, t.diagnostic_size, spec.seed, train_features=False,
            shuffle_answers=t.shuffle_answers,
        )
        self.model = build_model(spec.model, len(self.task.vocab), self.task.seq_len, spec.seed, self.device)
        self.trainer = Trainer(self.model, self.task.train, spec.training, spec.seed, self.device)
        # Training-set behaviour only shows over- or under-fitting; a fixed slice of it is enough.
        self.train_eval = self.task.train.subset(torch.arange(min(len(self.task.train), TRAIN_EVAL_SIZE)))
        self.setup = measure_setup(spec, self.task, self.device)
        self.measures = build_measures(self.run_spec, self.setup)
        self.schedule = MeasurementSchedule.from_spec(spec.schedule, spec.training.steps)

    def _resume_or_start(self) -> bool:
        """Load the latest checkpoint if there is one; returns whether this run resumed."""
        found = latest_checkpoint(self.run_dir / CHECKPOINT_DIR)
        if found is None:
            if self.journal.path.exists():
                self.journal.path.unlink()  # died before its first checkpoint: start clean
            return False
        step, path = found
        state = load_checkpoint(path, self.device)
        self.trainer.load_state_dict(state)
        for key, measure in self._measures_by_key().items():
            if key in state.get("measures", {}):
                measure.load_state_dict(state["measures"][key])
        # Back to what the journal held when this checkpoint was written (its position; older checkpoints have
        # only their step): values after it, and the end of a run killed during its analysis, are recorded again.
        self.journal.truncate_after(step, state.get("journal_records"))
        self.journal.append_event("resume", step=step, checkpoint=path.name)
        log.info("resuming %s from step %d", self.run_dir, step)
        return True

    # -- the loop ------------------------------------------------------------------------------

    def _measure(self, step: int) -> dict[str, float]:
        spec = self.spec
        values: dict[str, float] = {"train/lr": self.trainer.lr}
        if self._recent_losses:
            values["behavior/train/loss_running"] = sum(self._recent_losses) / len(self._recent_losses)
            self._recent_losses.clear()
        started = time.perf_counter()
        values.update(behavior_values(self.model, self.task.test, "test", self.device, spec.training.autocast))
        values.update(behavior_values(self.model, self.train_eval, "train", self.device, spec.training.autocast))
        values["cost/behavior"] = time.perf_counter() - started
        due = [m for m, every in self.measures if self.schedule.due(step, every)]

        def capture_activations(requests: list[CaptureRequest]) -> dict[CaptureRequest, torch.Tensor]:
            return capture(self.model, self.task.diagnostic, requests, self.device)[1]

        return self.recorder.measure(step, due, capture_activations, self.model, self.trainer.lr, values)

    def _measures_by_key(self) -> dict[str, Measure]:
        """Each measure under its place and name in the spec, so two of the same kind keep their own state."""
        return {f"{i}:{measure.name}": measure for i, (measure, _) in enumerate(self.measures)}

    def _checkpoint(self) -> None:
        measure_states = {key: m.state_dict() for key, m in self._measures_by_key().items()}
        state = {
            **self.trainer.state_dict(),
            "measures": {k: v for k, v in measure_states.items() if v},
            "journal_records": self.journal.position(),
        }
        save_checkpoint(self.run_dir / CHECKPOINT_DIR, self.trainer.step, state)

    def _train(self, resumed: bool) -> None:
        spec = self.spec
        if not resumed:
            self._measure(0)
        for result in self.trainer.steps():
            self._recent_losses.append(result.loss)
            # Measure before checkpointing: a run resumed from this checkpoint keeps this step's values.
            values = self._measure(result.step) if self.schedule.due(result.step) else {}
            if result.step % spec.training.checkpoint_every == 0:
                self._checkpoint()
            if self.progress is not None:
                self.progress(result, values)
        if self.trainer.step % spec.training.checkpoint_every:
            self._checkpoint()

    def _saved_weights(self) -> SavedWeights:
        """The weights a measure may read once training is over (``Measure.after_run``): step 0, rebuilt from the
        seed as the run built it, and every checkpoint, loaded one at a time into one spare model."""
        checkpoints = dict(list_checkpoints(self.run_dir / CHECKPOINT_DIR))
        initial_model = self.setup.initial_model
        assert initial_model is not None  # measure_setup always gives one

        @functools.cache  # built on the first load only: most runs have no measure that loads weights
        def spare() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
            model = initial_model()
            return model, {name: tensor.clone() for name, tensor in model.state_dict().items()}

        def load(step: int) -> torch.nn.Module:
            model, initial = spare()
            if step in checkpoints:
                model.load_state_dict(load_checkpoint(checkpoints[step], self.device)["model"])
            elif step == 0:
                model.load_state_dict(initial)
            else:
                raise KeyError(f"no saved weights at step {step}; saved: {sorted(checkpoints)}")
            return model.eval()

        return SavedWeights(sorted({0, *checkpoints}), load)

    # -- the end -------------------------------------------------------------------------------

    def _finish(
        self, state: str, reason: str | None = None, analysis: dict[str, Any] | None = None, tracker_status: str | None = None
    ) -> RunOutcome:
        details: dict[str, Any] = {"step": getattr(getattr(self, "trainer", None), "step", None)}
        if hasattr(self, "model"):
            details["n_params"] = count_parameters(self.model)
        return self.recorder.finish(state, reason, analysis, tracker_status, **details)

    def execute(self) -> RunOutcome:
        return execute_once(self.run_spec, self.run_dir, self._execute)

    def _execute(self) -> RunOutcome:
        write_resolved_spec(self.run_dir, self.run_spec)
        self._prepare()
        resumed = self._resume_or_start()
        environment = self.recorder.check_environment()
        write_status(self.run_dir, "running", run_key=self.run_spec.run_key, resumed=resumed, environment=environment)
        self.journal.append_event(
            "start",
            environment=environment,
            device=str(self.device),
            autocast=self.spec.training.autocast,
            n_params=count_parameters(self.model),
            version=__version__,
            from_step=self.trainer.step,
        )
        self.recorder.start_trackers(str(self.device), count_parameters(self.model))
        try:
            self._train(resumed)
            self.recorder.after_run([m for m, _ in self.measures], self._saved_weights())
        except TrainingDiverged as error:
            reason = f"diverged: {error}"
            self.journal.append_event("failed", step=error.step, reason=reason)
            return self._finish("failed", reason)
        except KeyboardInterrupt:
            reason = f"interrupted at step {self.trainer.step}; rerun the same spec to resume"
            self.journal.append_event("failed", step=self.trainer.step, reason=reason)
            self._finish("failed", reason, tracker_status="interrupted")
            raise
        except Exception as error:  # noqa: BLE001 - a bug or a full disk: the run says so, the sweep goes on
            reason = f"{type(error).__name__}: {error}"
            log.exception("run %s failed at step %d", self.run_spec.display_name, self.trainer.step)
            try:
                self.journal.append_event("failed", step=self.trainer.step, reason=reason, traceback=traceback.format_exc())
            except OSError as journal_error:  # a full disk may not take even this line; status.json still will
                log.error("could not journal the failure of %s: %s", self.run_dir, journal_error)
            return self._finish("failed", reason)
        analysis = self.recorder.analyze(self.task.chance_exact_match, self.task.level_chance)
        return self._finish("completed", analysis=analysis)


def run_one(run_spec: RunSpec, progress: ProgressCallback | None = None) -> RunOutcome:
    if isinstance(run_spec.spec.model, CheckpointSeriesSpec):
        from emergence.series import SeriesRun  # a walk over saved checkpoints instead of training

        def checkpoint_done(done: int, total: int, step: int, values: Mapping[str, float]) -> None:
            if progress is not None:
                progress(StepResult(step, math.nan, math.nan), values)

        return SeriesRun(run_spec, checkpoint_done).execute()
    if getattr(run_spec.spec, "jacobian", None) is not None:
        from emergence.studies.jacobian_run import run_study  # torch.func and scipy only for the study

        return run_study(run_spec)
    control = control_twin(run_spec)
    if control is not None:
        # The control first, in the same worker: the run's analysis then finds it finished, whatever the
        # executor, and a completed control is read back rather than trained again. Its failure is the
        # control's (the run's verdicts say specific: null), never the run's.
        try:
            Run(control, progress).execute()
        except Exception:  # noqa: BLE001 - a control that cannot even start leaves the run's specificity unknown
            log.exception("the control %s of run %s could not run", control.run_key, run_spec.display_name)
    return Run(run_spec, progress).execute()
