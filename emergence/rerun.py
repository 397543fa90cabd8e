"""Fetch the resolved spec of an earlier run, so ``emergence run --from-run REF`` can run it again.

REF is a run directory (``runs/<spec>/<run_key>``), or a reference that a tracker plugin with the
``RunReader`` capability takes: ``<tracker>:<ref>`` (``mlflow:<run_id>``), or one a reader claims
(``runs:/<run_id>``, a W&B run folder). ``store`` says where a reference that does not say so itself lives
(an MLflow tracking URI). The spec comes back with every default filled in, so it resolves to the same run
key unless an override changes a result.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

from emergence.rundir import RunResult, is_run_directory, read_resolved, spec_fields
from emergence.tracking import store_reader

_PLAIN_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def spec_of_run(ref: str, store: str | None = None) -> dict[str, Any]:
    """The spec (a dict, as a spec file would hold it) that made the run REF."""
    if is_run_directory(Path(ref)):
        return spec_fields(read_resolved(Path(ref)))
    tracker_class, reference = store_reader(ref)
    return spec_fields(tracker_class.fetch_resolved_spec(reference, store))


def spec_of_result(run: RunResult, store: str | None = None) -> dict[str, Any]:
    """The spec that made a run found by ``emergence.load_run`` or ``load_runs``: from its directory, else
    from the store it was read from."""
    if run.directory is not None:
        return spec_of_run(str(run.directory))
    if run.ref is None or run.source is None:
        raise LookupError(f"run {run.run_key}: its tracker gave no reference to fetch its spec by")
    tracker_class, location = store_reader(run.source)
    return spec_fields(tracker_class.fetch_resolved_spec(run.ref, store or location))


def write_fetched_spec(spec: dict[str, Any], ref: str) -> Path:
    """The fetched spec as a file (specs are files everywhere else: errors name it, runs record it)."""
    directory = Path(tempfile.mkdtemp(prefix="emergence-from-run-"))
    # The name comes from a tracker, unvalidated: only a plain file name may become one (`../../x` must not).
    name = str(spec.get("name", "run"))
    path = directory / f"{name if _PLAIN_FILE_NAME.fullmatch(name) else 'run'}.yaml"
    header = f"# fetched by `emergence run --from-run {ref}`\n"
    path.write_text(header + yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path
