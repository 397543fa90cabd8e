"""analysis.control in a spec: the twin's identity, and the specs that cannot have one, refused with the
field, the value and what is allowed, with exit status 2 and nothing created."""

from __future__ import annotations

import subprocess
import sys

import pytest

from emergence.spec import resolve
from emergence.spec.controls import control_twin, controlled_run_key
from emergence.spec.identity import canonical_form
from emergence.spec.load import SpecError, validate, validate_monitor


def test_the_twin_has_its_own_key_and_finds_its_run_back(tiny_raw, write_spec):
    (run,) = resolve(str(write_spec(tiny_raw)), ["analysis.control=shuffled_labels"])
    twin = control_twin(run)
    assert twin is not None and twin.spec.task.shuffle_answers and twin.run_key != run.run_key
    assert controlled_run_key(twin.spec) == run.run_key and controlled_run_key(run.spec) is None
    assert control_twin(twin) is None  # a control has no control of its own
    assert twin.display_name == "tiny:shuffled" and twin.grid_point == run.grid_point
    (plain,) = resolve(str(write_spec(tiny_raw)), [])
    assert control_twin(plain) is None
    # Specs without a control or shuffled answers keep those fields out of their run key.
    assert '"control"' not in canonical_form(plain.spec) and '"shuffle_answers"' not in canonical_form(plain.spec)


def test_a_control_on_a_task_with_one_possible_answer_is_a_clear_error(tiny_raw):
    # One activity is always the one selected: every example has the answer "a", and shuffling changes nothing.
    tiny_raw["task"] = {"name": "activity_selection", "level": 1, "params": {"n_activities": 1}, "train_size": 40, "test_size": 20, "diagnostic_size": 10}
    tiny_raw["analysis"] = {"control": "shuffled_labels"}
    with pytest.raises(SpecError) as caught:
        validate(tiny_raw, "one-answer.yaml")
    (problem,) = caught.value.problems
    assert problem.path == "analysis.control" and problem.given == "shuffled_labels"
    assert problem.allowed == ("null", "shuffled_labels")
    assert "has one possible answer" in problem.message and "'activity_selection'" in problem.message


def test_a_one_answer_control_exits_2_before_anything_exists(tiny_raw, write_spec, tmp_path):
    tiny_raw["task"] = {"name": "activity_selection", "level": 1, "params": {"n_activities": 1}, "train_size": 40, "test_size": 20, "diagnostic_size": 10}
    tiny_raw["analysis"] = {"control": "shuffled_labels"}
    spec_file = write_spec(tiny_raw)
    done = subprocess.run([sys.executable, "-m", "emergence.cli", "run", str(spec_file)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2, done
    assert done.stderr.strip().startswith(f"error: {spec_file}: analysis.control: given 'shuffled_labels'")
    assert "Traceback" not in done.stderr and not (tmp_path / "runs").exists()


def test_runs_that_emergence_does_not_train_cannot_have_a_control(tiny_raw):
    monitor = {"kind": "monitor", "name": "mine", "analysis": {"control": "shuffled_labels"}, "tracking": []}
    with pytest.raises(SpecError, match=r"analysis.control: given 'shuffled_labels', but a monitored run"):
        validate_monitor(monitor, "monitor.yaml")
    series = {**tiny_raw, "model": {"source": "checkpoints", "path": "ckpts", "steps": [0, 1]}, "analysis": {"control": "shuffled_labels"}}
    series["task"] = {**tiny_raw["task"], "format": "text"}
    del series["training"]
    with pytest.raises(SpecError, match="analysis.control: given 'shuffled_labels', but a checkpoint series has no measured training"):
        validate(series, "series.yaml")
    with pytest.raises(SpecError, match="analysis.control: given 'labels'; allowed: 'shuffled_labels'"):
        validate({**tiny_raw, "analysis": {"control": "labels"}}, "typo.yaml")
