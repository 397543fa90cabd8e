"""emergence in a Lightning training run: EmergenceCallback on a LightningModule that a real Trainer fits.

    python examples/lightning_module.py [--steps 600] [--output-dir runs] [--tracking-uri sqlite:///mlflow.db] [--no-logger]

A small residual network (`self.net`) learns to add two 4-bit numbers given as digit tokens, full batch,
with AdamW; its test accuracy jumps from chance to 1 near step 300. The Trainer logs to MLflow through
Lightning's own MLFlowLogger, and the callback puts RankMe of every block's output (module paths
`net.blocks.*`), the spectral edge of the parameter updates, the test accuracy, the verdicts and the report
into that same MLflow run. `--no-logger` fits without a Lightning logger: the monitor then makes its own
MLflow run, as its spec's tracking says. Lightning's own files (checkpoints) go under `<output-dir>/lightning`.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

import lightning
import torch
from emergence_lightning import EmergenceCallback
from lightning.pytorch.loggers import MLFlowLogger

N_BITS = 4
VOCAB = 2 ** N_BITS  # digit tokens 0..15; the answer 0..30 is a class
EXPERIMENT = "lightning-module"


class SumNet(torch.nn.Module):
    """Embeds the two operands, mixes them through residual blocks, reads the sum from the last position."""

    def __init__(self, width: int = 48, n_blocks: int = 3) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, width)
        self.position = torch.nn.Parameter(torch.zeros(2, width))
        self.blocks = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.LayerNorm(width), torch.nn.Linear(width, 2 * width), torch.nn.GELU(), torch.nn.Linear(2 * width, width))
            for _ in range(n_blocks)
        )
        self.mix = torch.nn.Linear(2, 2, bias=False)
        self.head = torch.nn.Linear(width, 2 * VOCAB - 1)

    def forward(self, operands: torch.Tensor) -> torch.Tensor:  # [N, 2] -> [N, 2, classes]
        hidden = self.embed(operands) + self.position
        for block in self.blocks:
            hidden = hidden + block(hidden)
            hidden = hidden + self.mix(hidden.transpose(1, 2)).transpose(1, 2)
        return self.head(hidden)


class Addition(lightning.LightningModule):
    """An ordinary LightningModule: the network, the loss, the optimizer, and a test accuracy to watch."""

    def __init__(self, test_x: torch.Tensor, test_y: torch.Tensor, lr: float = 3e-3, weight_decay: float = 0.5) -> None:
        super().__init__()
        self.save_hyperparameters("lr", "weight_decay")
        self.net = SumNet()
        self.register_buffer("test_x", test_x)
        self.register_buffer("test_y", test_y)

    def forward(self, operands: torch.Tensor) -> torch.Tensor:
        return self.net(operands)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        operands, sums = batch
        loss = torch.nn.functional.cross_entropy(self(operands)[:, -1], sums)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def test_accuracy(self) -> dict[str, float]:
        """The behaviour the monitor watches (it calls this in eval mode, without gradients)."""
        return {"test_accuracy": float((self(self.test_x)[:, -1].argmax(-1) == self.test_y).float().mean())}


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    pairs = torch.cartesian_prod(torch.arange(VOCAB), torch.arange(VOCAB))
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))
    train, test = pairs[order[:160]], pairs[order[160:]]
    return train, train.sum(1), test, test.sum(1)


# Sites are paths of the LightningModule's named_modules(): the network is `self.net`, so its blocks are net.blocks.*
MONITOR_SPEC = {
    "kind": "monitor",
    "name": "lightning-module",
    "measures": [{"name": "rankme", "sites": ["net.blocks.*"]}, {"name": "spectral_edge"}],
    "schedule": {"every": 25, "log_spaced_until": 16},
    "analysis": {"emergence": {"metric": "behavior/test_accuracy", "chance": 1 / (2 * VOCAB - 1), "threshold": 0.5}},
}


def main(steps: int, output_dir: str, tracking_uri: str, use_logger: bool) -> Path:
    torch.set_num_threads(1)  # a network this small trains fastest on one thread (and far faster on a busy machine)
    lightning.seed_everything(0, verbose=False)
    train_x, train_y, test_x, test_y = data()
    module = Addition(test_x, test_y)
    full_batch = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train_x, train_y), batch_size=len(train_x))
    # Without a Lightning logger the monitor logs where this says; with MLFlowLogger, into the logger's run.
    spec = {**MONITOR_SPEC, "tracking": [{"backend": "mlflow", "tracking_uri": tracking_uri, "experiment": EXPERIMENT}],
            "execution": {"output_dir": output_dir}}
    callback = EmergenceCallback(spec, diagnostic=test_x[:64], behavior=module.test_accuracy)
    logger = MLFlowLogger(experiment_name=EXPERIMENT, tracking_uri=tracking_uri) if use_logger else False
    trainer = lightning.Trainer(
        max_steps=steps, logger=logger, callbacks=[callback], default_root_dir=Path(output_dir) / "lightning",
        accelerator="cpu", devices=1, log_every_n_steps=10, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module, full_batch)

    result = callback.result  # what the monitor made of the run; emergence.load_run(callback.run_dir) reads it back later
    assert result is not None and result.directory is not None
    print(f"{result.state}: {result.directory}; emergence at step {result.emergence_step}")
    if use_logger:
        print(f"MLflow: the logger's run {logger.run_id} in experiment {EXPERIMENT!r} at {tracking_uri} "
              f"(mlflow ui --backend-store-uri {tracking_uri})")
    else:
        print(f"MLflow: the monitor's own run in experiment {EXPERIMENT!r} at {tracking_uri}")
    for verdict in result.signal_verdicts:
        print(f"  {verdict['signal']:<40} {verdict['verdict']:<13} lead {verdict['lead_steps']}")
    return result.directory


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--output-dir", default="runs", help="the emergence run directory, and Lightning's files under lightning/")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="the MLflow store")
    parser.add_argument("--no-logger", action="store_true", help="fit with logger=False: the monitor makes its own MLflow run")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # Lightning's notes on GPUs and workers
    warnings.filterwarnings("ignore", ".*smaller than the logging interval")  # one full batch per epoch, by design
    main(args.steps, args.output_dir, args.tracking_uri, not args.no_logger)
