"""``EmergenceCallback``: an ``emergence.Monitor`` inside a ``transformers.Trainer``.

    trainer = Trainer(model=model, args=args, train_dataset=train, callbacks=[EmergenceCallback("monitor.yaml")])
    trainer.train()

What happens when, in the Trainer's order of events:

* ``on_train_begin``: nothing yet but a note that a run begins. The Monitor is built at the first event
  after it (``on_step_begin``, or an ``on_log`` of ``eval_on_start``), when every callback's
  ``on_train_begin`` has run, whatever their order: the Trainer's ``MLflowCallback`` has started its
  MLflow run by then. A run from scratch then measures step 0, the untrained model, as ``emergence run``
  does; a run resumed from a Trainer checkpoint gets the measures' state saved with it instead (its step
  is in the journal already) and supersedes the journal from the next step on.
* ``on_step_end``: ``monitor.step(state.global_step)``, the measures due at that step.
* ``on_log``: the Trainer's scalars, under the names its W&B integration gives them (see ``log_keys``).
* ``on_save``: the Monitor's state (``emergence_monitor.pt``) in the Trainer's checkpoint folder, so a
  run resumed from it continues exactly.
* Gradient ranks, curvature and the LLC (with ``loss_fn``) run in ``on_step_end`` with the rest: they
  differentiate ``loss_fn`` on the diagnostic batch themselves, on detached copies of the parameters, so
  they need none of the step's own gradients (which the Trainer has zeroed by then) and see the same
  parameters as every other measure of that step.
* ``on_train_end``: ``monitor.finish()``: events, verdicts, report, tracker summary.

The Trainer has no event for an exception. A ``train()`` that raises leaves the Monitor open; it ends as
``failed`` (with the exception) when the process exits, or when the next ``train()`` of this callback, or a
new callback with the same run, begins. A process that is killed leaves ``running`` in the run directory,
and the OS releases the run's lock: the same spec and run name reattach to it and supersede its journal
from the step they start at.
"""

from __future__ import annotations

import atexit
import inspect
import itertools
import json
import logging
import sys
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from emergence import Monitor, RunResult, registry
from emergence.measures.monitored_loss import LossFn
from emergence.rundir import run_directory
from emergence.spec import DEFAULT_RUN_NAME, raw_spec, resolve_monitor
from emergence.tracking import sanitize_key

log = logging.getLogger(__name__)

Behavior = Callable[[], Mapping[str, float]]

DIAGNOSTIC_SIZE = 64  # examples taken from a data set given as (or defaulting to) the diagnostic
MONITOR_STATE_FILE = "emergence_monitor.pt"  # in each Trainer checkpoint folder: the measures' state
LABEL_KEYS = ("labels", "label", "label_ids")  # a diagnostic batch needs no loss
MLFLOW_BACKEND = "mlflow"
WANDB_BACKEND = "wandb"


