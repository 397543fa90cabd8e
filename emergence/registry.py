"""One generic registry for tasks, measures, trackers and executors.

Built-ins register with the ``@registry.register("name")`` decorator when their module is imported;
third-party plugins publish an entry point in the registry's group (``emergence.tasks``,
``emergence.measures``, ``emergence.trackers``, ``emergence.executors``) and are loaded lazily the
first time a name is looked up, so importing the core never imports a plugin's heavy dependencies.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that no built-in or plugin provides; the message lists what is allowed."""

    def __init__(self, kind: str, name: str, allowed: Iterable[str]) -> None:
        self.kind, self.name, self.allowed = kind, name, sorted(allowed)
        super().__init__(name)

    def __str__(self) -> str:
        return f"unknown {self.kind} {self.name!r}{did_you_mean(self.name, self.allowed)}; allowed: {', '.join(self.allowed)}"


def did_you_mean(given: str, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(given), list(allowed), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str, builtin_modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._builtin_modules = builtin_modules
        self._items: dict[str, T] = {}
        self._plugins_loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(item: T) -> T:
            if name in self._items and self._items[name] is not item:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = item
            return item

        return decorate

    def _load(self) -> None:
        for module in self._builtin_modules:
            importlib.import_module(module)
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for entry in entry_points(group=self.entry_point_group):
            if entry.name not in self._items:
                self._items[entry.name] = _LazyEntryPoint(entry)  # type: ignore[assignment]

    def get(self, name: str) -> T:
        self._load()
        if name not in self._items:
            raise UnknownNameError(self.kind, name, self._items)
        item = self._items[name]
        if isinstance(item, _LazyEntryPoint):
            item = item.entry.load()
            self._items[name] = item
        return item

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items


class _LazyEntryPoint:
    def __init__(self, entry: object) -> None:
        self.entry = entry


tasks: Registry = Registry("task", "emergence.tasks", ("emergence.tasks",))
measures: Registry = Registry("measure", "emergence.measures", ("emergence.measures",))
trackers: Registry = Registry("tracker", "emergence.trackers", ("emergence.tracking",))
executors: Registry = Registry("executor", "emergence.executors", ("emergence.executors",))
