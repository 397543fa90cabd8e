"""One run over a checkpoint series: the training loop of ``runner.py`` replaced by a walk over saved checkpoints.

For each checkpoint, in step order: load it (one model in memory at a time), hash its weights, score the
task as text, compute every measure on one capture of the diagnostic set, journal it all at the checkpoint's
training step, save the measures' state, release the model (and, with ``keep_cache: false``, its files).
The journal, analysis, report and trackers are those of a trained run, so every later stage treats the two
alike; the steps are as uneven as the series (Pythia: 1, 2, 4 ... 512, then every 1,000).

Integrity: a checkpoint whose weights hash equal to another step's is flagged (a ``checkpoint`` event, a
warning, ``status.json``, the report) and every step of such a group is excluded from the analysis (a
``step_excluded`` event): a step that is really another step's weights would fake an onset, and which of
them is genuine cannot be told from the weights. ``integrity: strict`` fails the run at the first one.

A walk that stops (killed, a full disk) resumes: each checkpoint's measures' state is saved once it is
journaled, and a rerun continues with the next checkpoint.
"""

from __future__ import annotations

import gc
import logging
import math
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import torch

from emergence import registry
from emergence.capture import CaptureRequest, capture
from emergence.measures import Measure, MeasureSetup
from emergence.measures.behavior import behavior_values, choice_values
from emergence.models.build import resolve_device
from emergence.models.checkpoints import (
    Checkpoint,
    check_available,
    evict_from_cache,
    load_model,
    load_tokenizer,
    series_checkpoints,
    unused_parameters,
    weights_hash,
)
from emergence.record import EXCLUDED_STEP_EVENT
from emergence.recorder import RunRecorder
from emergence.rundir import (
    CHECKPOINT_DIR,
    RunOutcome,
    execute_once,
    write_resolved_spec,
    write_status,
)
from emergence.spec.grid import RunSpec
from emergence.spec.schema import CheckpointSeriesSpec
from emergence.tasks.text import TextTask, build_text_task
from emergence.version import __version__

log = logging.getLogger(__name__)

CHECKPOINT_EVENT = "checkpoint"  # {"step", "revision", "hash", "duplicate_of", "load_seconds"}
STATE_FILE = "series_state.pt"  # in checkpoints/: the measures' state after the last journaled checkpoint
PROBE_INPUTS = 2  # diagnostic examples of the forward pass that finds the parameters a model never reads

SeriesProgress = Callable[[int, int, int, Mapping[str, float]], None]  # (checkpoints done, of how many, step, values)


class DuplicateCheckpoint(RuntimeError):
    """``integrity: strict`` and a checkpoint whose weights are another step's."""


