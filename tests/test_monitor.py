"""emergence.Monitor on models and loops that are not ours: the shipped example end to end (a crash, a
restart from the loop's own checkpoint, and a journal equal to an uninterrupted run's), every bad input
refused before anything is created, and a monitored run in a real MLflow store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import emergence
from emergence.cli import app
from emergence.record import read_journal

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "own_loop.py"


def without_timings(values: dict[str, float]) -> dict[str, float]:
    return {key: value for key, value in values.items() if not key.startswith("cost/")}


def own_loop(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), "--steps", "150", "--output-dir", str(tmp_path / "runs"), "--tracking-uri", "", *args],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )


def test_the_example_crashes_restarts_from_its_checkpoint_and_ends_as_if_uninterrupted(tmp_path: Path) -> None:
    straight = own_loop(tmp_path, "--run-name", "straight")
    assert straight.returncode == 0, straight.stderr
    crashed = own_loop(tmp_path, "--run-name", "restarted", "--kill-at", "130")
    assert crashed.returncode == 17, crashed.stderr  # os._exit at step 130: measured 125, checkpoint at 100
    resumed = own_loop(tmp_path, "--run-name", "restarted", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("completed: ")

    (straight_dir,) = [d for d in (tmp_path / "runs" / "own-loop").iterdir() if d.name in straight.stdout]
    (restarted_dir,) = [d for d in (tmp_path / "runs" / "own-loop").iterdir() if d.name in resumed.stdout]
    assert straight_dir != restarted_dir  # another run name, another run
    expected, got = read_journal(straight_dir), read_journal(restarted_dir)
    assert [s for s, _ in got.values] == [s for s, _ in expected.values]  # every step once: 125 measured twice, kept once
    assert [(s, without_timings(v)) for s, v in got.values] == [(s, without_timings(v)) for s, v in expected.values]
    assert any(key.startswith("spectral/") for _, values in got.values for key in values)  # its state came back too
    assert [e["step"] for e in got.events if e["event"] == "resume"] == [101]
    straight_result, restarted_result = emergence.load_run(straight_dir), emergence.load_run(restarted_dir)
    assert restarted_result.state == "completed" and restarted_result.verdicts == straight_result.verdicts
    assert (restarted_dir / "report.html").exists()


class Mixer(torch.nn.Module):
    """Not a transformer: an embedding, numbered blocks and a head, on token sequences."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(8, 16)
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(16, 16) for _ in range(2))
        self.head = torch.nn.Linear(16, 8)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(tokens)
        for block in self.blocks:
            hidden = hidden + torch.tanh(block(hidden))
        return self.head(hidden)


def monitor_spec(tmp_path: Path, **changes: object) -> dict:
    spec = {
        "kind": "monitor", "name": "mixer", "tracking": [], "execution": {"output_dir": str(tmp_path / "runs")},
        "measures": [{"name": "rankme", "sites": ["blocks.*"]}], "schedule": {"every": 5},
    }
    return {**spec, **changes}


def per_example_loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(model(batch)[:, -1], batch[:, 0], reduction="none")


def mean_loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    return per_example_loss(model, batch).mean()


def raising_loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    raise KeyError("labels")


@pytest.mark.parametrize(
    ("changes", "inputs", "message"),
    [
        ({"measures": [{"name": "rankme", "sites": ["block.*"]}]}, {}, r"measures\.0\.sites: site 'block\.\*' matches no module of Mixer; closest: blocks"),
        ({"measures": [{"name": "probe", "sites": ["blocks.*"]}]}, {}, r"measures\.0: measure 'probe' needs features=\{name: labels\}"),
        ({"measures": [{"name": "probe"}]}, {"features": {"first": torch.zeros(4)}}, r"measures\.0 \(probe\): probe: under a Monitor, name the module"),
        ({"measures": [{"name": "llc"}]}, {}, r"measures\.0: measure 'llc' needs loss_fn=\(model, batch\) -> loss"),
        ({"measures": [{"name": "hessian_top"}]}, {}, "measure 'hessian_top' needs loss_fn"),
        ({"measures": [{"name": "fisher_rank"}]}, {"loss_fn": mean_loss}, r"measure 'fisher_rank' needs one loss per example: loss_fn returned one number; return shape \[4\]"),
        ({"measures": [{"name": "ablation", "features": ["x"]}]}, {}, "measure 'ablation' reads the task of a run that emergence trains"),
        ({}, {"loss_fn": raising_loss}, "loss_fn: raised KeyError on the diagnostic batch: 'labels'"),
        ({}, {"loss_fn": lambda model, batch: model(batch)}, r"loss_fn: returned \(4, 6, 8\) on a diagnostic batch of 4 examples"),
        ({}, {"features": {"first": torch.zeros(3)}}, r"features\.first: labels of shape \(3,\); the diagnostic batch has 4 examples"),
        ({}, {"features": {"first": torch.full((4,), 0.5)}}, r"features\.first: labels must be integers"),
        ({"measures": [{"name": "rankme", "sites": ["blocks.*"], "position": "answer"}]}, {}, r"measures\.0\.position: given 'answer'"),
        ({}, {"diagnostic": torch.randn(4, 6)}, "diagnostic: Mixer cannot take the diagnostic batch"),
    ],
    ids=[
        "no-such-module", "probe-needs-features", "probe-needs-a-site", "llc-needs-a-loss", "hessian-needs-a-loss",
        "fisher-needs-per-example", "ablation-needs-a-task", "loss-raises", "loss-shape", "labels-length", "labels-not-integer",
        "answer-position", "bad-batch",
    ],
)
def test_bad_input_is_refused_before_anything_exists(tmp_path: Path, changes: dict, inputs: dict, message: str) -> None:
    inputs = {"diagnostic": torch.randint(0, 8, (4, 6)), **inputs}
    with pytest.raises(emergence.MonitorInputError, match=message):
        emergence.Monitor(monitor_spec(tmp_path, **changes), model=Mixer(), **inputs)
    assert not (tmp_path / "runs").exists()


