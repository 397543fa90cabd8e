"""The loss of a model that someone else's loop trains, for the measures that differentiate a loss.

``emergence.Monitor(..., loss_fn=...)`` takes ``loss_fn(model, batch) -> Tensor``: the loss of ``batch`` (the
Monitor's diagnostic batch, or a subset of its examples in the same shape) under ``model``. It returns one
number, the mean loss, or one per example (shape ``[n]``, a ``reduction="none"`` loss). The curvature and the
LLC need the first; the Fisher and gradient-covariance ranks need per-example losses, whose gradients are the
rows of their matrix.

The measures evaluate the loss at parameters of their own (an SGLD chain's, a Hessian's leaves) by
``functional_call`` on a wrapper module whose forward is ``loss_fn(self.model, batch)``: the user's function
runs unchanged while the model's parameters are swapped for the given tensors, and the model itself, its
``requires_grad`` flags and its ``.grad`` are never touched. Every alias of a shared parameter (tied input and
output embeddings) is given the same tensor, with ``tie_weights=False``: ties are kept, and a TransformerBridge
is not left holding substituted tensors (``gradients.py`` says why that matters).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.func import functional_call

from emergence.batches import batch_size, select_examples
from emergence.measures.parameters import ParameterSlice

LossFn = Callable[[torch.nn.Module, Any], torch.Tensor]


class LossInputError(ValueError):
    """``loss_fn`` cannot serve: it raised, or returned something that is neither a number nor one per example."""


class _LossOfModel(torch.nn.Module):
    """A module whose forward is the user's loss, so ``functional_call`` can swap the model's parameters."""

    def __init__(self, model: torch.nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> torch.Tensor:
        return self.loss_fn(self.model, batch)


def parameter_slots(model: torch.nn.Module) -> dict[str, list[str]]:
    """named_parameters() name -> one name for each module attribute that holds the parameter.

    Tied weights (an output layer that is the embedding) sit in two modules: both must get the substituted
    tensor. A TransformerBridge reaches one module under several paths (``blocks.0.ln1`` and
    ``layers.0._original_component.ln1``): that is one slot, and naming it twice would have
    ``functional_call`` restore it twice, the second time to the substitute, leaving the bridge holding a
    detached tensor in place of its parameter.
    """
    canonical = {id(p): name for name, p in model.named_parameters()}
    slots: dict[str, list[str]] = {}
    seen: set[tuple[int, str]] = set()
    for name, parameter in model.named_parameters(remove_duplicate=False):
        owner_path, _, attribute = name.rpartition(".")
        slot = (id(model.get_submodule(owner_path)), attribute)
        if slot not in seen:
            seen.add(slot)
            slots.setdefault(canonical[id(parameter)], []).append(name)
    return slots


class MonitoredLoss:
    """``loss_fn`` on the diagnostic batch of a monitored model, at any parameters and on any subset of examples.

    Built once, when the Monitor is: ``loss_fn`` is called on the whole batch to learn whether it gives one
    loss per example (``per_example``); a function that raises or returns another shape is refused here.
    """

    def __init__(self, model: torch.nn.Module, loss_fn: LossFn, batch: Any) -> None:
        self.model = model
        self.batch = batch
        self.n = batch_size(batch)
        self._module = _LossOfModel(model, loss_fn)
        self._aliases = parameter_slots(model)
        try:
            with torch.no_grad():
                value = self.losses(self.parameters(), torch.arange(self.n))
        except Exception as error:  # noqa: BLE001 - whatever the user's function raises, say it is the loss
            raise LossInputError(f"loss_fn: raised {type(error).__name__} on the diagnostic batch: {error}") from error
        if not isinstance(value, torch.Tensor) or value.shape not in (torch.Size([]), torch.Size([self.n])):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise LossInputError(
                f"loss_fn: returned {shape} on a diagnostic batch of {self.n} examples; "
                f"return one number (the mean loss) or one loss per example, shape [{self.n}]"
            )
        self.per_example = value.ndim == 1

    def parameters(self) -> dict[str, torch.Tensor]:
        """The model's parameters as they are now, detached, under their named_parameters() names."""
        return {name: p.detach() for name, p in self.model.named_parameters()}

    def losses(self, params: dict[str, torch.Tensor], index: torch.Tensor) -> torch.Tensor:
        """``loss_fn`` on the examples ``index`` picks, with the model's parameters replaced by ``params``
        (named_parameters() names; any left out keep the model's own)."""
        substituted = {f"model.{alias}": tensor for name, tensor in params.items() for alias in self._aliases[name]}
        batch = select_examples(self.batch, index)
        return functional_call(self._module, substituted, (batch,), tie_weights=False, strict=False)

    def mean(self, params: dict[str, torch.Tensor], index: torch.Tensor) -> torch.Tensor:
        """The mean loss over the examples ``index`` picks (each example weighs the same)."""
        value = self.losses(params, index)
        return value.mean() if value.ndim else value

    def per_example_gradients(self, selection: Sequence[ParameterSlice], index: torch.Tensor, chunk_size: int) -> torch.Tensor:
        """Row i: the gradient of example ``index[i]``'s loss w.r.t. the selected parameter slices, flattened.

        One forward pass per chunk of examples, then one backward pass per example through that chunk's
        graph (``retain_graph``): slower than ``vmap`` but it runs any model the user's loss runs, including
        ones vmap cannot batch (data-dependent control flow in a Hugging Face model's masks).
        """
        if not self.per_example:
            raise LossInputError("loss_fn returns one number; per-example gradients need one loss per example")
        params = self.parameters()
        rows = []
        for start in range(0, len(index), chunk_size):
            chunk = index[start : start + chunk_size]
            leaves = {s.name: params[s.name].detach().requires_grad_(True) for s in selection}
            with torch.enable_grad():
                losses = self.losses({**params, **leaves}, chunk)
                for i in range(len(chunk)):
                    grads = torch.autograd.grad(losses[i], list(leaves.values()), retain_graph=i < len(chunk) - 1, allow_unused=True)
                    rows.append(
                        torch.cat(
                            [
                                (g if g is not None else torch.zeros_like(leaves[s.name])).reshape(-1)[: s.count].detach()
                                for s, g in zip(selection, grads, strict=True)
                            ]
                        )
                    )
        return torch.stack(rows)
