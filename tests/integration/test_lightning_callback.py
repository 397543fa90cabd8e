"""EmergenceCallback in real Lightning fits: into the MLFlowLogger's own MLflow run (one run, not two, and
every journal value in its metric history), into the Monitor's own run without a logger, a training step that
raises, and the shipped example end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import lightning
import pytest
import torch
from emergence_lightning import EmergenceCallback
from lightning.pytorch.loggers import MLFlowLogger, WandbLogger
from mlflow import MlflowClient

from emergence.record import read_journal
from emergence.rundir import read_status

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "lightning_module.py"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on a shared machine: two threads only fight over the cores
    yield
    torch.set_num_threads(threads)


class Net(torch.nn.Module):
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


class Shift(lightning.LightningModule):
    """Predicts each token's left neighbour; logs a training loss every step, an epoch accuracy and a
    validation loss; raises in training_step at ``fail_at``."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = Net()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens)

    def _loss(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, target = self(tokens).flatten(0, 1), tokens.roll(1, 1).flatten()
        return torch.nn.functional.cross_entropy(logits, target), (logits.argmax(-1) == target).float().mean()

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.global_step == self.hparams.fail_at:
            raise RuntimeError(f"boom at step {self.global_step}")
        loss, accuracy = self._loss(batch[0])
        self.log("train_loss", loss)
        self.log("train acc", accuracy, on_step=False, on_epoch=True)  # a space: not a legal metric key
        return loss

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self.log("val/loss", self._loss(batch[0])[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loaders() -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader, torch.Tensor]:
    tokens = torch.randint(0, 8, (64, 6), generator=torch.Generator().manual_seed(0))
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens), batch_size=16)  # 4 steps an epoch
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens[:16]), batch_size=16)
    return train, val, tokens[:16]


def monitor_spec(tmp_path: Path, tracking: list[dict]) -> dict:
    return {
        "kind": "monitor", "name": "shift", "tracking": tracking, "execution": {"output_dir": str(tmp_path / "runs")},
        "measures": [{"name": "rankme", "sites": ["net.blocks.*"]}], "schedule": {"every": 5},
        "analysis": {"emergence": {"metric": "behavior/accuracy", "chance": 0.125}},
    }


def fit(tmp_path: Path, callback: EmergenceCallback, logger: MLFlowLogger | bool, steps: int, fail_at: int | None = None) -> Shift:
    torch.manual_seed(0)
    module = Shift(fail_at)
    train, val, _ = loaders()
    trainer = lightning.Trainer(
        max_steps=steps, logger=logger, callbacks=[callback], default_root_dir=tmp_path / "lightning", accelerator="cpu",
        devices=1, log_every_n_steps=3, check_val_every_n_epoch=2, num_sanity_val_steps=1, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module, train, val)
    return module


def accuracy(trainer: lightning.Trainer, module: Shift) -> dict[str, float]:
    _, _, diagnostic = loaders()
    return {"accuracy": float(module._loss(diagnostic.to(module.device))[1])}


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_the_callback_logs_into_the_mlflow_loggers_own_run(tmp_path: Path, sqlite_tracking_uri: str) -> None:
    _, _, diagnostic = loaders()
    callback = EmergenceCallback(monitor_spec(tmp_path, tracking=[]), diagnostic=diagnostic, behavior=accuracy)
    logger = MLFlowLogger(experiment_name="lightning", tracking_uri=sqlite_tracking_uri, artifact_location=(tmp_path / "artifacts").as_uri())
    fit(tmp_path, callback, logger, steps=30)

    result = callback.result
    assert result is not None and result.state == "completed" and (result.directory / "report.html").exists()
    journal = read_journal(result.directory)
    assert journal.series("geometry/rankme/net.blocks/L0")[0].tolist() == [0, 5, 10, 15, 20, 25, 30]  # 0 first, 30 last

    client = MlflowClient(sqlite_tracking_uri)
    assert sorted(e.name for e in client.search_experiments()) == ["Default", "lightning"]  # no experiment of ours
    (run,) = client.search_runs([client.get_experiment_by_name("lightning").experiment_id])  # one run, the logger's
    assert run.info.run_id == logger.run_id and run.info.status == "FINISHED"
    assert {"train_loss", "val/loss", "geometry/rankme/net.blocks/L1", "behavior/accuracy"} <= set(run.data.metrics)
    assert run.data.tags["emergence.run_key"] == result.run_key
    params = run.data.params
    assert params["fail_at"] == "None"  # the module's hyperparameters, through the logger
    assert params["emergence.measures.0.sites"] == '["net.blocks.*"]' and params["emergence.kind"] == "monitor"
    assert not any(key.startswith(("measures.", "schedule.")) for key in params)  # ours only under emergence.

    for key in ("geometry/rankme/net.blocks/L0", "behavior/accuracy", "train/lr", "behavior/train_loss", "behavior/train_acc", "behavior/val/loss"):
        steps, values = journal.series(key)
        assert len(steps), key
        assert history(client, run.info.run_id, key) == list(zip(steps.tolist(), values.tolist(), strict=True)), key
    # The module's values are filed where Lightning's logger files them: the training loss every
    # log_every_n_steps at the step of the parameters it was computed on.
    assert history(client, run.info.run_id, "behavior/train_loss") == history(client, run.info.run_id, "train_loss")
    assert journal.series("behavior/train_acc")[0].tolist() == [4, 8, 12, 16, 20, 24, 28, 30]  # epoch ends
    assert journal.series("behavior/val/loss")[0].tolist() == [8, 16, 24]  # every second epoch; no sanity check

    local = client.download_artifacts(run.info.run_id, "tables/verdicts.json", str(tmp_path / "downloaded"))
    table = json.loads(Path(local).read_text())
    signals = [row[table["columns"].index("signal")] for row in table["data"]]
    assert signals == [v["signal"] for v in result.signal_verdicts] and len(signals) == 2


