"""An emergence Tracker that writes one Weights & Biases run per emergence run.

Everything goes through the ``Run`` object that ``wandb.init`` returns, never the module-level
``wandb.log``: a sweep may hold several runs in one process, and the module-level calls only reach the
most recent one.

What the core relies on, and the W&B behaviour behind each choice:

* **One W&B run per run key.** The W&B run id *is* the run key, started with ``resume="allow"``, so a
  rerun or a resumed run continues the same W&B run. ``reinit="create_new"`` because W&B's default
  (``"return_previous"`` outside notebooks) hands back whichever run is still active in the process,
  ignoring our id, which would pour one emergence run into another's W&B run.
* **Our own step axis.** Every history row carries the key ``step`` and every metric is plotted against
  it (``define_metric("*", step_metric="step", step_sync=True)``). W&B's own ``step=`` argument must only
  grow and silently drops anything logged at an earlier step, but a resumed run measures again from its
  last checkpoint, which can be earlier than what W&B already holds. W&B history is an append log, so
  such a replayed step is a second row with the same ``step``, never a lost one.
* **Replay is idempotent.** The core replays the run journal into a tracker that fell behind, from
  ``start`` on. A second ``start`` with the same run key keeps the run already open, and a value, table
  or param this tracker has already sent is not sent again, so a catch-up adds only what W&B missed.
* **No prompt, no network unless asked.** The mode is the spec's, else ``$WANDB_MODE``, else online only
  when credentials exist and offline otherwise (with the ``wandb sync`` command in the log). Online mode
  logs in with ``prompt=False`` first, so a missing key raises here instead of waiting on a terminal that
  nobody watches. Offline and disabled modes are also made W&B's process-wide mode: wandb 0.31's
  telemetry follows the process-wide mode, not the run's, and would contact the W&B server at exit.
* **A run someone else made (``run_id``).** With ``run_id`` set (the Trainer callbacks set it for a Hugging
  Face Trainer's ``report_to=["wandb"]`` or a Lightning ``WandbLogger``), the tracker adopts the W&B run
  open in this process with that id instead of calling ``wandb.init``, and leaves it to its owner: no
  ``run.finish()``, no change to its mode, name, group or step axis. The host has defined ``"*"`` against
  its own step key, so our values go in under ``emergence/`` (the Trainer callback files the Trainer's own
  ``train/loss`` too, which must not land twice on the host's chart) and each of our keys is defined
  against our ``step`` by name, which takes precedence over the host's glob and leaves its charts as they
  were. Our config and params go under the config key ``emergence``; tables and summary keys keep their
  names (the host has none of them).
* **An offline run whose files are deleted says so.** Offline, W&B appends everything to one record file
  (``run-<id>.wandb``). Deleted while the run is open (its folder or the whole ``wandb/`` directory
  removed), W&B goes on writing into the unlinked file without a word, and the whole run is lost. Every
  call checks that the file it started is still there; when it is not, the tracker closes that run and
  raises ``RunFilesLost``, so the core counts it behind and its catch-up starts the run again (same id,
  a new folder) and replays the journal into it: the new folder holds the whole run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import netrc
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import wandb

from emergence.numbers import json_safe
from emergence.tracking import SweepSummary, sanitize_key
from emergence_wandb import reading
from emergence_wandb.reading import ADOPTED_CONFIG_KEY, SWEEP_PARENT_CONFIG
from emergence_wandb.records import STEP_KEY, TABLE_KEY_PREFIX

log = logging.getLogger(__name__)

DEFAULT_PROJECT = "emergence"
INIT_TIMEOUT_SECONDS = 20.0
JOB_TYPE = "train"
SWEEP_JOB_TYPE = "sweep"
SWEEP_RUN_PREFIX = "sweep-"  # the W&B id of a sweep's summary run: sweep-<sweep key>
SWEEP_PARENT_TAG = "emergence.sweep_parent"
ARTIFACT_TYPE = "emergence-run"
# Artifacts logged with ``name=None`` (the resolved spec, for one) share this artifact.
UNNAMED_ARTIFACT = "files"

FINAL_STATUSES = ("completed", "failed", "interrupted")

# In a run someone else made (run_id): our config and params sit under this config key, our history values
# under this prefix (see the module docstring).
ADOPTED_METRIC_PREFIX = "emergence/"

# wandb.init refuses tags longer than this.
MAX_TAG_LENGTH = 64
# W&B's limit for artifact names; the server also wants them to be plain words, dots and dashes.
MAX_ARTIFACT_NAME_LENGTH = 128
_ILLEGAL_ARTIFACT_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")

# A netrc entry for one of these hosts is a W&B cloud login. wandb 0.31 talks to the CoreWeave Forge
# front by default and falls back to the api.wandb.ai entry that `wandb login` has always written.
CLOUD_API_HOSTS = ("api.wandb.ai", "api.forge.coreweave.com")
# Modes in which wandb.init needs credentials (and would prompt for them).
LOGGED_IN_MODES = ("online", "shared")
# Old spellings W&B still accepts in $WANDB_MODE.
_MODE_ALIASES = {"dryrun": "offline", "run": "online"}


class RunFilesLost(RuntimeError):
    """The record file of an offline W&B run was deleted while the run was open: what it held is gone."""


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of ``path``, or None when there is no such file: a file deleted and made again by
    someone else is not the one W&B holds open."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


class ModeChoice(NamedTuple):
    mode: str
    reason: str
    guessed: bool  # True when neither the spec nor $WANDB_MODE said, and credentials decided


def has_credentials(environ: Mapping[str, str] | None = None) -> bool:
    """Whether W&B would find a login without asking: an API key, an identity token, or a netrc entry.

    Reads only the environment and the netrc file; never the network, never a prompt.
    """
    environ = os.environ if environ is None else environ
    if environ.get("WANDB_API_KEY") or environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    base_url = environ.get("WANDB_BASE_URL")
    # A self-hosted server has its own netrc entry; a cloud entry does not log in there.
    hosts = [urlsplit(base_url).hostname] if base_url else list(CLOUD_API_HOSTS)
    netrc_file = os.path.expanduser(environ.get("NETRC") or "~/.netrc")  # where wandb and curl look
    try:
        entries = netrc.netrc(netrc_file)
    except FileNotFoundError:
        return False
    except (netrc.NetrcParseError, OSError) as error:
        log.warning("wandb: cannot read %s (%s); treating it as holding no W&B login", netrc_file, error)
        return False
    for host in hosts:
        entry = entries.authenticators(host) if host else None
        if entry and entry[2]:
            return True
    return False


def resolve_mode(configured: str | None, environ: Mapping[str, str] | None = None) -> ModeChoice:
    """The spec's ``mode``; else ``$WANDB_MODE``; else online with credentials, offline without."""
    environ = os.environ if environ is None else environ
    if configured:
        return ModeChoice(configured, "the spec's tracking entry says so", guessed=False)
    from_env = environ.get("WANDB_MODE")
    if from_env:
        return ModeChoice(_MODE_ALIASES.get(from_env, from_env), "WANDB_MODE says so", guessed=False)
    if has_credentials(environ):
        return ModeChoice("online", "W&B credentials were found", guessed=True)
    return ModeChoice(
        "offline",
        "no W&B credentials were found (no WANDB_API_KEY, no netrc entry for api.wandb.ai)",
        guessed=True,
    )


