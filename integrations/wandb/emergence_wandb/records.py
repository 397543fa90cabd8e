"""Reads W&B run folders back from their ``run-<id>.wandb`` record log, without a W&B server.

Every W&B run, offline or online, writes its record log into its run folder
(``wandb/offline-run-<time>-<id>/run-<id>.wandb``, or ``wandb/run-<time>-<id>/...`` for an online run):
the protobuf records (``wandb.proto.wandb_internal_pb2.Record``) that ``wandb sync`` uploads. Reading
them gives what the W&B server holds, or will hold once synced: config, history, summary, tables, tags,
exit code. ``wandb.Api`` cannot do this: it needs a server, and an offline run is on none.

Tables are not in the log itself: a history value ``tables/<name>`` is a reference
(``{"_type": "table-file", "path": "media/table/tables/<name>_<n>_<hash>.table.json", ...}``) to a JSON
file (``{"columns": [...], "data": [[...], ...]}``) in the run folder's ``files/``.

A run resumed in another process leaves one run folder per process, all under the same run id, each
holding only what that process logged; ``read_run`` reads them oldest first and merges them.

Read a run in the process that logged it only after ``wandb.teardown()``: ``run.finish()`` returns
before wandb-core has written the end of the file. A run that is still being written can be read: a
record cut off at the end of the file is left out.
"""

from __future__ import annotations

import json
import logging
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

log = logging.getLogger(__name__)

STEP_KEY = "step"  # our own step axis, in every history row (see tracker.py)
TABLE_KEY_PREFIX = "tables/"
RUN_FILE_GLOB = "run-*.wandb"
WANDB_DIR = "wandb"  # the folder W&B makes inside the emergence run directory

# The record log W&B writes (LevelDB's log format with its own file header): a 7-byte header
# ":W&B", 0xBEE1 little-endian, version 0; then 32 KiB blocks of chunks, each with a 7-byte header
# (CRC-32 of the type byte and payload, payload length, type) and a payload. A record too long for the
# rest of its block is split into first/middle/last chunks; a block tail under 7 bytes is padding.
FILE_HEADER = struct.Struct("<4sHB")
CHUNK_HEADER = struct.Struct("<IHB")
BLOCK_SIZE = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4

# <offline-run|run>-<YYYYmmdd_HHMMSS>-<run id>[-<n>]: W&B adds "-1", "-2" when a run with the same id
# already started in that second.
_FOLDER_NAME = re.compile(r"^(?:offline-)?run-(?P<time>\d{8}_\d{6})-(?P<rest>.+)$")


class CorruptRunFile(ValueError):
    """A ``.wandb`` file that is not a W&B record log, or with a damaged chunk."""


def read_records(path: Path) -> Iterator[pb.Record]:
    """Every record in one ``run-<id>.wandb`` file, in the order they were written."""
    for record, _ in record_ends(path):
        yield record


def record_ends(path: Path) -> Iterator[tuple[pb.Record, int]]:
    """Every record in one ``run-<id>.wandb`` file with the byte offset where it ends."""
    data = Path(path).read_bytes()
    if len(data) < FILE_HEADER.size or FILE_HEADER.unpack_from(data) != (b":W&B", 0xBEE1, 0):
        raise CorruptRunFile(f"{path} is not a W&B record log (wrong file header)")
    offset, pieces = FILE_HEADER.size, []
    while offset + CHUNK_HEADER.size <= len(data):
        left_in_block = BLOCK_SIZE - offset % BLOCK_SIZE
        if left_in_block < CHUNK_HEADER.size:
            offset += left_in_block
            continue
        checksum, length, kind = CHUNK_HEADER.unpack_from(data, offset)
        start = offset + CHUNK_HEADER.size
        if start + length > len(data):
            log.debug("%s: the last record is cut off (a run still being written); left out", path)
            return
        payload = data[start : start + length]
        offset = start + length
        if kind == 0 and length == 0:
            continue  # zero fill at a block's end
        if zlib.crc32(bytes([kind]) + payload) != checksum:
            raise CorruptRunFile(f"{path}: corrupt chunk at byte {start - CHUNK_HEADER.size}")
        if kind in (FULL, FIRST):
            pieces = [payload]
        else:
            pieces.append(payload)
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(b"".join(pieces))
            pieces = []
            yield record, offset


def item_path(item: Any) -> tuple[str, ...]:
    """Where a config, summary or history item goes: W&B sends ``nested_key`` or a plain ``key``."""
    return tuple(item.nested_key) or (item.key,)