def test_the_callback_logs_into_the_wandb_loggers_own_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb
    from emergence_wandb.records import read_run_folder

    for name in ("WANDB_API_KEY", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))  # absent
    _, _, diagnostic = loaders()
    callback = EmergenceCallback(monitor_spec(tmp_path, tracking=[]), diagnostic=diagnostic, behavior=accuracy)
    logger = WandbLogger(offline=True, save_dir=str(tmp_path / "wandb-logger"), project="lightning")
    fit(tmp_path, callback, logger, steps=10)
    result = callback.result
    assert result is not None and result.state == "completed"
    run_id = logger.experiment.id
    wandb.finish()  # WandbLogger leaves its run open; its owner (here, the test) ends it
    wandb.teardown()

    (folder,) = (tmp_path / "wandb-logger" / "wandb").glob("*run-*")  # one W&B run, the logger's
    assert folder.name.endswith(run_id) and not (result.directory / "wandb").exists()
    offline = read_run_folder(folder)
    keys = {key for row in offline.history for key in row}
    assert {"train_loss", "trainer/global_step"} <= keys  # the logger's own
    assert {"emergence/geometry/rankme/net.blocks/L1", "emergence/behavior/accuracy", "tables/verdicts"} <= keys  # ours
    assert offline.config["emergence"]["kind"] == "monitor" and offline.exit_code == 0


def test_without_a_logger_the_monitor_makes_its_own_mlflow_run(tmp_path: Path, sqlite_tracking_uri: str) -> None:
    _, _, diagnostic = loaders()
    tracking = [{"backend": "mlflow", "tracking_uri": sqlite_tracking_uri, "experiment": "own"}]
    spec = monitor_spec(tmp_path, tracking)
    spec["measures"] += [  # measures that differentiate a loss: the module's own, one value per example
        {"name": "grad_cov_rank", "every": 5},
        {"name": "hessian_trace", "every": 10, "n_probes": 3},
        {"name": "llc", "every": 10, "batch_size": 8, "num_chains": 2, "num_draws": 4, "num_burnin_steps": 1},
    ]

    def per_example_loss(module: Shift, tokens: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(module(tokens).transpose(1, 2), tokens.roll(1, 1), reduction="none").mean(1)

    callback = EmergenceCallback(spec, diagnostic=diagnostic, behavior=lambda: {"accuracy": 0.5}, loss_fn=per_example_loss)
    fit(tmp_path, callback, logger=False, steps=10)

    assert callback.result is not None and callback.result.state == "completed"
    client = MlflowClient(sqlite_tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("own").experiment_id])
    assert run.data.tags["emergence.run_key"] == callback.result.run_key and run.info.status == "FINISHED"
    assert run.data.params["measures.0.sites"] == '["net.blocks.*"]'  # a run of its own: no prefix needed
    assert history(client, run.info.run_id, "behavior/accuracy") == [(0, 0.5), (5, 0.5), (10, 0.5)]
    assert [step for step, _ in history(client, run.info.run_id, "behavior/train_loss")] == [2, 5, 8]
    assert [step for step, _ in history(client, run.info.run_id, "gradient/grad_cov_rank")] == [0, 5, 10]
    for key in ("curvature/hessian_trace", "llc/mean"):
        assert [step for step, value in history(client, run.info.run_id, key) if math.isfinite(value)] == [0, 10], key


