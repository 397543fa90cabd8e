"""A checkpoint series walked end to end: a tiny GPT-NeoX series (Pythia's rotary fraction and parallel residual,
a word-level tokenizer saved beside it) trained on `sort` written as text and saved in Hugging Face format by
this test, walked offline into a real MLflow store with behaviour, per-layer geometry, probes, an emergence
event and verdicts; a duplicated checkpoint found, flagged and left out; missing checkpoints refused before
anything exists; a walk that stopped resumes; the real Pythia series when its weights are in the HF cache."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from typer.testing import CliRunner

import emergence
from emergence.cli import app
from emergence.record import read_journal

REPO = Path(__file__).resolve().parents[2]
STEPS = (0, 1, 2, 4, 8, 16, 32, 64, 96, 128, 160, 192, 224, 256)
COPIED, COPY = 224, 256  # step 256's folder holds step 160's weights, as public series have been found to


def example_module():  # noqa: ANN201 - the shipped script, imported as a module
    spec = importlib.util.spec_from_file_location("checkpoint_series", REPO / "examples" / "checkpoint_series.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("series") / "sort"
    example_module().make_series(folder, "sort", 1, STEPS, duplicate=(COPIED, COPY))
    return folder


def series_spec(series: Path, output: Path, tracking: list[dict], **model: object) -> dict:
    return {
        "name": "tiny-series",
        "task": {"name": "sort", "level": 1, "format": "text", "train_size": 64, "test_size": 128, "diagnostic_size": 64},
        "model": {"source": "checkpoints", "path": str(series), **model},
        "measures": [
            {"name": "rankme"}, {"name": "stable_rank"}, {"name": "spectral_edge", "window": 3},
            {"name": "probe", "fit_size": 200, "held_out_size": 100},
        ],
        "tracking": tracking,
        "execution": {"output_dir": str(output)},
    }  # fmt: skip


@pytest.fixture(scope="module")
def walked(series: Path, tmp_path_factory: pytest.TempPathFactory, migrated_sqlite_store: Path) -> tuple[emergence.RunResult, str]:
    root = tmp_path_factory.mktemp("walk")
    store = root / "mlflow.db"
    shutil.copyfile(migrated_sqlite_store, store)
    uri = f"sqlite:///{store}"
    (result,) = emergence.run(series_spec(series, root / "runs", [{"backend": "mlflow", "tracking_uri": uri, "experiment": "series"}]), progress=False)
    return result, uri


def test_the_series_is_walked_with_behaviour_geometry_probes_and_verdicts(walked: tuple[emergence.RunResult, str]) -> None:
    result, _ = walked
    assert result.state == "completed", result.reason
    journal = read_journal(Path(result.directory))
    exact_steps, exact = journal.series("behavior/test/exact_match")
    assert exact_steps.tolist() == list(STEPS)  # every checkpoint scored, at its training step
    assert exact[0] == 0.0 and exact.max() > 0.5  # the untrained model sorts nothing; the trained one does
    for layer in (0, 1):
        assert len(journal.series(f"geometry/rankme/resid_post/L{layer}")[0]) == len(STEPS) - 1  # the copy is not measured
    probe_steps, probed = journal.series("probe/count_smaller/accuracy")
    assert len(probe_steps) == len(STEPS) - 1 and 0.0 <= probed.min() <= probed.max() <= 1.0
    (event,) = [e for e in result.events if e["metric"] == "behavior/test/exact_match"]
    assert event["step"] in STEPS and 0 < event["step"] < COPIED
    geometry = [v for v in result.signal_verdicts if v["signal"].startswith("geometry/")]
    assert geometry and all(v["event_step"] == event["step"] for v in geometry)


def test_a_duplicated_checkpoint_is_flagged_and_left_out(walked: tuple[emergence.RunResult, str]) -> None:
    result, _ = walked
    run_dir = Path(result.directory)
    journal = read_journal(run_dir)
    checkpoints = {e["step"]: e for e in journal.events if e["event"] == "checkpoint"}
    assert sorted(checkpoints) == list(STEPS)
    assert checkpoints[COPY]["hash"] == checkpoints[COPIED]["hash"] and checkpoints[COPY]["duplicate_of"] == COPIED
    assert len({e["hash"] for e in checkpoints.values()}) == len(STEPS) - 1  # every other step has weights of its own
    assert sorted(journal.excluded_steps()) == [COPIED, COPY]
    assert all(step not in (COPIED, COPY) for step, _ in journal.analysed().values)
    assert json.loads((run_dir / "status.json").read_text())["excluded_steps"] == [COPIED, COPY]
    page = (run_dir / "report.html").read_text()
    assert "Checkpoint integrity" in page and "left out of the analysis: steps 224, 256" in page


def test_mlflow_holds_the_series_and_its_integrity_table(walked: tuple[emergence.RunResult, str], tmp_path: Path) -> None:
    result, uri = walked
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("series").experiment_id])
    assert run.data.tags["emergence.run_key"] == result.run_key and run.info.status == "FINISHED"
    journal = read_journal(Path(result.directory))
    for key in ("behavior/test/exact_match", "geometry/rankme/resid_post/L1", "integrity/duplicate"):
        steps, values = journal.series(key)
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert history == list(zip(steps.tolist(), values.tolist(), strict=True)), key
    table = json.loads(Path(client.download_artifacts(run.info.run_id, "tables/integrity.json", str(tmp_path))).read_text())
    assert [row[0] for row in table["data"]] == list(STEPS)
    assert "tables/verdicts.json" in {a.path for a in client.list_artifacts(run.info.run_id, "tables")}


def test_strict_integrity_refuses_the_duplicated_series(series: Path, tmp_path: Path) -> None:
    (result,) = emergence.run(series_spec(series, tmp_path / "runs", [], integrity="strict"), progress=False)
    assert result.state == "failed"
    assert f"has the weights of step {COPIED}; integrity: strict refuses" in result.reason


def test_missing_checkpoints_exit_2_before_anything_exists(series: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec_file = tmp_path / "series.yaml"
    store = tmp_path / "mlflow.db"
    spec = series_spec(series, tmp_path / "runs", [{"backend": "mlflow", "tracking_uri": f"sqlite:///{store}"}], steps=[0, 1, 3, 5])
    spec_file.write_text(json.dumps(spec))
    done = CliRunner().invoke(app, ["run", str(spec_file)])
    assert done.exit_code == 2, done.output
    assert "model.path: 2 of 4 checkpoints are missing (step3, step5)" in " ".join(done.output.split())
    assert not (tmp_path / "runs").exists() and not store.exists()

    # A Hub series reads the HF cache only: an empty cache lists every missing revision and how to fetch them.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    hub = {**spec, "model": {"source": "checkpoints", "name": "EleutherAI/pythia-14m", "steps": [0, 1000]}}
    spec_file.write_text(json.dumps(hub))
    done = CliRunner().invoke(app, ["run", str(spec_file)])
    text = " ".join(done.output.split())
    assert done.exit_code == 2 and "model.name: 2 of 2 checkpoints are missing (step0, step1000)" in text, done.output
    assert "huggingface-cli download EleutherAI/pythia-14m --revision step0" in text
    assert not (tmp_path / "runs").exists() and not store.exists()


def test_a_walk_that_stopped_resumes_with_the_next_checkpoint(series: Path, walked: tuple[emergence.RunResult, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from emergence.series import SeriesRun

    original = SeriesRun._measure

    def stop_at_32(self: SeriesRun, checkpoint, *args):  # noqa: ANN001, ANN202
        if checkpoint.step == 32:
            raise OSError("No space left on device")
        return original(self, checkpoint, *args)

    monkeypatch.setattr(SeriesRun, "_measure", stop_at_32)
    spec = series_spec(series, tmp_path / "runs", [])
    (stopped,) = emergence.run(spec, progress=False)
    assert stopped.state == "failed" and "No space left on device" in stopped.reason
    monkeypatch.setattr(SeriesRun, "_measure", original)
    (resumed,) = emergence.run(spec, progress=False)
    assert resumed.state == "completed" and resumed.directory == stopped.directory
    journal, straight = read_journal(Path(resumed.directory)), read_journal(Path(walked[0].directory))
    assert [e["step"] for e in journal.events if e["event"] == "resume"] == [16]

    def measured(contents):  # noqa: ANN001, ANN202 - NaN (the adiabatic parameter: a series has no learning rate) as None
        return [
            (s, {k: None if math.isnan(v) else v for k, v in values.items() if not k.startswith("cost/")})
            for s, values in contents.values
        ]

    assert measured(journal) == measured(straight)  # the spectral edge's window came back from the saved state
    assert resumed.signal_verdicts == walked[0].signal_verdicts


def test_the_bridge_keeps_a_fused_qkv_that_the_measures_leave_out(series: Path) -> None:
    from emergence.measures.base import MeasureContext, MeasureSetup
    from emergence.measures.spectral import SpectralEdge
    from emergence.models.checkpoints import load_model, series_checkpoints, unused_parameters
    from emergence.spec.schema import CheckpointSeriesSpec

    first = series_checkpoints(CheckpointSeriesSpec(source="checkpoints", path=str(series)))[0]
    model = load_model(first, torch.device("cpu"), "float32")
    unused = unused_parameters(model, torch.tensor([[3, 4, 5, 6]]))
    assert unused and all(".qkv." in name for name in unused)
    setup = MeasureSetup(2, 64, None, torch.device("cpu"), 0, unused_parameters=unused)
    selected = SpectralEdge(SpectralEdge.Options(), setup)._selected(model)
    assert not set(selected) & unused and len(selected) == len(dict(model.named_parameters())) - len(unused)
    del MeasureContext


def test_pythia_160m_when_its_checkpoints_are_in_the_cache(tmp_path: Path) -> None:
    from huggingface_hub import try_to_load_from_cache

    steps = [0, 1000]
    cached = [isinstance(try_to_load_from_cache("EleutherAI/pythia-160m", "config.json", revision=f"step{s}"), str) for s in steps]
    if not all(cached):
        pytest.skip("EleutherAI/pythia-160m step0 and step1000 are not in the Hugging Face cache (nothing is downloaded here)")
    spec = {
        "name": "pythia-check", "tracking": [], "execution": {"output_dir": str(tmp_path / "runs")},
        "task": {"name": "logical_deduction", "level": 1, "format": "text", "scoring": "choice", "shots": 1,
                 "train_size": 32, "test_size": 32, "diagnostic_size": 32},
        "model": {"source": "checkpoints", "name": "EleutherAI/pythia-160m", "steps": steps},
        "measures": [{"name": "rankme"}],
    }  # fmt: skip
    (result,) = emergence.run(spec, progress=False)
    assert result.state == "completed", result.reason
    journal = read_journal(Path(result.directory))
    assert journal.series("behavior/test/choice_accuracy")[0].tolist() == steps
    assert len({e["hash"] for e in journal.events if e["event"] == "checkpoint"}) == 2
