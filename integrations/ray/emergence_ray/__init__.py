"""Ray executor for emergence, found by the core through the ``emergence.executors`` entry point.

``RayExecutor`` is imported on first use, not here: the progress actor's process imports this package
to reach ``emergence_ray.progress``, and an eager import of the executor would make it load torch too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emergence_ray.executor import RayExecutor

__all__ = ["RayExecutor"]


def __getattr__(name: str) -> Any:
    if name == "RayExecutor":
        from emergence_ray.executor import RayExecutor

        return RayExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