def test_spec_errors_name_the_field(tmp_path: Path) -> None:
    model, batch = Mixer(), torch.randint(0, 8, (4, 6))
    with pytest.raises(emergence.SpecError, match="kind: emergence.Monitor takes a monitor spec"):
        emergence.Monitor({"name": "x", "task": {"name": "parity"}}, model=model, diagnostic=batch)
    with pytest.raises(emergence.SpecError, match="task: unknown field 'task'"):
        emergence.Monitor({**monitor_spec(tmp_path), "task": {"name": "parity"}}, model=model, diagnostic=batch)
    with pytest.raises(emergence.SpecError, match=r"measures\.0\.name: unknown measure 'rankmee'"):
        emergence.Monitor(monitor_spec(tmp_path, measures=[{"name": "rankmee"}]), model=model, diagnostic=batch)
    assert not (tmp_path / "runs").exists()

    spec_file = tmp_path / "monitor.yaml"
    spec_file.write_text("kind: monitor\nname: m\nmeasures: [{name: rankme, sites: ['blocks.*']}]\n")
    runner = CliRunner()
    validated = runner.invoke(app, ["validate", str(spec_file)])
    assert validated.exit_code == 0 and "a monitor spec" in validated.output
    refused = runner.invoke(app, ["run", str(spec_file)])
    assert refused.exit_code == 2 and "kind: a monitor spec (kind: monitor) has no task, model or training" in refused.output
    bad = runner.invoke(app, ["validate", str(spec_file), "schedule.every=0"])
    assert bad.exit_code == 2 and f"error: {spec_file}: schedule.every:" in bad.output


def test_one_run_directory_takes_one_monitor_at_a_time(tmp_path: Path) -> None:
    model, batch = Mixer(), torch.randint(0, 8, (4, 6))
    first = emergence.Monitor(monitor_spec(tmp_path), model=model, diagnostic=batch, run_name="a")
    with pytest.raises(emergence.MonitorInputError, match="in use by another process"):
        emergence.Monitor(monitor_spec(tmp_path), model=model, diagnostic=batch, run_name="a")
    first.finish()
    emergence.Monitor(monitor_spec(tmp_path), model=model, diagnostic=batch, run_name="a").finish()  # reattaches


def test_a_monitored_run_lands_in_mlflow_as_its_journal_says(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = monitor_spec(tmp_path, tracking=[{"backend": "mlflow", "tracking_uri": uri, "experiment": "monitored"}])
    torch.manual_seed(0)
    model, tokens = Mixer(), torch.randint(0, 8, (64, 6))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with emergence.Monitor(spec, model=model, diagnostic=tokens[:16], optimizer=optimizer, total_steps=20) as monitor:
        for step in range(21):
            if step:
                loss = torch.nn.functional.cross_entropy(model(tokens).flatten(0, 1), tokens.roll(1, 1).flatten())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                monitor.log({"train_loss": loss.item()}, step)
            monitor.step(step)
    journal = read_journal(monitor.run_dir)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("monitored").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["emergence.kind"] == "monitor"
    for key in ("geometry/rankme/blocks/L1", "behavior/train_loss", "train/lr"):
        steps, values = journal.series(key)
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert history == list(zip(steps.tolist(), values.tolist(), strict=True)), key
    assert journal.series("geometry/rankme/blocks/L0")[0].tolist() == [0, 5, 10, 15, 20]
    (row,) = emergence.load_runs(uri, experiment="monitored")
    assert row.run_key == monitor.run_spec.run_key and row.state == "FINISHED"
    assert emergence.report(monitor.run_dir).exists()


def test_a_transformer_lens_model_keeps_its_hook_names_and_the_numbers_of_a_trained_run(tmp_path: Path) -> None:
    """On a bridge, ``sites: [resid_post]`` is the hook of every layer: the keys are a trained run's, and the
    values equal the trained run's measure on the same activations (our own capture, last input position)."""
    from emergence.capture import CaptureRequest, capture
    from emergence.measures.geometry import rankme
    from emergence.models import build_model
    from emergence.spec.schema import ModelSpec
    from emergence.tasks import build_task

    task = build_task("binary_addition", 1, {"n_bits": 3}, 40, 20, 10, 0)
    model = build_model(ModelSpec(n_layers=2, d_model=16, n_heads=2), len(task.vocab), task.seq_len, 0, torch.device("cpu"))
    split = task.diagnostic
    spec = monitor_spec(tmp_path, measures=[{"name": "rankme", "sites": ["resid_post", "embed"]}, {"name": "stable_rank", "sites": ["blocks.*.hook_out"]}])
    with emergence.Monitor(spec, model=model, diagnostic=split.tokens, positions=split.prompt_len - 1) as monitor:
        values = monitor.step(0)
    _, ours = capture(model, split, [CaptureRequest("resid_post", layer) for layer in (0, 1)] + [CaptureRequest("embed", 0)], torch.device("cpu"))
    for layer in (0, 1):
        assert values[f"geometry/rankme/resid_post/L{layer}"] == pytest.approx(rankme(ours[CaptureRequest("resid_post", layer)].numpy()), rel=1e-5)
    assert values["geometry/rankme/embed/L0"] == pytest.approx(rankme(ours[CaptureRequest("embed", 0)].numpy()), rel=1e-5)
    assert {"geometry/stable_rank/blocks.each.hook_out/L0", "geometry/stable_rank/blocks.each.hook_out/L1"} <= set(values)
