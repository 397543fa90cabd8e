"""Every shipped spec validates, and names in its header the command that runs it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from emergence.spec import resolve

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.yaml"))


def test_there_are_shipped_specs():
    assert {p.name for p in SPECS} >= {"addition.yaml", "tiny.yaml"}


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_shipped_spec_validates_and_documents_its_command(path):
    runs = resolve(str(path))
    assert runs
    header = path.read_text().split("\nname:")[0]
    assert f"emergence run specs/{path.name}" in header


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_shipped_spec_runs_end_to_end_when_shrunk(path, tmp_path):
    """The shipped task, model, measures and analysis, for a few steps on little data: every part runs."""
    from emergence.runner import run_one

    shrink = [
        "training.steps=4", "training.checkpoint_every=2", "schedule.every=2", "schedule.log_spaced_until=0",
        "task.train_size=64", "task.test_size=32", "task.diagnostic_size=16", "tracking=[]",
        f"execution.output_dir={tmp_path}",
    ]
    measures = yaml.safe_load(path.read_text(encoding="utf-8")).get("measures") or []
    for index, measure in enumerate(measures):
        if measure["name"] in ("probe", "ablation"):  # fresh probe examples: a few, not thousands
            shrink += [f"measures.{index}.fit_size=120", f"measures.{index}.held_out_size=40"]
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    model = raw.get("model") or {}
    if model.get("kind") == "mlp":  # a Jacobian study's SVD is cubic in the parameters: a narrow hidden layer
        shrink.append(f"model.sizes=[{model['sizes'][0]}, 8, {model['sizes'][-1]}]")
    if (raw.get("jacobian") or {}).get("mode") == "sketch":  # a few directions: every pass costs one per direction
        shrink += ["jacobian.rank=4", "jacobian.oversample=2", "jacobian.chunk_size=6", "jacobian.retrain.dims=[2, 4]"]
    for run in resolve(str(path), shrink):  # a sweep: every grid point
        outcome = run_one(run)
        assert outcome.state == "completed", outcome.reason
        assert (outcome.run_dir / "verdicts.json").exists() and (outcome.run_dir / "report.html").exists()
