"""The Tracker protocol and the fan-out that keeps training alive when a tracker fails.

A tracker is a *view* of the run journal (record.py). Every call into a tracker goes through
``TrackerFanout``, which catches any exception, warns once, and marks that tracker as behind (listed
under ``trackers_behind`` in ``status.json``). The journal already holds every value, so nothing is
lost; a tracker can catch up later by replaying the journal into a reattached run.
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from emergence import registry
from emergence.record import JournalContents
from emergence.rundir import resolved_config
from emergence.spec.controls import CONTROL_OF_TAG, CONTROL_TAG, control_twin, controlled_run_key
from emergence.spec.grid import RunSpec
from emergence.version import __version__

log = logging.getLogger(__name__)

LEGAL_KEY = re.compile(r"[^A-Za-z0-9_./-]")


def sanitize_key(key: str) -> str:
    """Metric keys must be legal in both MLflow and W&B: ``[A-Za-z0-9_./-]`` only."""
    return LEGAL_KEY.sub("_", key)


@runtime_checkable
class Tracker(Protocol):
    """What the core asks of a tracking backend.

    A tracker is built as ``TrackerClass(options)`` where ``options`` is its entry of the spec's
    ``tracking`` list as a dict (``backend`` included) and ``run_dir`` the run directory.
    """

    def start(self, run_key: str, name: str, group: str, tags: Mapping[str, str], config: Mapping[str, Any]) -> None:
        """Create the tracker run, or reattach to the one already tagged with ``run_key``."""

    def log_params(self, flat: Mapping[str, Any]) -> None: ...

    def log_metrics(self, values: Mapping[str, float], step: int) -> None: ...

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int | None = None) -> None: ...

    def log_artifact(self, path: Path, name: str | None = None) -> None: ...

    def set_summary(self, summary: Mapping[str, Any]) -> None: ...

    def finish(self, status: str) -> None:
        """``status`` is one of ``completed``, ``failed``, ``interrupted``."""


@dataclass(frozen=True)
class SweepSummary:
    """What a sweep's parent tracker run shows once the sweep is over: its summary values (flat keys),
    its tables (name -> columns, rows) and the report files, all from ``directory``."""

    directory: Path
    values: dict[str, float]
    tables: dict[str, tuple[list[str], list[list[Any]]]]
    files: list[Path]


# -- optional capabilities of a tracker class ----------------------------------------------------------
# The core asks a tracker class what it can do (``isinstance(tracker_class, SweepParent)``), never which
# system it is. Each capability is a set of class methods: they act on the tracker's store, not on one run.


@runtime_checkable
class SweepParent(Protocol):
    """Shows a sweep as one parent run with its runs under it."""

    @classmethod
    def prepare_sweep(cls, options: Mapping[str, Any], sweep_key: str, name: str, run_keys: Sequence[str]) -> None:
        """Before any run starts: make the parent run once, so that runs in parallel find it instead of
        racing to create it (``options``: the tracker's entry of the spec's ``tracking`` list)."""

    @classmethod
    def finish_sweep(
        cls, options: Mapping[str, Any], sweep_key: str, status: str, summary: SweepSummary | None = None
    ) -> None:
        """After the last run: the parent shows ``summary`` (None when it could not be made) and ends."""


@runtime_checkable
class ForgetsRuns(Protocol):
    """Deletes its runs of the given run keys, so that ``emergence run --force`` reruns log into fresh runs."""

    @classmethod
    def forget_runs(cls, options: Mapping[str, Any], run_keys: Sequence[str]) -> None: ...


@runtime_checkable
class RunReader(Protocol):
    """Reads emergence runs back out of the tracker's store: ``emergence compare``, ``emergence.load_runs``
    and ``emergence run --from-run`` use it.

    A reference that names the tracker (``<backend>:<rest>``, e.g. ``mlflow:sqlite:///mlflow.db``) goes
    to it with ``<rest>`` (:func:`named_reader`); any other reference that is not a run directory goes to
    the first reader whose :meth:`claims` accepts it (:func:`claiming_reader`).
    """

    @classmethod
    def claims(cls, source: str) -> bool:
        """Whether ``source`` names runs in a store of this tracker (a tracking URI, a run folder ...)."""

    @classmethod
    def read_runs(cls, source: str, experiment: str | None = None) -> list[dict[str, Any]]:
        """One record per emergence run at ``source`` (sweep parents left out), with the keys of
        ``RUN_RECORD_FIELDS``; ``experiment`` narrows a store that holds several (its default otherwise).
        Raises ``LookupError`` when ``source`` holds no such runs."""

    @classmethod
    def fetch_resolved_spec(cls, ref: str, store: str | None = None) -> dict[str, Any]:
        """The resolved spec of one run (as ``spec.resolved.yaml`` holds it); ``store`` locates a
        reference that does not say where it lives (an MLflow run id). Raises ``LookupError``."""


class TrackerOptionError(ValueError):
    """A tracker's option that cannot work, as ``ChecksOptions.check_options`` raises it: ``field`` is the option
    (``tracking_uri``), the message says what was given and what is allowed."""

    def __init__(self, field: str, message: str, given: Any = None, allowed: tuple[str, ...] | None = None) -> None:
        self.field = field
        self.given = given
        self.allowed = allowed
        super().__init__(message)


@runtime_checkable
class ChecksOptions(Protocol):
    """Refuses its entry of a spec's ``tracking`` list before any run directory or tracker run exists, by what the
    options say alone (no store is opened, nothing is created): an unknown tracking URI scheme, say."""

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Raise ``TrackerOptionError`` for an option this tracker cannot use."""


# What a RunReader returns for each run: what `emergence compare` prints. A record may also hold "ref": the
# run as `fetch_resolved_spec` takes it from the same store (an MLflow run id), so a run found by
# `emergence.load_runs` can be run again (`emergence.spec_of`).
RUN_RECORD_FIELDS = (
    "run_key", "spec", "task", "level", "n_layers", "d_model", "n_params", "seed", "state", "emergence_step", "tags", "verdicts",
)
RUN_RECORD_REF = "ref"


def tracker_classes_with(capability: type, tracking: Sequence[Mapping[str, Any]]) -> list[tuple[Any, dict[str, Any]]]:
    """The tracker classes of a spec's ``tracking`` entries that have ``capability``, each with its entry."""
    found = []
    for options in tracking:
        try:
            tracker_class = registry.trackers.get(options["backend"])
        except Exception:  # noqa: BLE001 - the run itself reports a tracker it cannot build
            continue
        if isinstance(tracker_class, capability):
            found.append((tracker_class, dict(options)))
    return found


def run_readers() -> dict[str, Any]:
    """Every registered tracker class that can read runs back, by backend name."""
    readers = {}
    for name in registry.trackers.names():
        try:
            tracker_class = registry.trackers.get(name)
        except Exception:  # noqa: BLE001 - a broken plugin should not hide the others
            continue
        if isinstance(tracker_class, RunReader):
            readers[name] = tracker_class
    return readers


def named_reader(source: str) -> tuple[Any, str] | None:
    """For ``<backend>:<rest>`` naming a registered tracker: its class (which must be a RunReader) and
    ``<rest>``; None when ``source`` names no tracker."""
    backend, sep, rest = source.partition(":")
    if not sep or backend not in registry.trackers:
        return None
    tracker_class = registry.trackers.get(backend)
    if not isinstance(tracker_class, RunReader):
        raise LookupError(f"{source}: tracker {backend!r} cannot read runs back (it has no read_runs / fetch_resolved_spec)")
    return tracker_class, rest


def claiming_reader(source: str) -> Any | None:
    """The first tracker class that can read runs back and claims ``source`` as one of its stores."""
    for tracker_class in run_readers().values():
        if tracker_class.claims(source):
            return tracker_class
    return None


def store_reader(source: str) -> tuple[Any, str]:
    """The tracker class that reads the runs ``source`` names (by name, else by claim) and the location or
    reference to hand it. Raises ``FileNotFoundError`` naming the trackers that can read runs back."""
    named = named_reader(source)
    if named is not None:
        return named
    tracker_class = claiming_reader(source)
    if tracker_class is None:
        readers = ", ".join(sorted(run_readers())) or "none installed"
        raise FileNotFoundError(
            f"{source}: not a run directory, not a folder of runs, and no tracker that reads runs back takes it "
            f"(trackers that can: {readers}; name one as <tracker>:{source})"
        )
    return tracker_class, source


# -- what trackers are told about a run ----------------------------------------------------------------

SWEEP_TAG = "emergence.sweep"  # the sweep key, on every run of a grid; MLflow nests them under one parent


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, path + "."))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for i, item in enumerate(value):
                flat.update(flatten(item, f"{path}.{i}."))
        else:
            flat[path] = value
    return flat


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent, check=True
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass(frozen=True)
class TrackerStart:
    """What every tracker is told when a run starts, or when a journal is replayed into it later."""

    run_key: str
    name: str
    group: str
    tags: dict[str, str]
    config: dict[str, Any]
    params: dict[str, Any]

    @property
    def arguments(self) -> tuple[str, str, str, dict[str, str], dict[str, Any]]:
        return self.run_key, self.name, self.group, self.tags, self.config

    @classmethod
    def of(cls, run_spec: RunSpec, device: str, n_params: int, environment: Mapping[str, Any] | None = None) -> TrackerStart:
        """``environment``: what the run's numbers depend on besides the spec (``emergence.environment``), as
        ``run.<key>`` params beside the device and the parameter count."""
        spec = run_spec.spec
        tags = {"emergence.spec": spec.name}
        task = getattr(spec, "task", None)  # a monitored run (someone else's loop) has none
        if task is not None:
            tags |= {"emergence.task": task.name, "emergence.level": str(task.level)}
        else:
            tags["emergence.kind"] = "monitor"
        tags["emergence.version"] = __version__
        if commit := git_commit():
            tags["emergence.git_commit"] = commit
        if run_spec.sweep_key:
            tags[SWEEP_TAG] = run_spec.sweep_key
        # The null control and the run it controls name each other, so a tracker's search finds the pair.
        if (controlled := controlled_run_key(spec)) is not None:
            tags[CONTROL_OF_TAG] = controlled
        elif (twin := control_twin(run_spec)) is not None:
            tags[CONTROL_TAG] = twin.run_key
        tags.update({k: v for tracking in spec.tracking for k, v in tracking.tags.items()})
        config = resolved_config(run_spec)
        params = flatten({k: v for k, v in config.items() if k not in ("tracking", "execution", "grid")})
        params.update({"run.device": device, "run.n_params": n_params})
        params.update({f"run.{key}": value for key, value in (environment or {}).items()})
        return cls(run_spec.run_key, run_spec.display_name, spec.name, tags, config, params)