def run_tags(tags: Mapping[str, Any]) -> list[str]:
    """W&B tags are plain strings, so each entry becomes ``key=value``.

    The key stays in the tag because the values alone (``tiny``, ``1``, ``0.1.0``) say nothing in the
    W&B run table, and ``emergence.task=binary_addition`` can be filtered on. Tags longer than W&B's
    64 characters are cut (wandb.init would refuse the run).
    """
    formatted = []
    for key, value in tags.items():
        tag = f"{key}={value}"
        if len(tag) > MAX_TAG_LENGTH:
            log.debug("wandb: tag %r cut to %d characters", tag, MAX_TAG_LENGTH)
            tag = tag[:MAX_TAG_LENGTH]
        if tag not in formatted:
            formatted.append(tag)
    return formatted


def artifact_name(run_key: str, name: str | None) -> str:
    """``emergence-<run_key>-<name>``, in the characters and length W&B accepts for artifact names."""
    raw = f"emergence-{run_key}-{name or UNNAMED_ARTIFACT}"
    return _ILLEGAL_ARTIFACT_NAME_CHARS.sub("_", raw)[:MAX_ARTIFACT_NAME_LENGTH]


def same_value(sent: Any, value: Any) -> bool:
    """Equal, counting NaN as equal to NaN (a replayed NaN is the same measurement)."""
    if sent == value:
        return True
    try:
        return math.isnan(sent) and math.isnan(value)
    except TypeError:
        return False


