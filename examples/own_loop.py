"""emergence.Monitor in a plain PyTorch loop, on a model that is not TransformerLens.

    python examples/own_loop.py [--steps 600] [--output-dir runs] [--tracking-uri sqlite:///mlflow.db]

A small residual MLP-mixer-free network learns to add two 4-bit numbers given as digit tokens; the monitor
measures RankMe of every block's output (module paths `blocks.*`) and the spectral edge of the parameter
updates, with the test accuracy as behaviour, and logs all of it to MLflow. `--kill-at N` stops the process
at step N without finishing (a crash); running the script again with `--resume` restarts from its last
checkpoint under the same run name, and the run ends as if nothing had happened.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

import emergence

N_BITS = 4
VOCAB = 2 ** N_BITS  # digit tokens 0..15; the answer 0..30 is a class
CHECKPOINT_EVERY = 50


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


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    pairs = torch.cartesian_prod(torch.arange(VOCAB), torch.arange(VOCAB))
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))
    train, test = pairs[order[:160]], pairs[order[160:]]
    return train, train.sum(1), test, test.sum(1)


MONITOR_SPEC = {
    "kind": "monitor",
    "name": "own-loop",
    "measures": [{"name": "rankme", "sites": ["blocks.*"]}, {"name": "participation_ratio", "sites": ["blocks.*"]}, {"name": "spectral_edge"}],
    "schedule": {"every": 25, "log_spaced_until": 16},
    "analysis": {"emergence": {"metric": "behavior/test_accuracy", "chance": 1 / (2 * VOCAB - 1), "threshold": 0.5}},
}


def main(steps: int, output_dir: str, tracking_uri: str | None, kill_at: int | None, resume: bool, run_name: str) -> Path:
    torch.manual_seed(0)
    train_x, train_y, test_x, test_y = data()
    model = SumNet()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.5)
    tracking = [{"backend": "mlflow", "tracking_uri": tracking_uri, "experiment": "own-loop"}] if tracking_uri else []
    spec = {**MONITOR_SPEC, "tracking": tracking, "execution": {"output_dir": output_dir}}

    def test_accuracy() -> dict[str, float]:
        with torch.no_grad():
            return {"test_accuracy": float((model(test_x)[:, -1].argmax(-1) == test_y).float().mean())}

    monitor = emergence.Monitor(
        spec, model=model, diagnostic=test_x[:64], behavior=test_accuracy, optimizer=optimizer, total_steps=steps, run_name=run_name
    )
    checkpoint = monitor.run_dir / "own_loop_checkpoint.pt"  # the user's own checkpoint, beside the run
    start = 0
    if resume and checkpoint.exists():
        state = torch.load(checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        monitor.load_state_dict(state["monitor"])
        start = state["step"] + 1
    with monitor:
        for step in range(start, steps + 1):
            if step:
                loss = torch.nn.functional.cross_entropy(model(train_x)[:, -1], train_y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            monitor.step(step)
            if step % CHECKPOINT_EVERY == 0:
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "monitor": monitor.state_dict(), "step": step}
                torch.save(state, checkpoint)
            if step == kill_at:
                os._exit(17)  # a crash: no finish, no cleanup
    result = emergence.load_run(monitor.run_dir)
    print(f"{result.state}: {result.directory}; emergence at step {result.emergence_step}")
    for verdict in result.signal_verdicts:
        print(f"  {verdict['signal']:<40} {verdict['verdict']:<13} lead {verdict['lead_steps']}")
    return monitor.run_dir


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--output-dir", default="runs")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="an MLflow tracking URI; '' for none")
    parser.add_argument("--run-name", default="default")
    parser.add_argument("--kill-at", type=int, default=None, help="crash at this step (to try --resume)")
    parser.add_argument("--resume", action="store_true", help="restart from the last checkpoint of this run name")
    args = parser.parse_args()
    main(args.steps, args.output_dir, args.tracking_uri or None, args.kill_at, args.resume, args.run_name)
