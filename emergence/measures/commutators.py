"""Two commutator signals from the spectral-edge author's later replications (METHODS.md, "Spectral edge").

- ``commutator_defect``: how much two plain SGD steps on different minibatches fail to commute,
  D = ||theta_AB - theta_BA|| / (||eta g_A|| ||eta g_B||), median over K pairs of fresh minibatches.
- ``qk_commutator``: ||W_Q W_K - W_K W_Q||_F per layer, the heads' query and key weights stacked into
  square d_model x d_model matrices.

Both read the model and leave it as they found it: the defect differentiates the loss at shifted
parameters through ``functional_call``, never writing into the model's own tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from jaxtyping import Float
from torch.func import functional_call

from emergence.measures.base import Measure, MeasureContext, MeasureOptions, MeasureSetup
from emergence.measures.curvature import measurement_generator, select_parameters
from emergence.measures.parameters import evaluation_mode
from emergence.train.loop import answer_loss

# The defect's key; its onset rule is declared in CommutatorDefectOptions.onset_rules.
DEFECT_KEY = "commutator/defect"
QK_KEY = "commutator/qk"
# Keeps the defect's random minibatches apart from other measures' draws seeded by (run seed, step).
DEFECT_SEED_TAG = 0xC0DE

# The loss of one minibatch (a tensor of example indices) at the given parameters (named_parameters() names).
MinibatchLoss = Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]


def flat_gradient(loss_at: MinibatchLoss, params: dict[str, torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
    """The gradient of the minibatch loss at ``params``, flattened in the dict's order; zeros for a
    parameter the loss does not reach (it keeps its place, so every gradient has the same length)."""
    leaves = {name: tensor.detach().requires_grad_(True) for name, tensor in params.items()}
    with torch.enable_grad():
        loss = loss_at(leaves, batch)
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, leaves.values(), strict=True)])


def shifted(params: dict[str, torch.Tensor], step: torch.Tensor) -> dict[str, torch.Tensor]:
    """``params + step``, with the flat ``step`` cut back into the parameters' shapes."""
    out, start = {}, 0
    for name, tensor in params.items():
        out[name] = tensor.detach() + step[start : start + tensor.numel()].view_as(tensor).to(tensor.dtype)
        start += tensor.numel()
    return out


def commutator_defect(
    loss_at: MinibatchLoss, params: dict[str, torch.Tensor], batch_a: torch.Tensor, batch_b: torch.Tensor, lr: float
) -> float:
    """D = ||theta_AB - theta_BA|| / (||eta g_A|| ||eta g_B||) for one pair of minibatches.

    theta_AB = theta - eta g_A(theta) - eta g_B(theta - eta g_A(theta)), theta_BA with A and B swapped. The
    difference is formed from gradients alone, theta_AB - theta_BA = eta [(g_A(theta - eta g_B) - g_A(theta))
    - (g_B(theta - eta g_A) - g_B(theta))], and summed in float64: forming theta_AB and theta_BA first would
    subtract two float32 vectors of size ||theta|| to find a difference of size eta^2 ||H g||, which at
    eta = 1e-3 is below float32's resolution of theta. NaN when a gradient is zero (no step to commute).
    """
    g_a = flat_gradient(loss_at, params, batch_a)
    g_b = flat_gradient(loss_at, params, batch_b)
    g_a_after_b = flat_gradient(loss_at, shifted(params, -lr * g_b), batch_a)
    g_b_after_a = flat_gradient(loss_at, shifted(params, -lr * g_a), batch_b)
    difference = lr * ((g_a_after_b.double() - g_a.double()) - (g_b_after_a.double() - g_b.double()))
    scale = float(lr * g_a.double().norm()) * float(lr * g_b.double().norm())
    return float(difference.norm()) / scale if scale > 0 else math.nan


