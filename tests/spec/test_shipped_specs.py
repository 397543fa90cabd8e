"""Every shipped spec validates, and names in its header the command that runs it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from emergence.spec import resolve

SPEC_DIR = Path(__file__).resolve().parents[2] / "specs"
SPECS = sorted(SPEC_DIR.glob("*.yaml")) + sorted((SPEC_DIR / "studies").glob("*.yaml"))
IDS = [str(p.relative_to(SPEC_DIR)) for p in SPECS]


def test_there_are_shipped_specs():
    assert set(IDS) >= {"addition.yaml", "tiny.yaml", "studies/anatomy.yaml"}


@pytest.mark.parametrize("path", SPECS, ids=IDS)
def test_shipped_spec_validates_and_documents_its_command(path):
    runs = resolve(str(path))
    assert runs
    header = path.read_text().split("\nname:")[0]
    assert f"emergence run specs/{path.relative_to(SPEC_DIR)}" in header


@pytest.mark.parametrize("path", SPECS, ids=IDS)
def test_shipped_spec_runs_end_to_end_when_shrunk(path, tmp_path):
    """The shipped task, model, measures and analysis, for a few steps on little data: every part runs."""
    from emergence.runner import run_one

    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if (raw.get("model") or {}).get("source") == "checkpoints":
        run_series_spec(path, raw, tmp_path)
        return
    shrink = [
        "training.steps=4", "training.checkpoint_every=2", "schedule.every=2", "schedule.log_spaced_until=0", "schedule.dense_until=0",
        "task.train_size=64", "task.test_size=32", "task.diagnostic_size=16", "tracking=[]",
        f"execution.output_dir={tmp_path}",
    ]
    measures = yaml.safe_load(path.read_text(encoding="utf-8")).get("measures") or []
    for index, measure in enumerate(measures):
        if measure["name"] in ("probe", "ablation"):  # fresh probe examples: a few, not thousands
            shrink += [f"measures.{index}.fit_size=120", f"measures.{index}.held_out_size=40"]
        if measure["name"] == "llc":  # a few SGLD draws on one chain: every part of the estimate, not its quality
            shrink += [f"measures.{index}.{k}" for k in ("num_chains=1", "num_draws=4", "num_burnin_steps=2", "n_examples=32")]
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    model = raw.get("model") or {}
    if model.get("kind") == "mlp":  # a Jacobian study's SVD is cubic in the parameters: a narrow hidden layer
        shrink.append(f"model.sizes=[{model['sizes'][0]}, 8, {model['sizes'][-1]}]")
    if (raw.get("jacobian") or {}).get("mode") == "sketch":  # a few directions: every pass costs one per direction
        shrink += ["jacobian.rank=4", "jacobian.oversample=2", "jacobian.chunk_size=6", "jacobian.retrain.dims=[2, 4]"]
    runs = resolve(str(path), shrink)
    if path.parent.name == "studies":  # a study's grid is dozens of points: the first and last task on its smallest model
        def size(run) -> int:  # noqa: ANN001
            return run.spec.model.n_layers * run.spec.model.d_model**2

        smallest = [run for run in runs if size(run) == min(size(r) for r in runs)]
        runs = [smallest[0], smallest[-1]]
    for run in runs:  # a sweep: every grid point
        outcome = run_one(run)
        assert outcome.state == "completed", outcome.reason
        assert (outcome.run_dir / "verdicts.json").exists() and (outcome.run_dir / "report.html").exists()


def run_series_spec(path: Path, raw: dict, tmp_path: Path) -> None:
    """A checkpoint series: a local one on a tiny series made here (three checkpoints); a Hub one when its first
    two checkpoints are in the HF cache (nothing is downloaded in the tests), else skipped with the reason."""
    import importlib.util

    from huggingface_hub import try_to_load_from_cache

    from emergence.models.checkpoints import pythia_steps
    from emergence.runner import run_one

    model = raw["model"]
    shrink = ["task.train_size=32", "task.test_size=32", "task.diagnostic_size=16", "tracking=[]", f"execution.output_dir={tmp_path}"]
    for index, measure in enumerate(raw.get("measures") or []):
        if measure["name"] == "probe":
            shrink += [f"measures.{index}.fit_size=120", f"measures.{index}.held_out_size=40"]
    if model.get("path") is not None:
        maker = importlib.util.spec_from_file_location("checkpoint_series", path.parents[1] / "examples" / "checkpoint_series.py")
        module = importlib.util.module_from_spec(maker)
        maker.loader.exec_module(module)
        module.make_series(tmp_path / "series", raw["task"]["name"], raw["task"].get("level", 1), (0, 1, 2), n_train=64)
        shrink.append(f"model.path={tmp_path / 'series'}")
    else:
        steps = pythia_steps()[:2] if model.get("steps") == "pythia" else model["steps"][:2]
        missing = [s for s in steps if not isinstance(try_to_load_from_cache(model["name"], "config.json", revision=f"step{s}"), str)]
        if missing:
            pytest.skip(f"{model['name']} steps {missing} are not in the Hugging Face cache (nothing is downloaded in the tests)")
        shrink.append(f"model.steps={steps}")
    (run,) = resolve(str(path), shrink)
    outcome = run_one(run)
    assert outcome.state == "completed", outcome.reason
    assert (outcome.run_dir / "verdicts.json").exists() and (outcome.run_dir / "report.html").exists()
