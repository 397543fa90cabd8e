"""One generic registry for tasks, measures, trackers and executors.

An item comes from one of three places, and is imported no earlier than it must be:

- a built-in registered with the ``@registry.register("name")`` decorator when its module is imported
  (the registry imports its ``builtin_modules`` on the first lookup);
- a built-in *declared* by one of those modules with ``declare(name, "module:attribute", facts)``: its
  module is imported by the first ``get(name)``, while ``info(name)`` answers from ``facts`` without
  importing it (the built-in measures: the spec validates their options and ``emergence ls`` lists them
  without importing torch);
- a third-party plugin, an entry point in the registry's group (``emergence.tasks``, ``emergence.measures``,
  ``emergence.trackers``, ``emergence.executors``), loaded by the first ``get(name)`` or ``info(name)``, so
  importing the core never imports a plugin's heavy dependencies. ``plugin(name)`` gives the entry point
  itself, whose distribution's metadata describes the plugin without loading it.

Built-ins win over a plugin of the same name.
"""

from __future__ import annotations

import difflib
import functools
import importlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint, EntryPoints

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


class _NotLoaded:
    """An item known by reference ("module:attribute") whose module has not been imported yet."""

    def __init__(self, target: str) -> None:
        self.target = target

    def load(self) -> Any:
        module, _, attribute = self.target.partition(":")
        item: Any = importlib.import_module(module)
        for part in attribute.split("."):
            item = getattr(item, part)
        return item


class _Plugin(_NotLoaded):
    def __init__(self, entry: EntryPoint) -> None:
        super().__init__(entry.value)
        self.entry = entry

    def load(self) -> Any:
        return self.entry.load()


@functools.cache
def _installed_entry_points() -> EntryPoints:
    """Every installed entry point, read once per process: each read opens every distribution's metadata.

    importlib.metadata itself is imported here, when a plugin is first looked for (`--help` never does)."""
    from importlib.metadata import entry_points

    return entry_points()


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str, builtin_modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._builtin_modules = builtin_modules
        self._items: dict[str, T | _NotLoaded] = {}
        self._facts: dict[str, object] = {}  # name -> what was declared about it
        self._plugins: dict[str, EntryPoint] = {}
        self._plugins_loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(item: T) -> T:
            if name in self._items and self._items[name] is not item:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = item
            return item

        return decorate

    def declare(self, name: str, target: str, facts: object) -> None:
        """Make ``name`` known without importing it: ``target`` ("module:attribute") is imported by the first
        ``get(name)``; ``facts`` is what :meth:`info` answers until then, and after."""
        if name in self._items and self._facts.get(name) is not facts:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = _NotLoaded(target)
        self._facts[name] = facts

    def _load(self, plugins: bool = True) -> None:
        for module in self._builtin_modules:
            importlib.import_module(module)
        if not plugins or self._plugins_loaded:
            return
        self._plugins_loaded = True
        for entry in _installed_entry_points().select(group=self.entry_point_group):
            if entry.name not in self._items:
                self._items[entry.name] = _Plugin(entry)
                self._plugins[entry.name] = entry

    def _find(self, name: str) -> bool:
        """Whether ``name`` is known; the plugins are looked for only when no built-in has that name."""
        self._load(plugins=False)
        if name not in self._items:
            self._load()
        return name in self._items

    def get(self, name: str) -> T:
        """The item itself, its module imported if it was not yet."""
        if not self._find(name):
            raise UnknownNameError(self.kind, name, self._items)
        item = self._items[name]
        if isinstance(item, _NotLoaded):
            item = item.load()
            self._items[name] = item
        return item  # type: ignore[return-value]

    def info(self, name: str) -> Any:
        """What a declared built-in was declared with (nothing is imported); otherwise the item itself."""
        self._find(name)
        return self._facts[name] if name in self._facts else self.get(name)

    def declared(self, name: str) -> object:
        """The facts ``name`` was declared with; UnknownNameError if it was not declared."""
        self._load(plugins=False)
        if name not in self._facts:
            raise UnknownNameError(f"declared {self.kind}", name, self._facts)
        return self._facts[name]

    def plugin(self, name: str) -> EntryPoint | None:
        """The entry point ``name`` comes from, when a plugin provides it (loaded or not); None for a built-in."""
        self._load()
        if name not in self._items:
            raise UnknownNameError(self.kind, name, self._items)
        return self._plugins.get(name)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._find(name)


tasks: Registry = Registry("task", "emergence.tasks", ("emergence.tasks",))
measures: Registry = Registry("measure", "emergence.measures", ("emergence.measures.builtin",))
trackers: Registry = Registry("tracker", "emergence.trackers", ("emergence.tracking",))
executors: Registry = Registry("executor", "emergence.executors", ("emergence.executors",))
