"""The Measure contract: declare what you need, return a flat dict of floats.

Light to import (no torch): the spec validates a measure's ``Options`` and ``emergence ls`` lists measures
through this module and ``builtin.py`` alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import ConfigDict

from emergence import registry
from emergence.measures.onset_rules import DeclaredRules
from emergence.numbers import NoTrueOrFalseForNumbers

if TYPE_CHECKING:
    import numpy as np
    import torch

    from emergence.capture import CaptureRequest
    from emergence.measures.monitored_loss import MonitoredLoss
    from emergence.tasks.base import Split, TaskData

Cost = Literal["cheap", "moderate", "expensive"]
# What a Monitor must be given for a measure that reads the task in a trained run (``Measure.monitor_inputs``).
MonitorInput = Literal["loss_fn", "per_example_loss", "features"]
# How a whole run's series is summarised in one number (``MeasureOptions.summaries``).
SummaryStatistic = Literal["mode"]


class MeasureOptions(NoTrueOrFalseForNumbers):
    """A measure's own spec fields; unknown ones are errors, like everywhere in a spec."""

    model_config = ConfigDict(extra="forbid")

    def onset_rules(self) -> DeclaredRules:
        """Which onset rule judges which of this measure's metric keys (``onset_rules.py``), first match
        first; a key no rule claims gets the change-point rule. Options may carry a user's choice of rule."""
        return ()

    def bookkeeping_keys(self) -> tuple[str, ...]:
        """Patterns (as ``analysis.precursor.signals`` takes them) of this measure's keys that describe its own
        estimate rather than the model (iterations, residuals, standard errors, per-chain traces): analysis
        gives them no verdict unless a spec lists them. Every other key a measure writes is a signal."""
        return ()

    def summaries(self) -> tuple[tuple[str, SummaryStatistic], ...]:
        """(key pattern, statistic) pairs: keys of this measure read as one whole-run number (the spectral
        gap position's most frequent value), beside any verdict (``analysis/summaries.py``)."""
        return ()

    def check_spec(self, spec: Any) -> None:
        """Raise ``ValueError`` saying why this measure cannot run on ``spec`` (the validated ``Spec``: its task,
        model, training), so a spec that could never give its numbers fails at validation (exit status 2), not
        midway through a run. Called without torch; most measures run on anything and accept every spec."""
        del spec


@dataclass(frozen=True)
class MeasureDeclaration:
    """A built-in measure as the registry knows it before its module is imported (``builtin.py``).

    The class at ``implementation`` takes ``name``, ``Options``, ``cost`` and ``default_every`` from here
    (``class RankMe(GeometryMeasure, declared="rankme")``), so each is written once. ``Options``, ``cost`` and
    ``default_every`` have the names they have on a :class:`Measure`: whoever only reads them takes either.
    """

    name: str
    implementation: str  # "module:Class"
    Options: type[MeasureOptions]
    cost: Cost
    default_every: int | None  # None: measured on the spec's schedule
    summary: str  # one line, for `emergence ls measures`


@dataclass
class MeasureSetup:
    """What a measure may know when it is built, before training starts."""

    n_layers: int
    d_model: int
    task: TaskData | None  # None for a monitored model: its data are its user's
    device: torch.device
    seed: int
    # Fresh examples of the run's task and level(s): (train size, test size, seed) -> TaskData with labels.
    make_examples: Callable[[int, int, int], TaskData] | None = None
    # The model as it was at step 0 (same init seed), for baselines such as the untrained-model probes.
    initial_model: Callable[[], torch.nn.Module] | None = None
    total_steps: int | None = None
    # A monitored model (someone else's, under emergence.Monitor): each site the spec names (a module path
    # pattern) -> the (family, layer) pairs it matched; captures are asked for as CaptureRequest(family, layer).
    site_layers: dict[str, list[tuple[str, int]]] | None = None
    # A monitored model's loss on its diagnostic batch (the Monitor's loss_fn), for the measures that
    # differentiate a loss where a trained run uses its task's answer loss.
    loss: MonitoredLoss | None = None
    # A monitored model's feature labels for its diagnostic examples (the Monitor's features=): name -> [n].
    features: dict[str, np.ndarray] | None = None
    # Parameters the model's forward pass never reads (a GPT-NeoX bridge's fused qkv beside the split q, k, v
    # it uses): left out by the measures that flatten parameters. A checkpoint series also freezes them, so the
    # measures that differentiate (which skip frozen parameters) leave them out too.
    unused_parameters: frozenset[str] = frozenset()


