"""``EmergenceCallback``: an ``emergence.Monitor`` inside a Lightning ``Trainer``.

    trainer = lightning.Trainer(max_steps=600, logger=MLFlowLogger(...), callbacks=[
        EmergenceCallback("monitor.yaml", diagnostic=batch, behavior=module.test_accuracy),
    ])

When training starts the callback builds the Monitor on the LightningModule (so a spec's sites are paths of
``pl_module.named_modules()``: ``net.blocks.*`` for a network held as ``self.net``) and measures step 0;
after every optimizer step it measures what the schedule says is due at ``trainer.global_step``, and files
what the module logged with ``self.log`` into the journal; when training ends it runs the analysis and
writes the verdicts and the report. With an ``MLFlowLogger`` or a ``WandbLogger`` in the Trainer, everything
goes into the logger's own run rather than one of the Monitor's.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import MLFlowLogger, WandbLogger
from lightning.pytorch.utilities import move_data_to_device

from emergence import Monitor, RunResult, registry
from emergence.measures.monitored_loss import LossFn
from emergence.monitor import BEHAVIOR_PREFIX
from emergence.spec import DEFAULT_RUN_NAME, resolve_monitor
from emergence.tracking import sanitize_key

log = logging.getLogger(__name__)

MLFLOW_BACKEND = "mlflow"
WANDB_BACKEND = "wandb"
# What MLflow 3's UI needs to file an experiment under model training rather than GenAI (emergence_mlflow.store
# spells the same names out); an experiment that MLFlowLogger made has no kind yet.
_EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
_CUSTOM_MODEL_DEVELOPMENT = "custom_model_development"

Behavior = Callable[[], Mapping[str, float]] | Callable[["pl.Trainer", "pl.LightningModule"], Mapping[str, float]]


class EmergenceCallback(pl.Callback):
    """Measure, journal, analyse and log the LightningModule a ``Trainer`` fits, with an ``emergence.Monitor``.

    ``spec``: a monitor spec file or mapping (``kind: monitor``). ``diagnostic``: the fixed batch the measures
    capture on, as ``pl_module(diagnostic)`` takes it (a tensor, a tuple of positional inputs or a mapping of
    keyword inputs); it is moved to the module's device. ``behavior``: called at the spec's measurement
    steps, returns ``{metric: value}`` (a key without ``/`` is filed under ``behavior/``); a callable that
    needs no arguments is called as ``behavior()``, one that does as ``behavior(trainer, pl_module)``, and
    either way with the module in eval mode under ``torch.no_grad()``. ``run_name``: the Monitor's run name
    (the same spec and name are the same run directory: a fit resumed from a Lightning checkpoint continues
    it). ``overrides``: dotted-path overrides of the spec. ``positions``: the sequence position to capture,
    per diagnostic example (default: the last). ``loss_fn(model, batch)``: the loss of a batch shaped like
    ``diagnostic``, one number or one per example, for the gradient ranks, the curvature and the LLC (often
    a function of the module's own loss: ``lambda module, batch: module.loss(batch, reduction="none")``).
    ``features``: ``{name: labels}``, one integer label per diagnostic example, for the probes.

    What the module logs with ``self.log`` reaches the journal as ``behavior/<name>``: a training-step
    value at the step of the parameters it was computed on (the step before the optimizer step, as
    Lightning's loggers file it), a validation or epoch value at ``trainer.global_step``.
    """

    def __init__(
        self,
        spec: str | Path | Mapping[str, Any],
        diagnostic: Any,
        behavior: Behavior | None = None,
        run_name: str | None = None,
        overrides: Sequence[str] = (),
        positions: torch.Tensor | None = None,
        *,
        loss_fn: LossFn | None = None,
        features: Mapping[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.loss_fn = loss_fn
        self.features = features
        self.diagnostic = diagnostic
        self.behavior = behavior
        self.run_name = run_name or DEFAULT_RUN_NAME
        self.overrides = list(overrides)
        self.positions = positions
        self.monitor: Monitor | None = None  # while the Trainer trains
        self.run_dir: Path | None = None  # the run directory, once training has started
        self.result: RunResult | None = None  # the run as it ended: state, verdicts, events ...
        self._pending_state: Mapping[str, Any] | None = None  # the Monitor's state from a Lightning checkpoint
        self._measured_step: int | None = None
        self._batch_step = 0
        # The module's logged metrics: as last sent (only what changed is sent again), as last seen, and which of
        # them training_step logs (those follow the Trainer's log_every_n_steps; the others go when they change).
        self._sent: dict[str, float] = {}
        self._seen: dict[str, float] = {}
        self._step_keys: set[str] = set()

    @property
    def state_key(self) -> str:
        # Two callbacks in one Trainer (two specs, or two run names) keep their states apart in a checkpoint.
        spec = self.spec.get("name") if isinstance(self.spec, Mapping) else str(self.spec)
        return self._generate_state_key(spec=spec, run_name=self.run_name)

    # -- building the Monitor ------------------------------------------------------------------

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # on_train_start rather than on_fit_start: the train dataloader (for the number of steps) and the
        # optimizers exist by now, and the model is on its device.
        if not trainer.is_global_zero:
            return  # one Monitor per run: the other processes of a distributed fit train only
        overrides = self.overrides + self._logger_overrides(trainer)
        self.monitor = Monitor(
            self.spec,
            model=pl_module,
            diagnostic=move_data_to_device(self.diagnostic, pl_module.device),
            run_name=self.run_name,
            overrides=overrides,
            behavior=self._behavior(trainer, pl_module),
            positions=None if self.positions is None else self.positions.to(pl_module.device),
            optimizer=trainer.optimizers[0] if trainer.optimizers else None,
            total_steps=total_steps(trainer),
            loss_fn=self.loss_fn,
            features=self.features,
        )
        self.run_dir, self.result = self.monitor.run_dir, None
        if self._pending_state is not None:
            self.monitor.load_state_dict(self._pending_state)
            self._pending_state = None
        self._sent, self._seen, self._step_keys, self._measured_step = {}, {}, set(), None
        self._measure(trainer.global_step)  # step 0 (or the step a resumed fit starts from): before any update

    def _behavior(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Callable[[], Mapping[str, float]] | None:
        behavior = self.behavior
        if behavior is None:
            return None
        wants_trainer = needs_arguments(behavior)

        def evaluate() -> Mapping[str, float]:
            modes = [(module, module.training) for module in pl_module.modules()]  # a frozen part stays in eval
            pl_module.eval()
            try:
                with torch.no_grad():
                    return behavior(trainer, pl_module) if wants_trainer else behavior()  # type: ignore[call-arg]
            finally:
                for module, training in modes:
                    module.training = training

        return evaluate

    def _logger_overrides(self, trainer: pl.Trainer) -> list[str]:
        """With an ``MLFlowLogger`` or a ``WandbLogger``: the spec's tracking entry of that backend (one is added
        if it has none) pointed at the logger's own run, so the Monitor logs there instead of opening a second
        run, and leaves ending it to the logger."""
        attach: dict[str, dict[str, str]] = {}
        mlflow_logger = next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)
        if mlflow_logger is not None and MLFLOW_BACKEND not in registry.trackers:
            log.warning(
                "EmergenceCallback: the Trainer logs to MLflow, but the emergence MLflow tracker is not installed "
                "(pip install emergence-mlflow); the Monitor logs where its spec's tracking says"
            )
        elif mlflow_logger is not None:
            run_id = mlflow_logger.run_id  # makes the logger's experiment and run now, if it has not yet
            client = mlflow_logger.experiment
            experiment = client.get_experiment(mlflow_logger.experiment_id)
            if _EXPERIMENT_KIND_TAG not in experiment.tags:
                client.set_experiment_tag(experiment.experiment_id, _EXPERIMENT_KIND_TAG, _CUSTOM_MODEL_DEVELOPMENT)
            attach[MLFLOW_BACKEND] = {"run_id": run_id, "tracking_uri": client.tracking_uri, "experiment": experiment.name}
        wandb_logger = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        if wandb_logger is not None and WANDB_BACKEND not in registry.trackers:
            log.warning(
                "EmergenceCallback: the Trainer logs to W&B, but the emergence W&B tracker is not installed "
                "(pip install emergence-wandb); the Monitor logs where its spec's tracking says"
            )
        elif wandb_logger is not None:
            attach[WANDB_BACKEND] = {"run_id": wandb_logger.experiment.id}  # opens the logger's run now, if it has not yet
        if not attach:
            return []
        tracking = [entry.model_dump(exclude_defaults=True) for entry in resolve_monitor(self.spec, self.overrides, self.run_name).spec.tracking]
        for backend, fields in attach.items():
            at = next((i for i, entry in enumerate(tracking) if entry["backend"] == backend), None)
            if at is None:
                tracking.append({"backend": backend, **fields})
            else:
                tracking[at] = {**tracking[at], **fields}
        return ["tracking=" + json.dumps(tracking)]  # JSON is YAML: the override parser takes it as it is

    # -- the loop ------------------------------------------------------------------------------

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._batch_step = trainer.global_step  # the step of the parameters this batch's training_step sees

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.monitor is None:
            return
        metrics = self._module_metrics(trainer)
        self._step_keys.update(key for key, value in metrics.items() if self._seen.get(key) != value)
        self._seen = metrics
        stepped = trainer.global_step != self._batch_step  # not a batch that only accumulates gradients
        if stepped and (self._batch_step + 1) % max(trainer.log_every_n_steps, 1) == 0:  # when Lightning logs them
            self._send({key: metrics[key] for key in self._step_keys if key in metrics}, self._batch_step)
        self._measure(trainer.global_step)  # once per optimizer step

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor is not None and not trainer.sanity_checking:
            self._send_other_metrics(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor is not None:
            self._send_other_metrics(trainer)

    def _measure(self, step: int) -> None:
        assert self.monitor is not None
        if step != self._measured_step:
            self._measured_step = step
            self.monitor.step(step)

    def _module_metrics(self, trainer: pl.Trainer) -> dict[str, float]:
        """What the module has logged with ``self.log`` (``trainer.callback_metrics``), under journal keys."""
        return {metric_key(name): value for name, value in scalars(trainer.callback_metrics).items()}

    def _send_other_metrics(self, trainer: pl.Trainer) -> None:
        """Validation and epoch values, at ``trainer.global_step``: those that training_step does not log."""
        metrics = self._module_metrics(trainer)
        self._seen = metrics
        self._send({key: value for key, value in metrics.items() if key not in self._step_keys}, trainer.global_step)

    def _send(self, metrics: Mapping[str, float], step: int) -> None:
        assert self.monitor is not None
        # NaN never equals itself, so a NaN is sent every time: a loss that stays NaN stays visible.
        changed = {key: value for key, value in metrics.items() if self._sent.get(key) != value}
        if changed:
            self._sent.update(changed)
            self.monitor.log(changed, step)

    # -- the end -------------------------------------------------------------------------------

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # on_train_end comes before the Trainer ends its loggers, so the verdicts still reach the logger's run.
        if self.monitor is not None:
            self.result = self.monitor.finish()
            self.monitor = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.monitor is None:
            return
        monitor, self.monitor = self.monitor, None
        if isinstance(exception, KeyboardInterrupt):
            self.result = monitor.finish("failed", f"interrupted at step {trainer.global_step}", tracker_status="interrupted")
        else:
            self.result = monitor.finish("failed", f"{type(exception).__name__}: {exception}")

    # -- Lightning checkpoints carry the Monitor's state (the spectral edge's window of updates) -----

    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor.state_dict()} if self.monitor is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_state = state_dict.get("monitor")  # applied once the Monitor exists, in on_train_start


def total_steps(trainer: pl.Trainer) -> int | None:
    """The fit's last optimizer step: ``max_steps``, else ``max_epochs`` x the optimizer steps of an epoch,
    when the train dataloader has a length; None for a fit with no end that can be known ahead."""
    try:
        estimated = trainer.estimated_stepping_batches
    except Exception as error:  # noqa: BLE001 - an unknown length is not an error, only unscheduled
        log.debug("EmergenceCallback: no estimate of the number of steps (%s)", error)
        return None
    return int(estimated) if math.isfinite(estimated) and estimated > 0 else None


def needs_arguments(behavior: Callable[..., Any]) -> bool:
    """Whether ``behavior`` has required positional parameters (then it is called with the trainer and module)."""
    try:
        parameters = inspect.signature(behavior).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return any(p.kind in positional and p.default is inspect.Parameter.empty for p in parameters)


def metric_key(name: str) -> str:
    """A name the module logged as a journal key: legal in MLflow and W&B (``[A-Za-z0-9_./-]``) and under
    ``behavior/``, apart from the module's own names in a logger run that holds both."""
    key = sanitize_key(name)
    return key if key.startswith(BEHAVIOR_PREFIX) else BEHAVIOR_PREFIX + key


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The one-number entries of ``trainer.callback_metrics`` (tensors of one element, or numbers), as floats."""
    found: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor):
            if value.numel() == 1:
                found[name] = float(value.detach().cpu())
        elif isinstance(value, int | float) and not isinstance(value, bool):
            found[name] = float(value)
    return found