class EmergenceCallback(TrainerCallback):
    """Measure, journal, analyse and log a model that a ``transformers.Trainer`` trains.

    ``spec``: a monitor spec file or mapping (``kind: monitor``), as for ``emergence.Monitor``.
    ``diagnostic``: the fixed inputs the measures capture on: a batch (a mapping of tensors, such as a
    tokenizer's output), or a data set (a ``datasets.Dataset``, a list of examples) whose first
    ``diagnostic_size`` examples the Trainer's data collator batches; ``None``: the first
    ``diagnostic_size`` examples of the training set, batched the same way (a callback cannot see the
    Trainer's ``eval_dataset``: pass it here to measure on held-out examples). Labels are dropped (kept
    when there is a ``loss_fn``, which reads them) and the batch is moved to the model's device.
    ``loss_fn(model, batch)``: the loss of the diagnostic batch, for the gradient ranks, the curvature and
    the LLC; ``causal_lm_loss`` is the per-example next-token loss of a causal language model.
    ``features``: ``{name: labels}``, one integer label per diagnostic example, for the probes.
    ``behavior``: called at measurement steps, returns ``{metric: value}`` (``analysis.emergence.metric``
    names the one whose rise is the emergence event). ``run_name``: the run among the runs of this spec
    (default: the Trainer's ``run_name``, else ``default``); the same spec and name reattach.
    ``overrides``: dotted-path assignments applied to the spec. ``positions``: the sequence position of
    each diagnostic example to capture; default: the last real token (by ``attention_mask``), else the
    last position.

    When the Trainer reports to MLflow or W&B (``report_to=["mlflow"]``, ``["wandb"]``), the Monitor logs
    into the Trainer's own run (MLflow: its params under ``emergence.``; W&B: its config under ``emergence``
    and its values under ``emergence/``) instead of opening a second one: see
    ``trainer_run_overrides``; ``join_trainer_run=False`` keeps the spec's tracking as it is. ``monitor`` is
    the running Monitor; ``result`` the finished run (a ``RunResult``).
    """

    def __init__(
        self,
        spec: str | Path | Mapping[str, Any],
        diagnostic: Any = None,
        behavior: Behavior | None = None,
        run_name: str | None = None,
        overrides: Sequence[str] = (),
        positions: torch.Tensor | None = None,
        *,
        diagnostic_size: int = DIAGNOSTIC_SIZE,
        join_trainer_run: bool = True,
        loss_fn: LossFn | None = None,
        features: Mapping[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.diagnostic = diagnostic
        self.behavior = behavior
        self.run_name = run_name
        self.overrides = list(overrides)
        self.positions = positions
        self.diagnostic_size = diagnostic_size
        self.join_trainer_run = join_trainer_run
        self.loss_fn = loss_fn
        self.features = features
        self.monitor: Monitor | None = None
        self.result: RunResult | None = None
        self._training = False  # between on_train_begin and on_train_end
        self._attached_mlflow_run: str | None = None

    # -- the Trainer's events ------------------------------------------------------------------

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._abandon(f"train() began again at step {state.global_step} before the last train() reached its end")
        self.result = None
        self._training = state.is_world_process_zero  # one process measures; the others train

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._ensure_monitor(args, state, kwargs)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        monitor = self._ensure_monitor(args, state, kwargs)
        if monitor is not None:
            monitor.step(state.global_step)

    def on_log(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        monitor = self._ensure_monitor(args, state, kwargs)
        values = log_keys(logs or {})
        if monitor is not None and values:
            monitor.log(values, state.global_step)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if self.monitor is None:
            return
        folder = checkpoint_folder(args, state.global_step)
        if folder.is_dir():
            torch.save(self.monitor.state_dict(), folder / MONITOR_STATE_FILE)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        self._training = False
        monitor, self.monitor = self.monitor, None
        if monitor is not None:
            _open_callbacks.discard(self)
            self.result = monitor.finish()
            log.info("emergence: run %s is %s", monitor.run_dir, self.result.state)

    # -- building the Monitor ------------------------------------------------------------------

    def _ensure_monitor(self, args: TrainingArguments, state: TrainerState, kwargs: Mapping[str, Any]) -> Monitor | None:
        """The Monitor, built at the first event after ``on_train_begin`` (see the module docstring)."""
        if self.monitor is not None or not self._training:
            return self.monitor
        model = kwargs["model"]
        run_name = self.run_name or args.run_name or DEFAULT_RUN_NAME
        joined = trainer_run_overrides(args, self.spec, self.overrides) if self.join_trainer_run else []
        overrides = [*self.overrides, *joined]
        self._release_same_run(run_name, overrides)
        diagnostic = self._diagnostic_batch(model, kwargs.get("train_dataloader"))
        positions = self.positions if self.positions is not None else last_token_positions(diagnostic)
        self.monitor = Monitor(
            self.spec,
            model=model,
            diagnostic=diagnostic,
            behavior=self.behavior,
            optimizer=kwargs.get("optimizer"),
            total_steps=state.max_steps,
            run_name=run_name,
            overrides=overrides,
            positions=positions,
            loss_fn=self.loss_fn,
            features=self.features,
        )
        self._attached_mlflow_run = _attached_run(self.monitor)
        _open_callbacks.add(self)
        _finish_open_monitors_at_exit()
        if state.global_step == 0:
            self.monitor.step(0)  # the untrained model, as `emergence run` measures it
        else:
            # Resumed from the Trainer's checkpoint at this step: the journal has the step already (measured
            # and logged before the checkpoint was saved); the first new step supersedes what came after it.
            self._restore_state(args, state.global_step)
        return self.monitor

    def _diagnostic_batch(self, model: torch.nn.Module, train_dataloader: Any) -> Any:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        diagnostic = self.diagnostic
        keep = (lambda batch: batch) if self.loss_fn is not None else drop_labels  # a loss reads the labels
        if isinstance(diagnostic, Mapping | torch.Tensor | tuple):
            return to_device(keep(diagnostic), device)
        if train_dataloader is None:
            raise ValueError("EmergenceCallback: no diagnostic batch given and no training data loader to take one from")
        examples = diagnostic if diagnostic is not None else train_dataloader.dataset
        batch = collate_first(examples, self.diagnostic_size, train_dataloader.collate_fn, model)
        return to_device(keep(batch), device)

    def _restore_state(self, args: TrainingArguments, step: int) -> None:
        """A run resumed from the Trainer's checkpoint at ``step`` gets the measures' state saved with it."""
        saved = checkpoint_folder(args, step) / MONITOR_STATE_FILE
        if saved.exists() and self.monitor is not None:
            self.monitor.load_state_dict(torch.load(saved, weights_only=False))
            log.info("emergence: measures' state restored from %s", saved)

    def _release_same_run(self, run_name: str, overrides: list[str]) -> None:
        """Another callback of this process still holding this run (its train() raised, in a notebook) lets
        go of it, as failed: a rerun reattaches instead of finding the run directory locked."""
        target = run_directory(resolve_monitor(self.spec, overrides, run_name)).absolute()
        for other in list(_open_callbacks):
            if other is not self and other.monitor is not None and other.monitor.run_dir.absolute() == target:
                other._abandon("a new Trainer callback took over the run before train() reached its end")

    # -- ending without on_train_end -----------------------------------------------------------

    def _abandon(self, reason: str, tracker_status: str | None = None) -> None:
        """Finish an open Monitor as failed (a train() that raised: the Trainer has no event for it)."""
        monitor, self.monitor = self.monitor, None
        _open_callbacks.discard(self)
        if monitor is None:
            return
        log.warning("emergence: run %s ends as failed: %s", monitor.run_dir, reason)
        self.result = monitor.finish("failed", reason, tracker_status=tracker_status)


# -- the Trainer's own tracker runs -----------------------------------------------------------


def trainer_run_overrides(args: TrainingArguments, spec: str | Path | Mapping[str, Any], overrides: Sequence[str]) -> list[str]:
    """Overrides that send the Monitor's MLflow and W&B logging into the Trainer's own runs.

    When ``args.report_to`` holds ``mlflow``, the Trainer's ``MLflowCallback`` has started (or joined) the
    active MLflow run by the time the Monitor is built. The spec's first ``mlflow`` tracking entry (one is
    added when it has none) gets that run's id as ``run_id`` and MLflow's tracking URI: the MLflow tracker
    then logs into that run, puts its params under ``emergence.`` and leaves ending the run to its owner.
    Likewise with ``wandb``, when the Trainer's ``WandbCallback`` has opened ``wandb.run``: the spec's first
    ``wandb`` entry (one is added when it has none) gets that run's id, and the W&B tracker logs into it (its
    config under ``emergence``, its values under ``emergence/``) and leaves ending it to the Trainer.
    The other entries are left as they are.
    """
    report_to = args.report_to or []
    attach: dict[str, dict[str, str]] = {}
    if MLFLOW_BACKEND in report_to:
        import mlflow

        active = mlflow.active_run()
        if active is None:
            log.warning("emergence: the Trainer reports to MLflow but no MLflow run is active; the Monitor opens its own")
        else:
            attach[MLFLOW_BACKEND] = {"run_id": active.info.run_id, "tracking_uri": mlflow.get_tracking_uri()}
    if WANDB_BACKEND in report_to and WANDB_BACKEND not in registry.trackers:
        log.warning("emergence: the Trainer reports to W&B, but the emergence W&B tracker is not installed (pip install emergence-wandb)")
    elif WANDB_BACKEND in report_to:
        import wandb

        if wandb.run is None:
            log.warning("emergence: the Trainer reports to W&B but no W&B run is open; a wandb entry of the spec opens its own")
        else:
            attach[WANDB_BACKEND] = {"run_id": wandb.run.id}
    if not attach:
        return []
    raw, _ = raw_spec(spec, list(overrides))
    tracking = [dict(entry) for entry in raw.get("tracking", [{"backend": MLFLOW_BACKEND}])]  # the spec's default
    for backend, fields in attach.items():
        index = next((i for i, entry in enumerate(tracking) if entry.get("backend") == backend), None)
        if index is None:
            tracking.append({"backend": backend, **fields})
        else:
            tracking[index].update(fields)
    return [f"tracking={json.dumps(tracking)}"]  # JSON is YAML: ids and URIs stay strings


def _attached_run(monitor: Monitor) -> str | None:
    for entry in monitor.spec.tracking:
        if entry.backend == MLFLOW_BACKEND and entry.run_id:
            return entry.run_id
    return None


# -- the Trainer's logs -------------------------------------------------------------------------


def log_keys(logs: Mapping[str, Any]) -> dict[str, float]:
    """The Trainer's logged scalars under the names its W&B integration uses: ``eval_loss`` -> ``eval/loss``,
    ``test_x`` -> ``test/x``, anything else under ``train/`` (``loss`` -> ``train/loss``, ``learning_rate`` ->
    ``train/learning_rate``, ``grad_norm``, ``epoch``, and at the end ``train/train_loss``,
    ``train/train_runtime`` ...). Characters a key may not hold become ``_``; what is not a number is left out."""
    values: dict[str, float] = {}
    for key, value in logs.items():
        number = _scalar(value)
        if number is None:
            continue
        if key.startswith("eval_"):
            name = "eval/" + key.removeprefix("eval_")
        elif key.startswith("test_"):
            name = "test/" + key.removeprefix("test_")
        else:
            name = "train/" + key
        values[sanitize_key(name)] = number
    return values


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


# -- the diagnostic batch ------------------------------------------------------------------------


def collate_first(examples: Any, n: int, collate: Callable[[list[Any]], Any] | None, model: torch.nn.Module) -> Any:
    """The first ``n`` examples of a data set (indexable, or only iterable), keeping only the fields the
    model's ``forward`` takes (as the Trainer does), batched by ``collate`` (the Trainer's data collator)."""
    if hasattr(examples, "__len__") and hasattr(examples, "__getitem__"):
        first = [examples[i] for i in range(min(n, len(examples)))]
    else:
        first = list(itertools.islice(iter(examples), n))
    if not first:
        raise ValueError("EmergenceCallback: the diagnostic data set is empty")
    accepted = set(inspect.signature(model.forward).parameters)
    first = [{k: v for k, v in example.items() if k in accepted} if isinstance(example, Mapping) else example for example in first]
    if collate is None:
        from transformers import default_data_collator

        collate = default_data_collator
    return collate(first)


def drop_labels(batch: Any) -> Any:
    if isinstance(batch, Mapping):
        return {key: value for key, value in batch.items() if key not in LABEL_KEYS}
    return batch


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, tuple):
        return tuple(to_device(value, device) for value in batch)
    return batch


def last_token_positions(batch: Any) -> torch.Tensor | None:
    """Each example's last real token, by its ``attention_mask`` (right or left padding alike); None without
    a mask (the Monitor then takes the last position)."""
    mask = batch.get("attention_mask") if isinstance(batch, Mapping) else None
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2:
        return None
    return (mask.shape[1] - 1 - mask.flip(1).long().argmax(1)).cpu()


def checkpoint_folder(args: TrainingArguments, step: int) -> Path:
    return Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{step}"


# -- a process that ends without on_train_end ---------------------------------------------------------

_open_callbacks: weakref.WeakSet[EmergenceCallback] = weakref.WeakSet()
_exit_hook_registered = False


def _finish_open_monitors_at_exit() -> None:
    """Register, once, the exit hook that ends open Monitors as failed. Registered after MLflow's own (at
    its import), so it runs first: the Trainer's MLflow run is still open when our last values arrive."""
    global _exit_hook_registered
    if not _exit_hook_registered:
        atexit.register(_finish_open_monitors)
        _exit_hook_registered = True


def _finish_open_monitors() -> None:
    error = getattr(sys, "last_value", None)  # set when an uncaught exception ended the program
    if error is not None:
        reason = f"the process ended with {type(error).__name__}: {error} before train() reached its end"
    else:
        reason = "the process ended before train() reached its end"
    interrupted = isinstance(error, KeyboardInterrupt)
    for callback in list(_open_callbacks):
        attached = callback._attached_mlflow_run
        try:
            callback._abandon(reason, tracker_status="interrupted" if interrupted else None)
        except Exception:  # noqa: BLE001 - at exit, one failure must not stop the others
            log.exception("emergence: could not finish the run of %r", callback)
        if attached is not None and error is not None:
            _fail_trainer_mlflow_run(attached, "KILLED" if interrupted else "FAILED")


def _fail_trainer_mlflow_run(run_id: str, status: str) -> None:
    """MLflow's own exit hook would end the Trainer's run as FINISHED; a run whose training raised is not."""
    import mlflow

    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run(status=status)
