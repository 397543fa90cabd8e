"""Optimizers and learning-rate schedules named in a spec."""

from __future__ import annotations

import math

import torch

from emergence.spec.schema import LRScheduleSpec, OptimizerSpec


def build_optimizer(spec: OptimizerSpec, parameters: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if spec.name == "adamw":
        return torch.optim.AdamW(parameters, lr=spec.lr, weight_decay=spec.weight_decay, betas=spec.betas)
    return torch.optim.SGD(parameters, lr=spec.lr, weight_decay=spec.weight_decay, momentum=spec.momentum)


def lr_multiplier(spec: LRScheduleSpec, step: int, total_steps: int) -> float:
    """The factor on the base learning rate for optimizer step ``step`` (0-based)."""
    if step < spec.warmup_steps:
        return (step + 1) / spec.warmup_steps
    if spec.name == "constant":
        return 1.0
    decay_steps = max(1, total_steps - spec.warmup_steps)
    progress = min(1.0, (step - spec.warmup_steps) / decay_steps)
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if spec.name == "cosine" else 1.0 - progress
    return spec.min_lr_ratio + (1.0 - spec.min_lr_ratio) * shape


def build_scheduler(spec: LRScheduleSpec, optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(spec, step, total_steps))