class SeriesRun:
    def __init__(self, run_spec: RunSpec, progress: SeriesProgress | None = None) -> None:
        self.run_spec = run_spec
        self.spec = run_spec.spec
        self.series: CheckpointSeriesSpec = run_spec.spec.model  # type: ignore[assignment]
        self.recorder = RunRecorder(run_spec)
        self.run_dir = self.recorder.run_dir
        self.journal = self.recorder.journal
        self.progress = progress
        self.measures: list[Measure] = []
        self.step: int | None = None

    # -- setup ---------------------------------------------------------------------------------

    def _prepare(self) -> None:
        spec, t = self.spec, self.spec.task
        self.checkpoints = series_checkpoints(self.series)
        check_available(self.checkpoints)
        self.device = resolve_device(self.series.device)
        self.tokenizer = load_tokenizer(self.checkpoints[0])
        self.text: TextTask = build_text_task(
            t.name, t.level, t.params, t.train_size, t.test_size, t.diagnostic_size, spec.seed, self.tokenizer,
            shots=t.shots, choices=t.scoring == "choice",
        )  # fmt: skip
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else (self.tokenizer.eos_token_id or 0)

    def _build_measures(self, model: torch.nn.Module, unused: frozenset[str]) -> None:
        """The measures, once the first checkpoint tells the model's shape; its untrained twin is the first checkpoint."""
        t, data = self.spec.task, self.text.data

        def make_examples(train_size: int, test_size: int, seed: int) -> Any:
            return build_text_task(t.name, t.level, t.params, train_size, test_size, 0, seed, self.tokenizer, shots=t.shots).data

        first = self.checkpoints[0]

        def initial_model() -> torch.nn.Module:
            if self.step == first.step:
                return self.model  # the first checkpoint is the one in memory: no second copy
            return self._load(first)

        setup = MeasureSetup(
            model.cfg.n_layers, model.cfg.d_model, data, self.device, self.spec.seed,
            make_examples=make_examples, initial_model=initial_model, unused_parameters=unused,
        )  # fmt: skip
        self.measures = []
        for measure_spec in self.spec.measures:
            measure_class = registry.measures.get(measure_spec.name)
            options = measure_class.Options.model_validate(measure_spec.options())
            self.measures.append(measure_class(options, setup))

    def _load(self, checkpoint: Checkpoint) -> torch.nn.Module:
        model = load_model(checkpoint, self.device, self.series.dtype)
        if not self.measures and not self.unused:  # the walk's first checkpoint: find what the forward never reads
            self.unused = unused_parameters(model, self.text.data.diagnostic.tokens[:PROBE_INPUTS].to(self.device))
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name not in self.unused)  # the differentiating measures skip frozen ones
        return model

    # -- resuming ------------------------------------------------------------------------------

    def _done(self) -> tuple[dict[int, str], int | None]:
        """Hashes of the checkpoints journaled before (a resumed walk), and the last step whose state was saved."""
        state_file = self.run_dir / CHECKPOINT_DIR / STATE_FILE
        if not state_file.exists():
            if self.journal.path.exists():
                self.journal.path.unlink()  # stopped before its first checkpoint was saved: start clean
            return {}, None
        state = torch.load(state_file, weights_only=False)
        self.journal.truncate_after(state["step"], state.get("journal_records"))  # as runner.Run: the position wins
        self._saved_measures = state["measures"]
        self.unused = frozenset(state["unused"])
        hashes = {int(e["step"]): e["hash"] for e in self.journal.read().events if e.get("event") == CHECKPOINT_EVENT}
        self.journal.append_event("resume", step=state["step"])
        return hashes, state["step"]

    def _save_state(self, step: int) -> None:
        folder = self.run_dir / CHECKPOINT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        state = {
            "step": step, "unused": sorted(self.unused), "measures": [m.state_dict() for m in self.measures],
            "journal_records": self.journal.position(),
        }
        torch.save(state, folder / (STATE_FILE + ".tmp"))
        (folder / (STATE_FILE + ".tmp")).replace(folder / STATE_FILE)  # atomic: a kill leaves the old state whole

    # -- the walk ------------------------------------------------------------------------------

    def _measure(self, checkpoint: Checkpoint, load_seconds: float, hashes: dict[int, str]) -> dict[str, float]:
        step, model = checkpoint.step, self.model
        digest = weights_hash(model)
        same = sorted(s for s, h in hashes.items() if h == digest)
        hashes[step] = digest
        self.journal.append_event(
            CHECKPOINT_EVENT, step=step, revision=checkpoint.revision, hash=digest, duplicate_of=same[0] if same else None,
            load_seconds=round(load_seconds, 3),
        )  # fmt: skip
        if same:
            message = f"checkpoint {checkpoint.where} (step {step}) has the weights of step {same[0]}"
            if self.series.integrity == "strict":
                raise DuplicateCheckpoint(f"{message}; integrity: strict refuses a series with duplicated checkpoints")
            log.warning("%s: both are left out of the analysis", message)
            for excluded in [*same, step]:
                self.journal.append_event(EXCLUDED_STEP_EVENT, step=excluded, reason=f"weights equal to those of steps {[*same, step]}")
        started = time.perf_counter()
        data = self.text.data
        values: dict[str, float] = {"cost/load": load_seconds, "integrity/duplicate": float(bool(same))}
        # A duplicate is scored but not measured: measures that compare with the last call (the spectral edge's
        # window of updates) would take its zero change for a real one for the rest of their window.
        due = [] if same else self.measures
        values.update(behavior_values(model, data.test, "test", self.device))
        if self.text.test_choices is not None:
            values.update(choice_values(model, data.test, self.text.test_choices, "test", self.device, self.pad_id))
        values["cost/behavior"] = time.perf_counter() - started

        def capture_activations(requests: list[CaptureRequest]) -> dict[CaptureRequest, torch.Tensor]:
            return capture(model, data.diagnostic, requests, self.device)[1]

        return self.recorder.measure(step, due, capture_activations, model, math.nan, values)

    def _walk(self, hashes: dict[int, str], after: int | None) -> None:
        todo = [c for c in self.checkpoints if after is None or c.step > after]
        for done, checkpoint in enumerate(todo, start=len(self.checkpoints) - len(todo)):
            started = time.perf_counter()
            self.model = self._load(checkpoint)
            if not self.measures:  # the first checkpoint of this process tells the model's shape
                self._build_measures(self.model, self.unused)
                if after is not None:
                    for measure, state in zip(self.measures, self._saved_measures, strict=True):
                        measure.load_state_dict(state)
            self.step = checkpoint.step
            values = self._measure(checkpoint, time.perf_counter() - started, hashes)
            self._save_state(checkpoint.step)
            self.model = None  # type: ignore[assignment]  # one checkpoint in memory at a time
            gc.collect()
            if not self.series.keep_cache:
                evict_from_cache(checkpoint)
            if self.progress is not None:
                self.progress(done + 1, len(self.checkpoints), checkpoint.step, values)

    # -- the run -------------------------------------------------------------------------------

    def execute(self) -> RunOutcome:
        return execute_once(self.run_spec, self.run_dir, self._execute)

    def _execute(self) -> RunOutcome:
        write_resolved_spec(self.run_dir, self.run_spec)
        self._prepare()
        self.unused: frozenset[str] = frozenset()
        hashes, after = self._done()
        environment = self.recorder.check_environment()
        write_status(
            self.run_dir, "running", run_key=self.run_spec.run_key, resumed=after is not None, series=True, environment=environment
        )
        self.journal.append_event(
            "start", device=str(self.device), version=__version__, checkpoints=len(self.checkpoints), from_step=after,
            environment=environment,
        )
        self.recorder.start_trackers(str(self.device), 0)
        try:
            self._walk(hashes, after)
        except KeyboardInterrupt:
            reason = f"interrupted after step {self.step}; rerun the same spec to resume"
            self.journal.append_event("failed", step=self.step, reason=reason)
            self._finish("failed", reason, tracker_status="interrupted")
            raise
        except Exception as error:  # noqa: BLE001 - a bad checkpoint or a full disk: the run says so
            reason = f"{type(error).__name__}: {error}"
            if not isinstance(error, DuplicateCheckpoint):
                log.exception("series %s failed at step %s", self.run_spec.display_name, self.step)
            self.journal.append_event("failed", step=self.step, reason=reason, traceback=traceback.format_exc())
            return self._finish("failed", reason)
        self._log_integrity()
        analysis = self.recorder.analyze(self.text.data.chance_exact_match, self.text.data.level_chance)
        return self._finish("completed", analysis=analysis)

    def _log_integrity(self) -> None:
        """The integrity table (one row per checkpoint) into the journal and the trackers."""
        events = [e for e in self.journal.read().events if e.get("event") == CHECKPOINT_EVENT]
        columns = ["step", "revision", "hash", "duplicate_of", "load_seconds"]
        rows = [[e["step"], e["revision"], e["hash"], e["duplicate_of"], e["load_seconds"]] for e in events]
        self.journal.append_table("integrity", columns, rows)
        self.recorder.trackers.log_table("integrity", columns, rows)

    def _finish(self, state: str, reason: str | None = None, analysis: dict[str, Any] | None = None, tracker_status: str | None = None) -> RunOutcome:
        journal = self.journal.read()
        duplicates = sorted(journal.excluded_steps())
        details: dict[str, Any] = {"step": self.step, "checkpoints": len(self.checkpoints) if hasattr(self, "checkpoints") else None}
        if duplicates:
            details["excluded_steps"] = duplicates
        return self.recorder.finish(state, reason, analysis, tracker_status, **details)


def is_series(run_spec: RunSpec) -> bool:
    return isinstance(run_spec.spec.model, CheckpointSeriesSpec)