def tracker_summary(analysis: dict[str, Any]) -> dict[str, Any]:
    """The run summary trackers show: emergence steps, verdict counts, feature verdicts, top-down rho."""
    verdicts = analysis["verdicts"]
    summary: dict[str, Any] = {}
    for event in analysis["events"]:
        summary[f"emergence_step/{sanitize_key(event['metric'])}"] = event["step"] if event["step"] is not None else -1
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v["verdict"]] = counts.get(v["verdict"], 0) + 1
    summary.update({f"verdicts/{k}": n for k, n in counts.items()})
    summary.update(trust_summary(verdicts))
    for v in analysis["feature_verdicts"]:
        # One event per run in the common case; with per-level events the last one wins in the summary.
        prefix = f"feature_verdict/{sanitize_key(v['feature'])}"
        summary[f"{prefix}/verdict"] = v["verdict"]
        summary[f"{prefix}/lead_steps"] = v["lead_steps"] if v["lead_steps"] is not None else "none"
        if v["ablation_drop"] is not None:
            summary[f"{prefix}/ablation_drop"] = v["ablation_drop"]
    for family in analysis["top_down"]:
        if family["spearman_rho"] is not None:
            summary[f"top_down_rho/{family['family']}"] = family["spearman_rho"]
    for key, whole_run in (analysis.get("summaries") or {}).items():  # e.g. summary/spectral/k_star/mode
        statistic = whole_run["statistic"]
        summary[f"summary/{sanitize_key(key)}/{statistic}"] = whole_run["value"]
        summary[f"summary/{sanitize_key(key)}/{statistic}_share"] = whole_run["share"]
    return summary


