"""Algorithmic tasks. Built-ins register on import; plugins through the ``emergence.tasks`` entry point group.

Importing this package imports no torch (spec validation and ``emergence ls tasks`` import it);
``build_task``, which makes tensors, is imported from ``data.py`` on first use.
"""

from typing import Any

from emergence.tasks import (  # noqa: F401  (importing a module registers its tasks)
    array_algorithms,
    binary_arithmetic,
    decimal_arithmetic,
    digits,
    graphs,
    logical_deduction,
    modular_arithmetic,
    sequences,
)
from emergence.tasks.base import EOS, NO_LABEL, PAD, Example, Split, Task, TaskData, TaskInputError, Vocab


def __getattr__(name: str) -> Any:
    if name == "build_task":
        from emergence.tasks.data import build_task

        return build_task
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["EOS", "NO_LABEL", "PAD", "Example", "Split", "Task", "TaskData", "TaskInputError", "Vocab", "build_task"]
