"""The Tracker protocol and the fan-out that keeps training alive when a tracker fails.

A tracker is a *view* of the run journal (record.py). Every call into a tracker goes through
``TrackerFanout``, which catches any exception, warns once, and marks that tracker as behind (listed
under ``trackers_behind`` in ``status.json``). The journal already holds every value, so nothing is
lost; a tracker can catch up later by replaying the journal into a reattached run.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from emergence import registry

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
    its tables (name -> columns, rows) and the report files, all from ``directory``.

    A tracker class takes part in sweeps by offering two class methods, both optional together:
    ``prepare_sweep(options, sweep_key, name, run_keys)`` before any run starts (make the parent run once,
    so parallel runs find it instead of racing to create it) and ``finish_sweep(options, sweep_key, status,
    summary)`` after the last run, ``summary`` a ``SweepSummary`` or None when it could not be made.
    """

    directory: Path
    values: dict[str, float]
    tables: dict[str, tuple[list[str], list[list[Any]]]]
    files: list[Path]


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