def test_an_exception_in_training_step_fails_the_run_with_its_reason(tmp_path: Path, sqlite_tracking_uri: str) -> None:
    _, _, diagnostic = loaders()
    # The spec's own MLflow entry names another experiment: with a logger, it is pointed at the logger's run.
    tracking = [{"backend": "mlflow", "tracking_uri": sqlite_tracking_uri, "experiment": "elsewhere"}]
    callback = EmergenceCallback(monitor_spec(tmp_path, tracking), diagnostic=diagnostic, run_name="failing")
    logger = MLFlowLogger(experiment_name="failing", tracking_uri=sqlite_tracking_uri, artifact_location=(tmp_path / "artifacts").as_uri())
    with pytest.raises(RuntimeError, match="boom at step 10"):
        fit(tmp_path, callback, logger, steps=30, fail_at=10)

    assert callback.result is not None and callback.result.state == "failed"
    status = read_status(callback.result.directory)
    assert status["state"] == "failed" and status["reason"] == "RuntimeError: boom at step 10"
    journal = read_journal(callback.result.directory)
    assert journal.series("geometry/rankme/net.blocks/L0")[0].tolist() == [0, 5, 10]  # up to the failing step
    assert [e["reason"] for e in journal.events if e["event"] == "failed"] == ["RuntimeError: boom at step 10"]

    client = MlflowClient(sqlite_tracking_uri)
    assert client.get_experiment_by_name("elsewhere") is None
    (run,) = client.search_runs([client.get_experiment_by_name("failing").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["emergence.run_key"] == callback.result.run_key
    assert [step for step, _ in history(client, run.info.run_id, "geometry/rankme/net.blocks/L1")] == [0, 5, 10]


def test_the_example_runs_as_shipped(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--steps", "40", "--output-dir", "runs"], capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("completed: runs/lightning-module/"), done.stdout
    (run_dir,) = (tmp_path / "runs" / "lightning-module").iterdir()
    assert (run_dir / "report.html").exists() and (run_dir / "verdicts.json").exists()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("lightning-module").experiment_id])
    assert run.info.run_id in done.stdout and run.info.status == "FINISHED"
    assert "tables/verdicts.json" in {a.path for a in client.list_artifacts(run.info.run_id, "tables")}
    assert {"train_loss", "behavior/test_accuracy", "geometry/rankme/net.blocks/L2"} <= set(run.data.metrics)


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")  # the checkpoint resumed from
def test_a_fit_resumed_from_a_lightning_checkpoint_continues_the_run(tmp_path: Path) -> None:
    _, _, diagnostic = loaders()
    spec = monitor_spec(tmp_path, tracking=[])

    def resumable_fit(steps: int, callback: EmergenceCallback, checkpoint: Path | None = None) -> None:
        trainer = lightning.Trainer(
            max_steps=steps, logger=False, callbacks=[callback], default_root_dir=tmp_path / "lightning", limit_val_batches=0,
            enable_progress_bar=False, enable_model_summary=False,
        )
        train, val, _ = loaders()
        trainer.fit(Shift(), train, val, ckpt_path=checkpoint)

    first = EmergenceCallback(spec, diagnostic=diagnostic, run_name="resumed")
    resumable_fit(12, first)
    (checkpoint,) = (tmp_path / "lightning" / "checkpoints").glob("*.ckpt")  # at the end: step 12
    assert torch.load(checkpoint, weights_only=False)["callbacks"][first.state_key]["monitor"]["measures"]

    again = EmergenceCallback(spec, diagnostic=diagnostic, run_name="resumed")
    resumable_fit(20, again, checkpoint)
    assert again.result is not None and again.result.state == "completed" and again.run_dir == first.run_dir
    journal = read_journal(again.run_dir)
    # The first fit's last step (12) was measured as its last; from there on the resumed fit's journal supersedes
    # it, so the steps are those of one fit of 20 steps.
    assert journal.series("geometry/rankme/net.blocks/L0")[0].tolist() == [0, 5, 10, 15, 20]
    assert [e["step"] for e in journal.events if e["event"] == "resume"] == [12]
