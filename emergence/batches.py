"""A monitored model's diagnostic batch, whatever its shape: a tensor, a tuple of positional inputs, or a
mapping of keyword inputs (a tokenizer's output). How many examples it holds, a subset of them, and how the
model takes it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def batch_size(batch: Any) -> int:
    """How many examples a batch holds: the first axis of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    items = batch.values() if isinstance(batch, Mapping) else batch
    for item in items:
        if isinstance(item, torch.Tensor):
            return int(item.shape[0])
    raise ValueError(f"diagnostic: no tensor in the batch ({type(batch).__name__})")


def select_examples(batch: Any, index: torch.Tensor) -> Any:
    """The examples ``index`` picks, in the batch's own shape: every tensor whose first axis is the batch's
    is indexed along it; anything else (a flag, a tensor of another length) passes as it is."""
    n = batch_size(batch)

    def pick(item: Any) -> Any:
        if isinstance(item, torch.Tensor) and item.ndim > 0 and item.shape[0] == n:
            return item[index.to(item.device)]
        return item

    if isinstance(batch, torch.Tensor):
        return pick(batch)
    if isinstance(batch, Mapping):
        return {key: pick(value) for key, value in batch.items()}
    items = [pick(item) for item in batch]
    return type(batch)(*items) if hasattr(batch, "_fields") else type(batch)(items)  # a namedtuple takes fields


def call_model(model: torch.nn.Module, batch: Any) -> Any:
    """``model(**batch)`` for a mapping (a tokenizer's output), ``model(*batch)`` for a tuple, else ``model(batch)``."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, tuple):
        return model(*batch)
    return model(batch)
