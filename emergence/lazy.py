"""Public names imported on first use: what keeps ``import emergence`` and ``emergence.plugins`` light."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(module_name: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``exports`` (public name -> the module that defines it): the first lookup
    of a name imports its module, and the name is then an ordinary attribute of ``module_name``."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[module_name], name, value)
        return value

    return __getattr__
