"""Algorithmic tasks. Built-ins register on import; plugins through the ``emergence.tasks`` entry point group."""

from emergence.tasks import (  # noqa: F401  (importing a module registers its tasks)
    array_algorithms,
    binary_arithmetic,
    decimal_arithmetic,
    graphs,
    logical_deduction,
    modular_arithmetic,
    sequences,
)
from emergence.tasks.base import EOS, NO_LABEL, PAD, Example, Split, Task, TaskData, TaskInputError, Vocab
from emergence.tasks.build import build_task

__all__ = ["EOS", "NO_LABEL", "PAD", "Example", "Split", "Task", "TaskData", "TaskInputError", "Vocab", "build_task"]