def _put(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        inner = target.get(part)
        if not isinstance(inner, dict):
            inner = target[part] = {}
        target = inner
    target[path[-1]] = value


def _drop(target: dict[str, Any], path: tuple[str, ...]) -> None:
    for part in path[:-1]:
        inner = target.get(part)
        if not isinstance(inner, dict):
            return
        target = inner
    target.pop(path[-1], None)


@dataclass
class TableEntry:
    """One table logged as ``tables/<name>``: a history row's reference, read from its file."""

    name: str  # without the ``tables/`` prefix
    step: int | None  # our step key in the history row that logged it
    columns: list[str]
    rows: list[list[Any]]
    row_index: int  # which row of ``RunLog.history`` logged it

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=False)) for row in self.rows]


@dataclass
class RunLog:
    """What the record log of a W&B run says: one run folder, or several merged (``merge``)."""

    folders: list[Path] = field(default_factory=list)  # oldest first
    run: pb.RunRecord | None = None  # the newest folder's run record
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)  # keys in the order they were first set
    tables: list[TableEntry] = field(default_factory=list)
    metrics: list[pb.MetricRecord] = field(default_factory=list)
    artifacts: list[pb.ArtifactRecord] = field(default_factory=list)
    exit_code: int | None = None  # None: the (newest) process has not finished the run

    @property
    def sync_dir(self) -> Path:
        """The newest run folder (the one ``wandb sync`` is given for a run that was not resumed)."""
        return self.folders[-1]

    @property
    def run_id(self) -> str | None:
        if self.run is not None and self.run.run_id:
            return self.run.run_id
        return run_id_of(self.folders[-1]) if self.folders else None

    @property
    def tags(self) -> list[str]:
        return list(self.run.tags) if self.run is not None else []

    def values_of(self, key: str) -> list[tuple[int, Any]]:
        """(our step key, value) for every history row that holds ``key``, in logging order."""
        return [(row[STEP_KEY], row[key]) for row in self.history if key in row]

    def tables_named(self, name: str) -> list[TableEntry]:
        """Every logging of the table ``name`` (without ``tables/``), in logging order."""
        return [entry for entry in self.tables if entry.name == name]

    def latest_table(self, name: str) -> TableEntry | None:
        found = self.tables_named(name)
        return found[-1] if found else None

    def table(self, key: str, row: dict[str, Any]) -> dict[str, Any]:
        """The table (``columns`` and ``data``) that the history ``row`` holds under ``key``."""
        name = key.removeprefix(TABLE_KEY_PREFIX)
        for entry in self.tables:
            if entry.name == name and self.history[entry.row_index] is row:
                return {"columns": entry.columns, "data": entry.rows}
        raise KeyError(f"no table {key!r} in that history row")

    def artifact(self, name: str) -> pb.ArtifactRecord:
        found = [artifact for artifact in self.artifacts if artifact.name == name]
        if len(found) != 1:
            raise KeyError(f"{len(found)} artifacts named {name!r}")
        return found[0]


def run_id_of(folder: Path) -> str | None:
    """The run id from the name of the ``run-<id>.wandb`` file in a run folder."""
    files = sorted(Path(folder).glob(RUN_FILE_GLOB))
    return files[0].name[len("run-") : -len(".wandb")] if files else None


def run_file_of(folder: Path) -> Path:
    """The ``run-<id>.wandb`` file of a run folder (or the file itself)."""
    path = Path(folder)
    if path.is_file():
        return path
    files = sorted(path.glob(RUN_FILE_GLOB))
    if len(files) != 1:
        raise FileNotFoundError(f"{path}: {len(files)} W&B run files ({RUN_FILE_GLOB}); a W&B run folder holds one")
    return files[0]


def _apply_config(target: dict[str, Any], record: pb.ConfigRecord) -> None:
    for item in record.update:
        _put(target, item_path(item), json.loads(item.value_json))
    for item in record.remove:
        _drop(target, item_path(item))


def _apply_summary(target: dict[str, Any], record: pb.SummaryRecord) -> None:
    for item in record.update:
        _put(target, item_path(item), json.loads(item.value_json))
    for item in record.remove:
        _drop(target, item_path(item))


def _read_table(folder: Path, key: str, reference: dict[str, Any]) -> tuple[list[str], list[list[Any]]] | None:
    if reference.get("_type") != "table-file" or not reference.get("path"):
        log.warning("%s: history value %s is not a table file (%s); left out", folder, key, reference.get("_type"))
        return None
    path = folder / "files" / reference["path"]
    if not path.exists():
        log.warning("%s: table %s refers to %s, which is missing; left out", folder, key, path)
        return None
    table = json.loads(path.read_text(encoding="utf-8"))
    return [str(column) for column in table.get("columns", [])], table.get("data", [])