@dataclass
class MeasureContext:
    """What a measure sees at a measurement step."""

    step: int
    model: torch.nn.Module
    activations: dict[CaptureRequest, torch.Tensor]
    lr: float
    extras: dict[str, Any] = field(default_factory=dict)
    # Tables a measure wants kept beside its numbers (the LLC's SGLD loss traces): name -> (columns, rows).
    # The run writes each to the journal for this step and hands it to the trackers.
    tables: dict[str, tuple[list[str], list[list[Any]]]] = field(default_factory=dict)


@dataclass
class SavedWeights:
    """What a measure may read once a trained run is over (``Measure.after_run``): the steps whose weights can be
    loaded, in increasing order (the initial weights, step 0, rebuilt from the seed, then every checkpoint), and
    a loader. ``load(step)`` returns one model with that step's weights in evaluation mode; every call reloads
    the same module, so only one step is in memory at a time and a model returned earlier changes with it."""

    steps: list[int]
    load: Callable[[int], torch.nn.Module]
    # Tables a measure wants kept beside its numbers, as in MeasureContext; the run writes them without a step.
    tables: dict[str, tuple[list[str], list[list[Any]]]] = field(default_factory=dict)


def fixed_subset(n: int, n_examples: int, seed: int) -> torch.Tensor:
    """The indices of the first ``n_examples`` of a permutation of ``range(n)`` drawn once from the run seed:
    the same examples at every step, so a change over training is a change of the model and not of the data."""
    import torch  # here, not at the top: this module is imported to validate specs

    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n_examples]


def fixed_train_subset(train: Split, n_examples: int, seed: int) -> Split:
    """``fixed_subset`` of a training split. The LLC's calibration draws the same subset from a checkpoint's spec."""
    return train.subset(fixed_subset(len(train), n_examples, seed))


class Measure(ABC):
    name: ClassVar[str]
    cost: ClassVar[Cost] = "cheap"
    default_every: ClassVar[int | None] = None  # None: measured on the spec's schedule
    Options: ClassVar[type[MeasureOptions]] = MeasureOptions
    # Whether it reads the run's task (``setup.task``: training data, answer positions, feature labels), which
    # a model monitored in someone else's loop does not have: emergence.Monitor refuses such a measure.
    needs_task: ClassVar[bool] = False
    # What a Monitor must be given instead of the task (a loss_fn, one with a loss per example, feature
    # labels); empty for a measure that needs the task and has no other way (the ablation).
    monitor_inputs: ClassVar[tuple[MonitorInput, ...]] = ()

    def __init_subclass__(cls, declared: str | None = None, **kwargs: Any) -> None:
        """``declared="name"``: a built-in, whose name, options, cost and cadence are its declaration's."""
        super().__init_subclass__(**kwargs)
        if declared is None:
            return
        declaration = registry.measures.declared(declared)
        where = f"{cls.__module__}:{cls.__qualname__}"
        if not isinstance(declaration, MeasureDeclaration) or declaration.implementation != where:
            raise TypeError(f"measure {declared!r} is declared as {getattr(declaration, 'implementation', declaration)}, not {where}")
        cls.name = declaration.name
        cls.Options = declaration.Options
        cls.cost = declaration.cost
        cls.default_every = declaration.default_every

    def __init__(self, options: MeasureOptions, setup: MeasureSetup) -> None:
        self.options = options
        self.setup = setup

    def needs(self) -> list[CaptureRequest]:
        """Activations this measure reads; the capture step takes the union over all due measures."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """State carried from one call to the next (tensors, numbers, lists), saved in every checkpoint.

        Most measures are stateless and return ``{}``; one that compares with earlier calls (the spectral
        edge keeps its last W parameter updates) returns what a resumed run needs to continue exactly.
        """
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, when a run resumes from a checkpoint."""
        del state  # stateless by default

    def after_run(self, saved: SavedWeights) -> dict[int, dict[str, float]]:
        """Values that need the whole run, computed once training is over from its saved weights (restricted and
        excluded loss read key frequencies off the final model, then every checkpoint): ``{step: {key: value}}``.

        A trained run records them at those steps, in the journal and the trackers like any measured value,
        before the analysis reads the journal; a failure is logged as ``measure_failed`` and never fails the
        run. A checkpoint series and a Monitor do not call it. Most measures have nothing to add: ``{}``."""
        del saved
        return {}

    @abstractmethod
    def compute(self, context: MeasureContext) -> dict[str, float]:
        """Flat ``{metric_key: value}``; keys use ``[A-Za-z0-9_./-]`` only."""
