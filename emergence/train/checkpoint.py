"""Save and restore everything a run needs to resume bit for bit: weights, optimizer, scheduler, step."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_PATTERN = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"step_{step:08d}.pt"


def save_checkpoint(directory: Path, step: int, state: dict[str, Any]) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(directory, step)
    tmp = path.with_suffix(".tmp")
    try:
        # Through a Python file, not a path: torch's own writer reports a full disk as "unexpected pos 576 vs
        # 534", while a Python write raises the OSError that says what happened.
        with tmp.open("wb") as handle:
            torch.save({"step": step, **state}, handle)
            handle.flush()
            os.fsync(handle.fileno())  # on disk before it takes the real name
    except BaseException as error:
        # A full disk: the half-written file goes at once, so that the run has room to record why it stopped.
        tmp.unlink(missing_ok=True)
        cause = _os_error_in(error)
        if cause is not None:  # say which file the disk could not take
            raise OSError(cause.errno, f"{cause.strerror} (writing checkpoint {path.name})", str(tmp)) from error
        raise
    os.replace(tmp, path)  # a killed run never leaves a half-written checkpoint under the real name
    return path


def _os_error_in(error: BaseException) -> OSError | None:
    """The OSError behind ``error`` (itself, or one it was raised from or during), if any."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return sorted(found)


def latest_checkpoint(directory: Path) -> tuple[int, Path] | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    return torch.load(path, map_location=device, weights_only=True)
