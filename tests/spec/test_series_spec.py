"""A checkpoint series' spec: every field that cannot work is refused with its path, what was given and what is
allowed, exit 2, before anything exists; run keys of specs without the new fields are what they were."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emergence.cli import app
from emergence.spec import resolve

SERIES = {
    "name": "series",
    "task": {"name": "sort", "level": 1, "format": "text", "train_size": 32, "test_size": 32, "diagnostic_size": 16},
    "model": {"source": "checkpoints", "path": "somewhere"},
    "tracking": [],
}


def changed(base: dict, **sections: dict) -> dict:
    return {**base, **{key: {**base.get(key, {}), **value} for key, value in sections.items()}}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (changed(SERIES, task={"format": "tokens"}), "task.format: given 'tokens': a checkpoint series reads the task as text"),
        ({**SERIES, "training": {"steps": 10}}, "training: a checkpoint series trains nothing"),
        (changed(SERIES, task={"scoring": "choice"}), "task.scoring: given 'choice', but task 'sort' has no finite answer set; tasks that do: logical_deduction"),
        (changed(SERIES, model={"name": "EleutherAI/pythia-160m"}), "model.name: give the series as name (a Hugging Face repository) or as path"),
        (changed(SERIES, model={"path": None, "name": "EleutherAI/pythia-160m"}), "model.steps: a repository's steps cannot be listed offline"),
        (changed(SERIES, model={"revision_format": "checkpoint"}), "model.revision_format: given 'checkpoint'; it must contain {step}"),
        (changed(SERIES, model={"steps": [5]}), "model.steps: given [5]; allowed: 'pythia'"),
        (changed(SERIES, model={"steps": [0, 1, 1]}), "model.steps: steps repeat: [1]"),
        (changed(SERIES, model={"integrity": "paranoid"}), "model.integrity: given 'paranoid'; allowed: 'flag' or 'strict'"),
        (changed(SERIES, model={"sourse": "x"}), "model.sourse: unknown field 'sourse' (did you mean 'source'?)"),
        (changed(SERIES, model={"source": "checkpoint"}), "model.source: given 'checkpoint' (did you mean 'checkpoints'?); allowed: 'checkpoints'"),
        ({**SERIES, "model": {"n_layers": 2}, "task": {**SERIES["task"]}}, "task.format: given 'text': only a checkpoint series"),
        (changed(SERIES, task={"format": "tokens", "shots": 2}), "task.shots: shots applies to a task rendered as text"),
    ],
    ids=[
        "tokens", "training", "choice-without-answer-set", "name-and-path", "name-without-steps", "revision-format",
        "one-step", "repeated-steps", "integrity", "unknown-field", "unknown-source", "text-for-a-trained-model", "shots-on-tokens",
    ],
)
def test_a_bad_series_spec_exits_2_naming_the_field(tmp_path: Path, spec: dict, expected: str) -> None:
    path = tmp_path / "series.yaml"
    path.write_text(json.dumps({**spec, "execution": {"output_dir": str(tmp_path / "runs")}}))
    for command in ("validate", "run"):
        done = CliRunner().invoke(app, [command, str(path)])
        assert done.exit_code == 2, done.output
        assert expected in " ".join(done.output.split()), done.output
    assert not (tmp_path / "runs").exists()


def test_a_series_spec_resolves_and_choice_scoring_is_what_emerges() -> None:
    (run,) = resolve({**SERIES, "task": {**SERIES["task"], "name": "logical_deduction", "scoring": "choice", "shots": 3}})
    assert run.spec.analysis.emergence.metric == "behavior/test/choice_accuracy"
    assert run.spec.planned_steps == 0  # a folder's steps are known once it is read
    (pythia,) = resolve({**SERIES, "model": {"source": "checkpoints", "name": "EleutherAI/pythia-160m", "steps": "pythia"}})
    assert pythia.spec.planned_steps == 143_000
    (explicit,) = resolve({**SERIES, "analysis": {"emergence": {"metric": "behavior/test/exact_match"}}, "task": {**SERIES["task"], "name": "logical_deduction", "scoring": "choice"}})
    assert explicit.spec.analysis.emergence.metric == "behavior/test/exact_match"  # what the spec says wins