def trust_summary(verdicts: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """How far the verdicts can be trusted, beside their counts: how many are robust over the analysis grid
    (and the mean share of settings that agree), how many are specific, nonspecific or undecided against the
    null control, and how many precursors are each. Keys appear only when the analysis decided them."""
    summary: dict[str, float] = {}
    precursors = [v for v in verdicts if v.get("verdict") == "precursor"]
    judged = [v for v in verdicts if v.get("robust") is not None]
    if judged:
        summary["robust/verdicts"] = sum(bool(v["robust"]) for v in judged)
        summary["robust/mean_share"] = sum(float(v["robust_share"]) for v in judged) / len(judged)
        summary["robust/precursors"] = sum(bool(v.get("robust")) for v in precursors)
    if any("specific" in v for v in verdicts):
        for name, value in (("specific", True), ("nonspecific", False), ("undecided", None)):
            summary[f"specific/{name}"] = sum(v.get("specific") is value for v in verdicts)
        summary["specific/precursors"] = sum(v.get("specific") is True for v in precursors)
    return summary


def replay_journal(tracker: Tracker, start: TrackerStart, journal: JournalContents) -> None:
    """Start (or reattach) ``tracker`` and send it every param, value and table in ``journal``: how a
    tracker that fell behind catches up, during the run or later (``emergence sync``)."""
    tracker.start(*start.arguments)
    tracker.log_params(start.params)
    for step, values in journal.values:
        tracker.log_metrics(values, step)
    for table in journal.tables:
        tracker.log_table(table["table"], table["columns"], table["rows"], table.get("step"))


def build_trackers(tracking: Sequence[Mapping[str, Any]], run_dir: Path) -> tuple[list[tuple[str, Tracker]], dict[str, str]]:
    """The trackers that could be built, and why the others could not (a broken tracker never stops a run)."""
    built, broken = [], {}
    for options in tracking:
        backend = options["backend"]
        try:
            tracker_class: Callable[..., Tracker] = registry.trackers.get(backend)
            built.append((backend, tracker_class(dict(options), run_dir=run_dir)))
        except Exception as error:  # noqa: BLE001
            broken[backend] = f"build: {type(error).__name__}: {error}"
            log.warning("tracker %s could not be built (%s); the run goes on with the journal", backend, error)
    return built, broken


class TrackerFanout:
    """Sends every call to every tracker; a failing tracker is disabled, never fatal."""

    def __init__(self, trackers: Sequence[tuple[str, Tracker]], failed: Mapping[str, str] | None = None) -> None:
        self._trackers = list(trackers)
        self.failed: dict[str, str] = dict(failed or {})

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._trackers]

    def behind(self) -> list[tuple[str, Tracker]]:
        """The built trackers that failed and are waiting to catch up (one that could not be built is not here)."""
        return [(name, tracker) for name, tracker in self._trackers if name in self.failed]

    def revive(self, name: str) -> None:
        """Send calls to ``name`` again: it has caught up with the journal."""
        self.failed.pop(name, None)

    def _each(self) -> Iterator[tuple[str, Tracker]]:
        for name, tracker in self._trackers:
            if name not in self.failed:
                yield name, tracker

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        for name, tracker in self._each():
            try:
                getattr(tracker, method)(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - any tracker failure must leave training running
                self.failed[name] = f"{method}: {type(error).__name__}: {error}"
                log.warning(
                    "tracker %s failed in %s (%s); training goes on and the journal keeps every value",
                    name,
                    method,
                    error,
                )

    def start(self, run_key: str, name: str, group: str, tags: Mapping[str, str], config: Mapping[str, Any]) -> None:
        self._call("start", run_key, name, group, tags, config)

    def log_params(self, flat: Mapping[str, Any]) -> None:
        self._call("log_params", flat)

    def log_metrics(self, values: Mapping[str, float], step: int) -> None:
        self._call("log_metrics", values, step)

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int | None = None) -> None:
        self._call("log_table", name, columns, rows, step)

    def log_artifact(self, path: Path, name: str | None = None) -> None:
        self._call("log_artifact", path, name)

    def set_summary(self, summary: Mapping[str, Any]) -> None:
        self._call("set_summary", summary)

    def finish(self, status: str) -> None:
        self._call("finish", status)


class NullTracker:
    """Tracks nothing: for runs that only want the run directory (``tracking: []`` does the same)."""

    def __init__(self, options: Mapping[str, Any], run_dir: Path) -> None:
        self.options = options

    def start(self, run_key: str, name: str, group: str, tags: Mapping[str, str], config: Mapping[str, Any]) -> None:
        pass

    def log_params(self, flat: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, values: Mapping[str, float], step: int) -> None:
        pass

    def log_table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: Path, name: str | None = None) -> None:
        pass

    def set_summary(self, summary: Mapping[str, Any]) -> None:
        pass

    def finish(self, status: str) -> None:
        pass


registry.trackers.register("none")(NullTracker)
