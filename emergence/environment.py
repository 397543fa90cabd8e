"""What a run's numbers depend on besides its spec, recorded with every run so that "bit for bit" can be checked.

On CPU, a run is bit for bit the same run only on the same torch version, the same CPU kind and the same
number of torch threads: the thread count changes how reductions are split, hence the rounding (about 1e-7
relative from the second measured step on, growing as training goes). None of these enter the run key (a
spec names a result, not a machine), so they are recorded instead: in the journal's ``start`` event, in
``status.json`` and in the trackers' params, and a run resumed under different ones says so
(docs/reliability.md).
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# What must stay the same for a run, and its resumption, to repeat bit for bit. The Python version is
# recorded too, but only as context: it does not change torch's arithmetic.
BIT_FOR_BIT_KEYS = ("torch_version", "torch_threads", "cpu")


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            name, _, value = line.partition(":")
            if name.strip() in ("model name", "Hardware", "Processor") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def run_environment() -> dict[str, Any]:
    """The torch version, torch's intra-op thread count now, the CPU model and the Python version."""
    import torch  # only a run asks, and a run has torch loaded already

    return {
        "torch_version": str(torch.__version__),
        "torch_threads": int(torch.get_num_threads()),
        "cpu": cpu_model(),
        "python": platform.python_version(),
    }


def environment_changes(before: Mapping[str, Any] | None, now: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``{key: [before, now]}`` for each bit-for-bit key that differs; empty when ``before`` is unknown (a run
    journaled before the environment was recorded)."""
    if not before:
        return {}
    return {key: [before.get(key), now.get(key)] for key in BIT_FOR_BIT_KEYS if before.get(key) != now.get(key)}
