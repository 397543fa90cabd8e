"""Algorithmic tasks. Built-ins register on import; plugins through the ``emergence.tasks`` entry point group."""

from emergence.tasks import binary_addition, modular_arithmetic  # noqa: F401  (registers the built-ins)
from emergence.tasks.base import EOS, PAD, Example, Split, Task, TaskData, TaskInputError, Vocab
from emergence.tasks.build import build_task

__all__ = ["EOS", "PAD", "Example", "Split", "Task", "TaskData", "TaskInputError", "Vocab", "build_task"]