def dotted_paths(node: Any, prefix: str = "") -> dict[str, Any]:
    """Every node of a nested config under its dotted path (``model.d_model``, ``measures.0.name``).

    That is how the core spells its flat params, so a param can be matched against the config that
    ``start`` already sent.
    """
    paths: dict[str, Any] = {}
    if isinstance(node, Mapping):
        children: Sequence[tuple[Any, Any]] = list(node.items())
    elif isinstance(node, list | tuple):
        children = list(enumerate(node))
    else:
        return paths
    for key, child in children:
        path = f"{prefix}{key}"
        paths[path] = child
        paths.update(dotted_paths(child, path + "."))
    return paths


class WandbTracker:
    """Logs an emergence run to Weights & Biases.

    ``options`` is the spec's tracking entry: ``project`` (default ``$WANDB_PROJECT``, else
    ``emergence``), ``entity`` (default: W&B's own default entity), ``mode`` (``online``, ``offline``,
    ``disabled``, or unset: see ``resolve_mode``) and ``tags``. MLflow's ``experiment`` and
    ``tracking_uri`` are ignored. ``run_dir`` is the emergence run directory; W&B writes its files under
    ``<run_dir>/wandb/`` (for an offline run, ``offline-run-<time>-<run_key>/run-<run_key>.wandb``).
    """

    def __init__(self, options: Mapping[str, Any], run_dir: Path) -> None:
        # Nothing here may fail or touch the disk: the core builds trackers outside TrackerFanout's
        # protection, so the mode (which reads credentials) is settled in start().
        self.options = dict(options)
        self.run_dir = Path(run_dir)
        self.project: str = self.options.get("project") or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT
        self.entity: str | None = self.options.get("entity")
        self.mode: str | None = None
        self.run_key: str | None = None
        self.run: Any = None  # wandb's Run once started
        self._active = False  # started and not yet finished
        self._config_paths: dict[str, Any] = {}
        self._artifacts: dict[str | None, wandb.Artifact] = {}
        # What this tracker has sent, so that a journal replay skips it: metric -> step -> value, and
        # (table, step, digest of its cells).
        self._sent_values: dict[str, dict[int, Any]] = {}
        self._sent_tables: set[tuple[str, int | None, str]] = set()
        self.adopted = False  # logging into a run someone else made and will end (options["run_id"])
        self._adopted_config: dict[str, Any] = {}
        self._defined: set[str] = set()  # keys defined against our step by name (adopted runs)
        # Offline: the run's record file, and its identity once seen (see RunFilesLost).
        self._run_file: Path | None = None
        self._run_file_identity: tuple[int, int] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(
        self, run_key: str, name: str, group: str, tags: Mapping[str, str], config: Mapping[str, Any], job_type: str = JOB_TYPE
    ) -> None:
        if self._active and run_key == self.run_key:
            log.debug("wandb: run %s is already open; a replay goes on in it", run_key)
            return
        if self._active:
            raise RuntimeError(
                f"WandbTracker is still logging run {self.run_key}; finish it before {run_key}"
            )
        if self.options.get("run_id"):
            self._adopt(str(self.options["run_id"]), run_key, tags, config)
            return
        choice = resolve_mode(self.options.get("mode"))
        if choice.mode in LOGGED_IN_MODES:
            # prompt=False: without a key wandb.init would ask on the terminal and the run would wait.
            if not wandb.login(prompt=False, verify=False):
                raise RuntimeError(
                    f"W&B mode is {choice.mode} ({choice.reason}) but no W&B credentials were found: set "
                    "WANDB_API_KEY or run `wandb login`, or set `mode: offline` in the spec's tracking "
                    "entry and upload later with `wandb sync`"
                )
        else:
            wandb.setup(settings=wandb.Settings(mode=choice.mode))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            id=run_key,
            resume="allow",
            reinit="create_new",
            project=self.project,
            entity=self.entity,
            group=group or None,
            name=name,
            tags=run_tags({**(self.options.get("tags") or {}), **tags}),
            job_type=job_type,
            config=dict(config),
            dir=str(self.run_dir.absolute()),  # absolute, so the `wandb sync` path works from anywhere
            mode=choice.mode,  # type: ignore[arg-type]  # wandb.init checks the value itself
            # 90 s by default: a server that is away would stall training that long at every catch-up
            # attempt (the core retries every 30 s); the journal keeps every value meanwhile.
            settings=wandb.Settings(init_timeout=INIT_TIMEOUT_SECONDS),
        )
        self.mode = choice.mode
        self.run_key = run_key
        self._active = True
        self._run_file = Path(self.run.settings.sync_file) if choice.mode == "offline" else None
        self._run_file_identity = file_identity(self._run_file) if self._run_file is not None else None
        self._config_paths = dotted_paths(config)
        self._artifacts = {}
        self._sent_values = {}
        self._sent_tables = set()
        self.adopted = False
        self.run.define_metric(STEP_KEY)
        self.run.define_metric("*", step_metric=STEP_KEY, step_sync=True)
        if choice.mode == "offline":
            sync_dir = self.run.settings.sync_dir
            log.log(
                logging.WARNING if choice.guessed else logging.INFO,
                "W&B is offline because %s: run %s is written to %s; upload it with `wandb sync %s`",
                choice.reason,
                run_key,
                sync_dir,
                sync_dir,
            )

    def _adopt(self, run_id: str, run_key: str, tags: Mapping[str, str], config: Mapping[str, Any]) -> None:
        """Log into the W&B run ``run_id`` that is open in this process (``wandb.run``), made by someone else."""
        run = wandb.run
        if run is None or run.id != run_id:
            found = f"the open W&B run is {run.id}" if run is not None else "no W&B run is open"
            raise RuntimeError(
                f"the tracking entry's run_id is {run_id}, but {found} in this process: a W&B run to log into "
                "must be open here (wandb.init by the Trainer's W&B integration or WandbLogger) before the Monitor starts"
            )
        self.run = run
        self.mode = run.settings.mode
        self.run_key = run_key
        self.adopted = True
        self._run_file = self._run_file_identity = None  # its owner's files
        self._active = True
        self._config_paths = dotted_paths(config)
        self._adopted_config = dict(config)
        self._artifacts = {}
        self._sent_values = {}
        self._sent_tables = set()
        self._defined = set()
        run.config.update({ADOPTED_CONFIG_KEY: self._adopted_config}, allow_val_change=True)
        ours = [tag for tag in run_tags({**(self.options.get("tags") or {}), **tags}) if tag not in (run.tags or ())]
        if ours:
            run.tags = (*(run.tags or ()), *ours)
        log.info("wandb: run %s logs into the W&B run %s, which its owner ends", run_key, run_id)

    def _define(self, keys: Sequence[str]) -> None:
        """In an adopted run: each new key of ours plotted against our step, by name (not ``"*"``, the host's)."""
        if not self.adopted:
            return
        if STEP_KEY not in self._defined:
            self.run.define_metric(STEP_KEY)
            self._defined.add(STEP_KEY)
        for key in keys:
            if key not in self._defined:
                self.run.define_metric(key, step_metric=STEP_KEY, step_sync=True)
                self._defined.add(key)

    def finish(self, status: str) -> None:
        if status not in FINAL_STATUSES:
            raise ValueError(f"unknown run status {status!r}; allowed: {', '.join(FINAL_STATUSES)}")
        run = self._require_run()
        try:
            # Artifacts are collected until now so that each name is one artifact version holding every
            # file logged under it (the report and its plots), not one version per file.
            for artifact in self._artifacts.values():
                run.log_artifact(artifact)
        finally:
            self._artifacts = {}
            self._active = False
            if not self.adopted:  # an adopted run is its owner's to end
                run.finish(exit_code=0 if status == "completed" else 1)

    # -- values ----------------------------------------------------------------------------------

    def log_params(self, flat: Mapping[str, Any]) -> None:
        """Adds to the run's config the params it does not already hold.

        Most params are the config that ``start`` sent, flattened. W&B shows a nested config under the
        same dotted names, so sending them again would list ``model.d_model`` twice; only params that are
        new or changed (``run.device``, ``run.n_params``) go in, as flat keys.
        """
        run = self._require_run()
        new = {
            str(key): value
            for key, value in flat.items()
            if str(key) not in self._config_paths or self._config_paths[str(key)] != value
        }
        if new:
            if self.adopted:  # the whole ``emergence`` value goes again: a config update replaces a key's value
                self._adopted_config.update(new)
                run.config.update({ADOPTED_CONFIG_KEY: self._adopted_config}, allow_val_change=True)
            else:
                run.config.update(new, allow_val_change=True)
            self._config_paths.update(new)

    def log_metrics(self, values: Mapping[str, float], step: int) -> None:
        """Logs one history row: the values this tracker has not yet sent at ``step``, and the step.

        A value sent again at a step with a different value (a run recomputing a step) is logged again.
        """
        run = self._require_run()
        step = int(step)
        fresh = {
            key: value
            for key, value in values.items()
            if not (
                step in self._sent_values.get(key, {}) and same_value(self._sent_values[key][step], value)
            )
        }
        if not fresh:
            return
        # The step goes in as our own key, never as log(step=...): see the module docstring.
        row = {ADOPTED_METRIC_PREFIX + key: value for key, value in fresh.items()} if self.adopted else dict(fresh)
        self._define(list(row))
        run.log({**row, STEP_KEY: step})
        for key, value in fresh.items():
            self._sent_values.setdefault(key, {})[step] = value

    def set_summary(self, summary: Mapping[str, Any]) -> None:
        run = self._require_run()
        run.summary.update({str(key): value for key, value in summary.items() if value is not None})

    # -- tables and files ------------------------------------------------------------------------

    def log_table(
        self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], step: int | None = None
    ) -> None:
        """Logs ``tables/<name>``; with a step, tables logged at several steps form a history.

        allow_mixed_types: a measure's column can hold numbers in one row and text or nulls in the next,
        and W&B's type check would otherwise raise on the first such row.
        """
        run = self._require_run()
        header = [str(column) for column in columns]
        # wandb.Table writes NaN and infinities as bare NaN / Infinity, which JSON.parse in the browser
        # (and strict readers) refuse: json_safe makes them null, as pandas writes them.
        cells = [[json_safe(cell) for cell in row] for row in rows]
        step = None if step is None else int(step)
        digest = hashlib.sha256(json.dumps([header, cells], allow_nan=False).encode()).hexdigest()
        if (name, step, digest) in self._sent_tables:
            return
        table = wandb.Table(columns=header, data=cells, allow_mixed_types=True)
        row: dict[str, Any] = {TABLE_KEY_PREFIX + sanitize_key(name): table}
        if step is not None:
            row[STEP_KEY] = step
        self._define([key for key in row if key != STEP_KEY])
        run.log(row)
        self._sent_tables.add((name, step, digest))

    def log_artifact(self, path: Path, name: str | None = None) -> None:
        """Adds a file, or a directory tree, to the artifact ``emergence-<run_key>-<name>``.

        The artifact is logged by ``finish``. Paths inside it match the MLflow tracker's layout under
        ``name``: a file keeps its name; a directory's files sit at the top of a named artifact, or
        under the directory's own name in the unnamed one. Files are copied into W&B's staging area
        now, so later changes to the run directory do not change what was logged.
        """
        run_key = self._require_run_key()
        local = Path(path)
        if not local.exists():
            raise FileNotFoundError(f"no artifact to log at {local}")
        artifact = self._artifacts.get(name)
        if artifact is None:
            artifact = wandb.Artifact(
                artifact_name(run_key, name), type=ARTIFACT_TYPE, metadata={"run_key": run_key}
            )
            self._artifacts[name] = artifact
        if local.is_dir():
            artifact.add_dir(str(local), name=None if name else local.name, merge=True)
        else:
            artifact.add_file(str(local), name=local.name, overwrite=True)

    # -- helpers ---------------------------------------------------------------------------------

    def _require_run(self) -> Any:
        if not self._active:
            raise RuntimeError("WandbTracker.start must be called before logging, and not after finish")
        self._check_run_file()
        return self.run

    def _check_run_file(self) -> None:
        """Offline: raise ``RunFilesLost`` once the run's record file is gone (see the module docstring),
        after closing the run, so that the next ``start`` opens it again in a new folder."""
        if self._run_file is None:
            return
        identity = file_identity(self._run_file)
        if self._run_file_identity is None:  # W&B had not made it yet when the run started
            self._run_file_identity = identity
            return
        if identity == self._run_file_identity:
            return
        lost, run = self._run_file, self.run
        self._active = False
        self._artifacts = {}
        self._run_file = self._run_file_identity = None
        try:
            run.finish(exit_code=1)
        except Exception as error:  # noqa: BLE001 - it is lost either way; the new run is what matters
            log.debug("wandb: closing the run whose file was deleted failed: %s", error)
        raise RunFilesLost(
            f"the W&B run file {lost} was deleted while run {self.run_key} was open (the folder or the wandb/ "
            "directory removed?): what it held is gone; the run starts again in a new folder and the journal "
            "is replayed into it (or later: emergence sync RUN_DIR)"
        )

    def _require_run_key(self) -> str:
        self._require_run()
        assert self.run_key is not None
        return self.run_key

    # -- sweeps: the runs share their W&B group; the sweep summary is a run of its own in that group --------

    @classmethod
    def prepare_sweep(cls, options: Mapping[str, Any], sweep_key: str, name: str, run_keys: Sequence[str]) -> None:
        """Nothing to make ahead: W&B groups a sweep's runs by their ``group`` as they start."""

    @classmethod
    def finish_sweep(cls, options: Mapping[str, Any], sweep_key: str, status: str, summary: SweepSummary | None = None) -> None:
        """One W&B run, id ``sweep-<sweep key>``, job type ``sweep``, in the sweep's group: the summary values
        in its summary, the tables, and the report files as an artifact. Its files are written under the
        sweep directory; running the sweep again resumes and updates it."""
        if summary is None:
            return
        name = summary.directory.parent.parent.name  # <output_dir>/<spec name>/sweeps/<sweep key>
        # The summary is a run of its own, never one that a tracking entry's run_id names.
        tracker = cls({key: value for key, value in options.items() if key != "run_id"}, summary.directory)
        tracker.start(
            f"{SWEEP_RUN_PREFIX}{sweep_key}", f"{name} (sweep {sweep_key})", name,
            {"emergence.sweep": sweep_key, SWEEP_PARENT_TAG: "true"}, {SWEEP_PARENT_CONFIG: True, "sweep_key": sweep_key},
            job_type=SWEEP_JOB_TYPE,
        )
        try:
            tracker.set_summary(summary.values)
            for table, (columns, rows) in summary.tables.items():
                tracker.log_table(table, columns, rows)
            for path in summary.files:
                tracker.log_artifact(path, "sweep")
        finally:
            tracker.finish(status)

    # -- reading runs back (the RunReader capability): `emergence compare`, `emergence run --from-run` -----
    # Read from the runs' record logs on disk (see records.py): no W&B server, so offline runs work too.

    @classmethod
    def claims(cls, source: str) -> bool:
        """Whether ``source`` is a path that is a W&B run folder, a ``run-<id>.wandb`` file, or a folder
        with W&B run folders somewhere below it (an emergence run directory holding ``wandb/``, a folder of
        them ...). A URI (``scheme:...``) or a path that does not exist is not one. Looks at file names
        only: no record log is read."""
        return reading.claims(source)

    @classmethod
    def read_runs(cls, source: str, experiment: str | None = None) -> list[dict[str, Any]]:
        """One record per W&B run found under the path ``source`` (see ``records.find_runs``), with the keys
        of ``emergence.tracking.RUN_RECORD_FIELDS``; a sweep's summary run is left out.

        ``experiment``, when given, is a W&B project: only the runs logged to it are read (None: every run
        under ``source``, whatever its project). Identity and size come from the config (the resolved spec and
        ``run.n_params``), the state from the exit code (``running`` while the newest process has written
        none), the emergence step from the first ``emergence_step/...`` summary key, the verdicts from the
        latest ``verdicts`` and ``feature_verdicts`` tables, the tags from the ``key=value`` tags. A path
        that holds no W&B run (of that project), or a damaged record log, raises ``LookupError``; a path
        that does not exist ``NoSuchPath`` (both a ``LookupError`` and a ``FileNotFoundError``).
        """
        return reading.read_runs(source, experiment)

    @classmethod
    def fetch_resolved_spec(cls, ref: str, store: str | None = None) -> dict[str, Any]:
        """The resolved spec an emergence run sent as its W&B config.

        ``ref`` is a W&B run folder (``.../wandb/offline-run-...`` or ``.../wandb/run-...``), its
        ``.wandb`` file, or the emergence run directory holding ``wandb/``. ``store`` is not used (the
        run folder says where the run is). The config keys that are spec fields come back, with
        ``run_key``, ``grid_point`` and ``sweep_key``; W&B's ``_wandb`` and the params the run added
        (``run.device``, ``run.n_params``) are left out.
        """
        return reading.fetch_resolved_spec(ref)
