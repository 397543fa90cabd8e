"""A disk that fills up: the run's directory is on a small tmpfs that the test fills, once just before a journal
append, once just before a checkpoint. Each time the run stops as ``failed`` with the reason, its last good
checkpoint and every journal line before the fault intact; a rerun with room again completes it, and it is
the reference run.

Needs root (to mount the tmpfs); skipped with the reason where mounting is not allowed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.faults.harness import (
    RUN_TIMEOUT_S,
    assert_matches_reference,
    count_lost_and_duplicated,
    data_lines,
    fault_spec,
    last_value_step,
    record_fault,
    records,
    run_dir_of,
    run_to_end,
    start_run,
    status_of,
    wait_for,
    write_spec,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DISK_SIZE = "16m"
PAGE = 4096  # tmpfs hands out whole pages: a file's last page has room the disk's free count does not show
JOURNAL_ROOM = 64 * 1024  # what the second run may still write: its journal lines, not its 250 KB checkpoint


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()})")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def fill(disk: Path, leave: int) -> Path:
    """A filler file that leaves ``leave`` bytes free (0: none at all)."""
    filler = disk / "filler"
    with filler.open("ab") as handle:
        size = handle.seek(0, os.SEEK_END) + free_bytes(disk) - leave
        os.posix_fallocate(handle.fileno(), 0, max(size, 0))
    assert free_bytes(disk) <= leave
    return filler


def end_on_a_page(journal: Path) -> None:
    """Pad the journal with an event line so that it ends exactly on a page boundary: its next line then needs
    a page of its own, which a full disk does not have. Without this the line may fit in the last page's slack
    and the fault would land on a later write."""
    size = journal.stat().st_size
    line = '{"event":"test_padding","pad":""}\n'
    room = (-size) % PAGE
    if room < len(line):
        room += PAGE
    with journal.open("a", encoding="utf-8") as handle:
        handle.write(line.replace('""', '"' + "x" * (room - len(line)) + '"'))
    assert journal.stat().st_size % PAGE == 0


def assert_failed_for_want_of_space(run_dir: Path, checkpoint_step: int, reference_dir: Path) -> None:
    status = status_of(run_dir)
    assert status["state"] == "failed", status
    assert "No space left on device" in status["reason"], status["reason"]
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints[-1] == f"step_{checkpoint_step:08d}.pt", checkpoints
    assert not [name for name in checkpoints if name.endswith(".tmp")], "a half-written checkpoint was left"
    weights = torch.load(run_dir / "checkpoints" / checkpoints[-1], weights_only=True)["model"]
    reference = torch.load(reference_dir / "checkpoints" / checkpoints[-1], weights_only=True)["model"]
    assert all(torch.equal(weights[k], reference[k]) for k in weights)
    # Every whole line is the reference's, in order (records() fails on a line that is not whole JSON).
    got = data_lines(run_dir)
    assert got == data_lines(reference_dir)[: len(got)]
    assert last_value_step(run_dir) >= checkpoint_step


def test_disk_full_on_a_journal_append_then_on_a_checkpoint_then_a_rerun_completes(small_disk, tmp_path, reference):
    spec_path = write_spec(tmp_path / "spec.yaml", fault_spec(small_disk / "runs"))
    run_dir = run_dir_of(spec_path)
    log = tmp_path / "runs.log"

    # 1. The disk fills while the run trains after checkpoint 10: the next journal append finds no room.
    process = start_run(spec_path, log)
    try:
        wait_for((run_dir / "checkpoints" / "step_00000010.pt").exists, process, "checkpoint 10")
        os.kill(process.pid, signal.SIGSTOP)
        end_on_a_page(run_dir / "journal.jsonl")
        filler = fill(small_disk, 0)
        journaled = last_value_step(run_dir)
        os.kill(process.pid, signal.SIGCONT)
        assert process.wait(timeout=RUN_TIMEOUT_S) != 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
    assert_failed_for_want_of_space(run_dir, 10, reference.run_dir)
    assert last_value_step(run_dir) == journaled, "a journal line was written on a full disk?"
    traceback = status_of(run_dir).get("reason", "")
    assert "checkpoint" not in traceback  # it was the journal that could not be written

    # 2. Room for the journal, not for the next checkpoint: the rerun resumes, journals steps 15 and 20, and
    #    fails writing checkpoint 20; its half-written file is gone, so the failure could be recorded.
    filler.unlink()
    filler = fill(small_disk, JOURNAL_ROOM)
    assert run_to_end(spec_path, log) != 0
    assert_failed_for_want_of_space(run_dir, 10, reference.run_dir)
    assert "writing checkpoint step_00000020.pt" in status_of(run_dir)["reason"]
    assert last_value_step(run_dir) == 20
    assert any(r.get("event") == "failed" and "No space left" in r.get("reason", "") for r in records(run_dir))

    # 3. Room again: the rerun completes, and it is the reference run.
    filler.unlink()
    assert run_to_end(spec_path, log) == 0, log.read_text(errors="replace")[-4000:]
    assert_matches_reference(run_dir, reference.run_dir)
    lost, duplicated = count_lost_and_duplicated(run_dir, reference.run_dir)
    record_fault("disk full (journal append, checkpoint write) + rerun with room", 2, 2, lost, duplicated, None)
