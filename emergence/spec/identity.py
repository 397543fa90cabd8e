"""Run identity: a short hash of everything that changes a run's results, and nothing else."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

from emergence.spec.schema import NON_RESULT_FIELDS, MonitorSpec, Spec

# Bump when the canonical form changes on purpose; old run keys then stop matching, visibly.
RUN_KEY_VERSION = 1


def canonical_form(spec: Spec | BaseModel) -> str:
    # A model preset is only a name for the shape it expanded to; the shape is in the form already.
    excluded: dict[str, Any] = {name: True for name in NON_RESULT_FIELDS} | {"model": {"preset"}}
    if getattr(spec, "jacobian", None) is None:
        excluded["jacobian"] = True  # added later: specs without the study keep the run keys they had
    task = getattr(spec, "task", None)
    if task is not None:
        # A difficulty class is only the label a sweep groups by; the same training under another label is the same run.
        task_excluded = {"difficulty"}
        if task.format == "tokens":
            task_excluded |= {"format", "shots", "scoring"}  # likewise for a task not rendered as text
        if not task.shuffle_answers:
            task_excluded.add("shuffle_answers")  # added later: runs on the real answers keep their form
        excluded["task"] = task_excluded
    schedule = getattr(spec, "schedule", None)
    if schedule is not None and schedule.dense_until == 0:
        excluded["schedule"] = {"dense_until", "dense_every"}  # added later: specs without a dense start keep their keys
    analysis = getattr(spec, "analysis", None)
    if analysis is not None and analysis.control is None:
        excluded["analysis"] = {"control"}
    resolved = spec.model_dump(mode="json", exclude=excluded)
    return json.dumps(resolved, sort_keys=True, separators=(",", ":"))


def run_key(spec: Spec) -> str:
    digest = hashlib.sha256(f"emergence-run-key-v{RUN_KEY_VERSION}\n{canonical_form(spec)}".encode()).hexdigest()
    return digest[:12]


def monitor_run_key(spec: MonitorSpec, run_name: str) -> str:
    """A monitored run is its monitor spec plus the name its user gives it: the same name reattaches."""
    form = f"emergence-monitor-v{RUN_KEY_VERSION}\n{run_name}\n{canonical_form(spec)}"
    return hashlib.sha256(form.encode()).hexdigest()[:12]


def sweep_key(run_keys: list[str]) -> str:
    """A short hash of the sweep's run keys: the same grid over the same spec is the same sweep."""
    digest = hashlib.sha256(("emergence-sweep-v1\n" + "\n".join(sorted(run_keys))).encode()).hexdigest()
    return digest[:12]