def read_run_folder(folder: Path) -> RunLog:
    """One run folder (or its ``run-<id>.wandb`` file): what that one process logged."""
    wandb_file = run_file_of(folder)
    folder = wandb_file.parent
    run_log = RunLog(folders=[folder])
    for record in read_records(wandb_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_log.run = record.run
            _apply_config(run_log.config, record.run.config)
            _apply_summary(run_log.summary, record.run.summary)
        elif kind == "config":
            _apply_config(run_log.config, record.config)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _put(row, item_path(item), json.loads(item.value_json))
            run_log.history.append(row)
            for key, value in row.items():
                if key.startswith(TABLE_KEY_PREFIX) and isinstance(value, dict):
                    table = _read_table(folder, key, value)
                    if table is not None:
                        step = row.get(STEP_KEY)
                        run_log.tables.append(
                            TableEntry(
                                name=key.removeprefix(TABLE_KEY_PREFIX),
                                step=None if step is None else int(step),
                                columns=table[0],
                                rows=table[1],
                                row_index=len(run_log.history) - 1,
                            )
                        )
        elif kind == "summary":
            _apply_summary(run_log.summary, record.summary)
        elif kind == "metric":
            run_log.metrics.append(record.metric)
        elif kind == "artifact":
            run_log.artifacts.append(record.artifact)
        elif kind == "exit":
            run_log.exit_code = record.exit.exit_code
    return run_log


def _folder_order(folder: Path) -> tuple[str, int, str]:
    """Oldest first: by the start time in the folder name, then W&B's "-<n>" suffix for runs with the same
    id started in the same second."""
    match = _FOLDER_NAME.match(folder.name)
    if not match:
        return ("", 0, folder.name)
    rest, run_id = match["rest"], run_id_of(folder) or ""
    suffix = rest[len(run_id) + 1 :] if run_id and rest.startswith(run_id + "-") else ""
    return (match["time"], int(suffix) if suffix.isdigit() else 0, folder.name)


def merge(logs: Iterable[RunLog]) -> RunLog:
    """Run logs of one run id, oldest first, as one: config and summary updated in order, history and
    tables one after another, the run record and exit code of the newest."""
    merged = RunLog()
    for part in logs:
        offset = len(merged.history)
        merged.folders += part.folders
        if part.run is not None:
            merged.run = part.run
        merged.config.update(part.config)
        merged.summary.update(part.summary)
        merged.history += part.history
        merged.tables += [
            TableEntry(entry.name, entry.step, entry.columns, entry.rows, entry.row_index + offset)
            for entry in part.tables
        ]
        merged.metrics += part.metrics
        merged.artifacts += part.artifacts
        merged.exit_code = part.exit_code  # the newest process says how the run ended, or that it goes on
    return merged


def run_folders(wandb_dir: Path, run_id: str) -> list[Path]:
    """Every run folder of ``run_id`` in a ``wandb/`` folder, oldest first."""
    folders = [
        path.parent
        for path in Path(wandb_dir).glob(f"*/run-{run_id}.wandb")
        if _FOLDER_NAME.match(path.parent.name) and not path.parent.is_symlink()  # not latest-run
    ]
    return sorted(folders, key=_folder_order)


def read_run(wandb_dir: Path, run_id: str) -> RunLog:
    """The whole run ``run_id``: every run folder of it in ``wandb_dir``, oldest first, merged."""
    folders = run_folders(wandb_dir, run_id)
    if not folders:
        raise FileNotFoundError(f"{wandb_dir}: no W&B run folder of run {run_id}")
    return merge(read_run_folder(folder) for folder in folders)


def find_runs(paths: Iterable[Path]) -> list[tuple[Path, str]]:
    """(``wandb/`` folder, run id) of every W&B run under ``paths``, each once.

    A path can be a run folder, its ``.wandb`` file, a ``wandb/`` folder, an emergence run directory, or
    any folder above them. A run folder stands for its whole run: a resumed run's other folders beside it
    are found too.
    """
    found: dict[tuple[Path, str], None] = {}
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        path = Path(path).resolve()  # a latest-run link stands for the folder it points to
        if path.is_file():
            files = [path] if path.suffix == ".wandb" else []
        else:
            files = sorted(path.rglob(RUN_FILE_GLOB))  # rglob does not walk into the latest-run link
        for wandb_file in files:
            folder = wandb_file.parent
            if not _FOLDER_NAME.match(folder.name):
                continue
            run_id = wandb_file.name[len("run-") : -len(".wandb")]
            found[(folder.parent.resolve(), run_id)] = None
    return list(found)


def runs_under(paths: Iterable[Path]) -> list[RunLog]:
    """Every W&B run under ``paths`` (see ``find_runs``), each read whole."""
    return [read_run(wandb_dir, run_id) for wandb_dir, run_id in find_runs(paths)]
