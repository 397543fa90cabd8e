"""The training loop: answer-token cross-entropy, a fixed data order per seed, clipping, schedules.

Short on purpose. The data order of step ``s`` depends only on (seed, s), so a run resumed from a
checkpoint sees exactly the batches it would have seen, and matches an uninterrupted run bit for bit.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int

from emergence.spec.schema import TrainingSpec
from emergence.tasks.base import Split
from emergence.train.optim import build_optimizer, build_scheduler


class TrainingDiverged(RuntimeError):
    def __init__(self, step: int, loss: float) -> None:
        self.step, self.loss = step, loss
        super().__init__(f"non-finite training loss {loss} at step {step}")


@dataclass(frozen=True)
class StepResult:
    step: int  # optimizer updates done so far
    loss: float
    lr: float


def answer_logits_and_targets(
    logits: Float[torch.Tensor, "n seq vocab"], tokens: Int[torch.Tensor, "n seq"], target_mask: Bool[torch.Tensor, "n seq"]
) -> tuple[Float[torch.Tensor, "k vocab"], Int[torch.Tensor, " k"]]:
    """The logits that predict answer tokens and those tokens: position t-1 predicts token t."""
    mask = target_mask[:, 1:]
    return logits[:, :-1][mask], tokens[:, 1:][mask]


def answer_loss(logits: torch.Tensor, tokens: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    predicted, targets = answer_logits_and_targets(logits, tokens, target_mask)
    return F.cross_entropy(predicted.float(), targets)


def autocast_context(device: torch.device, autocast: str | None) -> contextlib.AbstractContextManager:
    if autocast == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class BatchOrder:
    """Epoch-wise shuffles drawn from (seed, epoch): stateless, so resuming needs no RNG state."""

    def __init__(self, n_examples: int, batch_size: int | None, seed: int) -> None:
        self.n = n_examples
        self.batch_size = batch_size or n_examples
        self.seed = seed
        self._epoch: int | None = None
        self._permutation: torch.Tensor | None = None

    def _epoch_permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._permutation = epoch, torch.randperm(self.n, generator=generator)
        assert self._permutation is not None
        return self._permutation

    def indices(self, step: int) -> torch.Tensor:
        if self.batch_size >= self.n:
            return torch.arange(self.n)
        start = step * self.batch_size
        parts, taken = [], 0
        while taken < self.batch_size:
            epoch, offset = divmod(start + taken, self.n)
            part = self._epoch_permutation(epoch)[offset : offset + self.batch_size - taken]
            parts.append(part)
            taken += len(part)
        return torch.cat(parts)


class Trainer:
    def __init__(self, model: torch.nn.Module, train: Split, spec: TrainingSpec, seed: int, device: torch.device) -> None:
        self.model = model
        self.spec = spec
        self.device = device
        self.tokens = train.tokens.to(device)
        self.target_mask = train.target_mask.to(device)
        self.order = BatchOrder(len(train), spec.batch_size, seed)
        self.optimizer = build_optimizer(spec.optimizer, list(model.parameters()), model)
        self.scheduler = build_scheduler(spec.lr_schedule, self.optimizer, spec.steps)
        self.step = 0

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def train_step(self) -> StepResult:
        index = self.order.indices(self.step).to(self.device)
        tokens, mask = self.tokens[index], self.target_mask[index]
        self.model.train()
        with autocast_context(self.device, self.spec.autocast):
            logits = self.model(tokens)
        loss = answer_loss(logits, tokens, mask)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise TrainingDiverged(self.step + 1, loss_value)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.spec.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.spec.grad_clip)
        lr = self.lr
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return StepResult(step=self.step, loss=loss_value, lr=lr)

    def steps(self) -> Iterator[StepResult]:
        while self.step < self.spec.steps:
            yield self.train_step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "trainer_step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["trainer_step"])
