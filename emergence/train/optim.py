"""Optimizers and learning-rate schedules named in a spec."""

from __future__ import annotations

import math
from typing import Any

import torch

from emergence.spec.schema import LRScheduleSpec, OptimizerSpec


def build_optimizer(spec: OptimizerSpec, parameters: list[torch.nn.Parameter], model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
    """The spec's optimizer over ``parameters``; Muon also needs the ``model``, to tell its hidden matrices apart."""
    if spec.name == "adamw":
        return torch.optim.AdamW(parameters, lr=spec.lr, weight_decay=spec.weight_decay, betas=spec.betas)
    if spec.name == "muon":
        if model is None:
            raise ValueError("Muon needs the model to split its parameters into hidden matrices and the rest")
        return MuonWithAdamW(model, spec, parameters)
    return torch.optim.SGD(parameters, lr=spec.lr, weight_decay=spec.weight_decay, momentum=spec.momentum)


def output_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules that map the residual stream to the vocabulary: a TransformerBridge's unembedding, a
    Hugging Face model's output embeddings. They are matrices, but Muon is for hidden layers only."""
    found = []
    unembed = getattr(model, "unembed", None)
    if isinstance(unembed, torch.nn.Module):
        found.append(getattr(unembed, "original_component", None) or unembed)
    output_embeddings = getattr(model, "get_output_embeddings", None)
    if callable(output_embeddings) and isinstance(head := output_embeddings(), torch.nn.Module):
        found.append(head)
    return found


def muon_split(model: torch.nn.Module, parameters: list[torch.nn.Parameter]) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """(hidden matrices, the rest) of ``parameters``, in their given order.

    Hidden matrices are the weights of the ``nn.Linear`` layers other than the output layer: attention
    Q, K, V, O and the MLP's two matrices. Embeddings (``nn.Embedding``, 2-D too), the unembedding, biases
    and norm scales go to AdamW, as Muon's authors prescribe (``torch.optim.Muon`` refuses non-2-D tensors
    and would orthogonalise an embedding's rows, which are looked up one at a time, as if they were one map).
    """
    excluded = {id(p) for head in output_modules(model) for p in head.parameters()}
    hidden_ids = {
        id(module.weight)
        for module in model.modules()
        if isinstance(module, torch.nn.Linear) and module.weight.ndim == 2 and id(module.weight) not in excluded
    }
    hidden = [p for p in parameters if id(p) in hidden_ids]
    rest = [p for p in parameters if id(p) not in hidden_ids]
    return hidden, rest


class MuonWithAdamW(torch.optim.Optimizer):
    """One optimizer to the training loop, its scheduler and checkpoints: Muon for the hidden matrices, AdamW
    for the rest, with the spec's learning rate, weight decay and betas.

    Muon's rate is adjusted by shape with ``match_rms_adamw`` (0.2 sqrt(max(rows, cols))), the Moonlight
    rule that makes its update's RMS match AdamW's, so both parts take the same rate and weight decay. The
    two parts' parameter groups are this optimizer's groups (the same dicts), so an LR schedule moves both.
    """

    def __init__(self, model: torch.nn.Module, spec: OptimizerSpec, parameters: list[torch.nn.Parameter]) -> None:
        hidden, rest = muon_split(model, parameters)
        if not hidden:
            raise ValueError("Muon found no hidden matrices (nn.Linear weights besides the output layer) to optimise")
        self.muon = torch.optim.Muon(
            hidden, lr=spec.lr, weight_decay=spec.weight_decay, momentum=spec.momentum, nesterov=True, adjust_lr_fn="match_rms_adamw"
        )
        self.adamw = torch.optim.AdamW(rest, lr=spec.lr, weight_decay=spec.weight_decay, betas=spec.betas) if rest else None
        parts = [self.muon] + ([self.adamw] if self.adamw is not None else [])
        super().__init__([{"params": list(group["params"])} for part in parts for group in part.param_groups], {})
        self.param_groups = [group for part in parts for group in part.param_groups]
        self._parts = parts

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for part in self._parts:
            part.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self._parts:
            part.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"muon": self.muon.state_dict(), "adamw": None if self.adamw is None else self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        if set(state_dict) != {"muon", "adamw"}:
            raise ValueError(f"not a Muon + AdamW optimizer state (keys {sorted(state_dict)}): was the run saved with another optimizer?")
        self.muon.load_state_dict(state_dict["muon"])
        if self.adamw is not None:
            self.adamw.load_state_dict(state_dict["adamw"])


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