class CommutatorDefect(Measure, declared="commutator_defect"):
    """Fresh minibatches at every call, drawn from (run seed, step), so a resumed run draws the same ones."""

    needs_task = True  # minibatches of the run's training data
    monitor_inputs = ("loss_fn",)  # under a Monitor: minibatches of the user's diagnostic batch

    def __init__(self, options: MeasureOptions, setup: MeasureSetup) -> None:
        super().__init__(options, setup)
        if setup.loss is not None:
            self.n_examples = setup.loss.n
        else:
            self.tokens = setup.task.train.tokens.to(setup.device)
            self.target_mask = setup.task.train.target_mask.to(setup.device)
            self.n_examples = len(setup.task.train)
        if self.n_examples < 2:
            raise ValueError("commutator_defect: needs at least two examples to draw two different minibatches")
        # Each minibatch at most half the data, so that A and B always differ (D of two equal batches is 0).
        self.batch_size = min(self.options.batch_size, self.n_examples // 2)

    def _loss(self, model: torch.nn.Module, frozen: dict[str, torch.Tensor]) -> MinibatchLoss:
        if self.setup.loss is not None:
            loss = self.setup.loss
            return lambda params, batch: loss.mean({**frozen, **params}, batch)

        def loss_at(params: dict[str, torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
            tokens, mask = self.tokens[batch], self.target_mask[batch]
            # tie_weights=False: on a TransformerBridge the default detaches the parameters (DESIGN.md).
            logits = functional_call(model, {**frozen, **params}, (tokens,), tie_weights=False)
            return answer_loss(logits, tokens, mask)

        return loss_at

    def compute(self, context: MeasureContext) -> dict[str, float]:
        generator = measurement_generator(self.setup.seed * 65_537 + DEFECT_SEED_TAG, context.step)
        with evaluation_mode(context.model):
            selected = select_parameters(context.model, self.options.parameters)
            frozen = {name: p.detach() for name, p in context.model.named_parameters() if name not in selected}
            loss_at = self._loss(context.model, frozen)
            defects = []
            for _ in range(self.options.pairs):
                # A and B disjoint: one permutation, cut in two.
                order = torch.randperm(self.n_examples, generator=generator).to(self.setup.device)
                batch_a, batch_b = order[: self.batch_size], order[self.batch_size : 2 * self.batch_size]
                defects.append(commutator_defect(loss_at, selected, batch_a, batch_b, self.options.lr))
        finite = [d for d in defects if math.isfinite(d)]
        return {DEFECT_KEY: float(np.median(finite)) if finite else math.nan}


# -- the QK commutator ----------------------------------------------------------------------------


def folded(weights: Float[torch.Tensor, "heads d_model d_head"]) -> Float[torch.Tensor, "heads_x_d_head d_model"]:
    """TransformerLens's per-head W_Q (or W_K) as one matrix in nn.Linear's layout, rows = head outputs:
    row h * d_head + j is head h's output j. Square when n_heads * d_head = d_model."""
    heads, d_model, d_head = weights.shape
    return weights.permute(0, 2, 1).reshape(heads * d_head, d_model)


def commutator_norm(a: torch.Tensor, b: torch.Tensor) -> float:
    """||AB - BA||_F in float64 (the same for A^T, B^T: (AB - BA)^T = B^T A^T - A^T B^T)."""
    a, b = a.double(), b.double()
    return float(torch.linalg.matrix_norm(a @ b - b @ a))


def qk_commutator_norms(
    w_q: Float[torch.Tensor, "heads d_model d_head"], w_k: Float[torch.Tensor, "heads d_model d_head"], per_head: bool
) -> dict[str, float]:
    """``{"": layer norm}`` and, with ``per_head``, ``{"H{h}": ...}``: each head's d_head x d_head diagonal
    block of the folded matrices (rows of head h, input columns h * d_head ...), the replications' convention.
    That block depends on the basis of the residual stream, so read it as a description, not an invariant."""
    q, k = folded(w_q), folded(w_k)
    if q.shape[0] != q.shape[1]:
        raise ValueError(f"qk_commutator: n_heads * d_head = {q.shape[0]} is not d_model = {q.shape[1]}; the matrices are not square")
    values = {"": commutator_norm(q, k)}
    if per_head:
        d_head = w_q.shape[2]
        for head in range(w_q.shape[0]):
            block = slice(head * d_head, (head + 1) * d_head)
            values[f"H{head}"] = commutator_norm(q[block, block], k[block, block])
    return values


class QKCommutator(Measure, declared="qk_commutator"):
    """Reads the TransformerLens weights ``W_Q``, ``W_K`` ([layers, heads, d_model, d_head]) of the model."""

    def __init__(self, options: MeasureOptions, setup: MeasureSetup) -> None:
        super().__init__(options, setup)
        layers = options.layers
        self.layers = list(range(setup.n_layers)) if layers == "all" else list(layers)
        unknown = [layer for layer in self.layers if not 0 <= layer < setup.n_layers]
        if unknown:
            raise ValueError(f"qk_commutator: layers {unknown} do not exist; the model has {setup.n_layers}")

    def compute(self, context: MeasureContext) -> dict[str, float]:
        model = context.model
        if not (hasattr(model, "W_Q") and hasattr(model, "W_K")):
            raise ValueError("qk_commutator: needs a TransformerLens model (stacked W_Q and W_K); this model has neither")
        with torch.no_grad():
            w_q, w_k = model.W_Q, model.W_K
            values = {}
            for layer in self.layers:
                for suffix, value in qk_commutator_norms(w_q[layer], w_k[layer], self.options.per_head).items():
                    values[f"{QK_KEY}/L{layer}" + (f"/{suffix}" if suffix else "")] = value
        return values
