"""Gradient geometry: effective rank of the per-example gradients (Fisher) and of their covariance.

Definitions in METHODS.md ("Gradient geometry and curvature"). Per-example gradients g_i of the
answer log-likelihood come from ``torch.func.vmap(torch.func.grad(...))`` over
``functional_call(model, params, ..., tie_weights=False)``; without ``tie_weights=False`` a
TransformerBridge is left holding the substituted tensors in place of its own parameters afterwards
(DESIGN.md: it detaches them), which a test catches. The rank is RankMe of
the square roots of the eigenvalues of the n x n Gram matrix G = g g^T / n, which are the singular
values of g / sqrt(n), so the number is ``geometry.rankme(g)`` without an SVD of the n x P matrix.

Memory: the n x P gradient matrix is kept (float32, on the model's device) because G needs every pair
of examples; vmap runs ``chunk_size`` examples at a time, so activation memory is bounded by the chunk.
The Gram is accumulated in float64 over column blocks so small eigenvalues are not lost to rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int

from emergence.measures.base import Measure, MeasureContext, MeasureOptions, MeasureSetup
from emergence.measures.geometry import rankme
from emergence.measures.parameters import ParameterSlice, evaluation_mode, matches_prefix, readable_name
from emergence.tasks.base import Split

GRAM_COLUMN_BLOCK = 16_384  # float64 copies of at most n x this many gradient entries at once

LogLikelihood = Callable[..., torch.Tensor]  # (params, *one_example_inputs) -> scalar


# -- pure functions ------------------------------------------------------------------------------


def answer_log_likelihood(
    logits: Float[torch.Tensor, "seq vocab"],
    tokens: Int[torch.Tensor, " seq"],
    target_mask: Bool[torch.Tensor, " seq"],
) -> torch.Tensor:
    """Sum over one example's answer positions of log p(target); position t-1 predicts token t.

    Masks by multiplication, not boolean indexing, because vmap cannot batch data-dependent shapes.
    """
    log_probs = F.log_softmax(logits[:-1].float(), dim=-1)
    target_log_probs = log_probs.gather(-1, tokens[1:, None])[:, 0]
    return (target_log_probs * target_mask[1:].to(target_log_probs.dtype)).sum()


def per_example_gradients(
    log_likelihood: LogLikelihood,
    params: dict[str, torch.Tensor],
    selection: Sequence[ParameterSlice],
    example_inputs: Sequence[torch.Tensor],
    chunk_size: int,
) -> Float[torch.Tensor, "n n_selected"]:
    """Row i: the gradient of ``log_likelihood(params, *(x[i] for x in example_inputs))``, flattened.

    Only the parameters named in ``selection`` are differentiated (the rest are passed as constants,
    which saves the backward work through them); columns follow ``selection``'s order.
    """
    differentiated = {s.name: params[s.name] for s in selection}
    constant = {name: value for name, value in params.items() if name not in differentiated}

    def example_log_likelihood(variables: dict[str, torch.Tensor], *inputs: torch.Tensor) -> torch.Tensor:
        return log_likelihood({**constant, **variables}, *inputs)

    batched_grad = torch.func.vmap(torch.func.grad(example_log_likelihood), in_dims=(None, *[0] * len(example_inputs)))
    n = int(example_inputs[0].shape[0])
    rows = []
    for start in range(0, n, chunk_size):
        chunk = [x[start : start + chunk_size] for x in example_inputs]
        grads = batched_grad(differentiated, *chunk)
        rows.append(torch.cat([grads[s.name].reshape(len(chunk[0]), -1)[:, : s.count] for s in selection], dim=1))
        del grads  # the full-tensor gradients of a partly selected parameter can be much bigger than the kept slice
    return torch.cat(rows)


def gradient_gram(gradients: Float[torch.Tensor, "n p"], centre: bool) -> np.ndarray:
    """G = g g^T / n in float64; with ``centre``, the same for g minus its mean over examples (rows).

    Each column block is centred in float64 before its product is added: centring G afterwards
    (H G H) is algebraically the same but, when the mean gradient dominates, cancels large numbers
    and leaves rounding noise that RankMe's square roots amplify into spurious small singular values.
    """
    n, p = gradients.shape
    gram = torch.zeros(n, n, dtype=torch.float64, device=gradients.device)
    for start in range(0, p, GRAM_COLUMN_BLOCK):
        block = gradients[:, start : start + GRAM_COLUMN_BLOCK].double()
        if centre:
            block = block - block.mean(dim=0, keepdim=True)
        gram += block @ block.T
    return gram.cpu().numpy() / n


def rankme_of_gram(gram: np.ndarray, n_parameters: int) -> float:
    """RankMe of the sqrt eigenvalues of G = g g^T / n, i.e. of the singular values of g / sqrt(n).

    Keeps the top min(n, P) eigenvalues, the count of singular values g has, so the result equals
    ``geometry.rankme(g)`` (RankMe's epsilon touches every singular value, zeros included).
    ``rankme`` of a diagonal matrix is RankMe of its diagonal: the definition is reused, not copied.
    """
    if not np.isfinite(gram).all():
        return float("nan")
    eigenvalues = np.linalg.eigvalsh((gram + gram.T) / 2)[::-1][: min(len(gram), n_parameters)]
    singular_values = np.sqrt(np.clip(eigenvalues, 0.0, None))  # rounding can make zero eigenvalues slightly negative
    return rankme(np.diag(singular_values))


def first_parameters(named_shapes: Sequence[tuple[str, int]], limit: int | None) -> list[ParameterSlice]:
    """The first ``limit`` scalars in the given (named_parameters) order; the last tensor may be cut."""
    selection, remaining = [], limit
    for name, numel in named_shapes:
        if remaining is not None and remaining <= 0:
            break
        count = numel if remaining is None else min(numel, remaining)
        selection.append(ParameterSlice(name, count))
        if remaining is not None:
            remaining -= count
    return selection


def select_parameters(
    named_shapes: Sequence[tuple[str, int]], parameters: Literal["first"] | Sequence[str], limit: int | None
) -> list[ParameterSlice]:
    """The parameter subset of ``grad_cov_rank``: the first ``limit`` scalars of everything or of a named set."""
    if parameters == "first":
        return first_parameters(named_shapes, limit)
    unmatched = [prefix for prefix in parameters if not any(matches_prefix(name, prefix) for name, _ in named_shapes)]
    if unmatched:
        names = ", ".join(readable_name(name) for name, _ in named_shapes)
        raise ValueError(f"parameter prefixes {unmatched} match no parameter; parameters are: {names}")
    chosen = [(name, numel) for name, numel in named_shapes if any(matches_prefix(name, p) for p in parameters)]
    return first_parameters(chosen, limit)


# -- the model side ------------------------------------------------------------------------------


def model_log_likelihood(model: torch.nn.Module) -> LogLikelihood:
    """(params, tokens[seq], target_mask[seq]) -> the example's answer log-likelihood under ``params``."""

    def log_likelihood(params: dict[str, torch.Tensor], tokens: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
        logits = torch.func.functional_call(model, params, (tokens[None],), tie_weights=False)[0]
        return answer_log_likelihood(logits, tokens, target_mask)

    return log_likelihood


def model_gradients(
    model: torch.nn.Module, split: Split, selection: Sequence[ParameterSlice] | None, chunk_size: int
) -> Float[torch.Tensor, "n p"]:
    """Per-example answer log-likelihood gradients of ``model`` on ``split``; None selects every parameter.

    The model is only read: detached copies of its parameters are differentiated, so its
    parameters, requires_grad flags and .grad are left alone.
    """
    params = {name: p.detach() for name, p in model.named_parameters()}
    if selection is None:
        selection = [ParameterSlice(name, p.numel()) for name, p in params.items()]
    device = next(iter(params.values())).device
    inputs = (split.tokens.to(device), split.target_mask.to(device))
    with evaluation_mode(model):
        return per_example_gradients(model_log_likelihood(model), params, selection, inputs, chunk_size)


# -- measures ------------------------------------------------------------------------------------


class GradientMeasure(Measure):
    family: ClassVar[str] = "gradient"
    needs_task = True  # the diagnostic set's answer tokens, for the log-likelihood of each example
    monitor_inputs = ("per_example_loss",)  # under a Monitor: the gradient of each diagnostic example's loss

    def __init__(self, options: MeasureOptions, setup: MeasureSetup) -> None:
        super().__init__(options, setup)
        self.index = self._choose_examples()

    def _choose_examples(self) -> torch.Tensor:
        """A subset drawn once from the run seed, not per step: every step sees the same examples,
        so a change in the series is a change in the model, not in the sample."""
        n_total = len(self.setup.task.diagnostic) if self.setup.loss is None else self.setup.loss.n
        n_examples = self.options.n_examples
        if n_examples is None or n_examples >= n_total:
            return torch.arange(n_total)
        generator = torch.Generator().manual_seed(self.setup.seed * 1_000_003 + 17)
        return torch.randperm(n_total, generator=generator)[:n_examples].sort().values

    def _gradients(self, model: torch.nn.Module, selection: Sequence[ParameterSlice] | None) -> Float[torch.Tensor, "n p"]:
        """Per-example gradients of the chosen examples: of the answer log-likelihood in a trained run, of
        the user's per-example loss under a Monitor (a sign apart, the Gram matrix is the same)."""
        loss = self.setup.loss
        if selection is None:  # frozen parameters are left out, as the curvature and the LLC leave them
            selection = [ParameterSlice(name, p.numel()) for name, p in model.named_parameters() if p.requires_grad]
        if loss is None:
            return model_gradients(model, self.setup.task.diagnostic.subset(self.index), selection, self.options.chunk_size)
        with evaluation_mode(model):
            return loss.per_example_gradients(selection, self.index, self.options.chunk_size)

    def _values(self, gram: np.ndarray, n_parameters: int) -> dict[str, float]:
        key = f"{self.family}/{self.name}"
        return {key: rankme_of_gram(gram, n_parameters), f"{key}/trace": float(np.trace(gram))}


class FisherRank(GradientMeasure, declared="fisher_rank"):
    """``/trace`` is tr G, the mean squared per-example gradient norm: the scale RankMe divides out."""

    def compute(self, context: MeasureContext) -> dict[str, float]:
        gradients = self._gradients(context.model, None)
        return self._values(gradient_gram(gradients, centre=False), gradients.shape[1])


class GradCovRank(GradientMeasure, declared="grad_cov_rank"):
    """``/trace`` is the total variance of the per-example gradients; ``/n_parameters`` the subset's size."""

    def compute(self, context: MeasureContext) -> dict[str, float]:
        named_shapes = [(name, p.numel()) for name, p in context.model.named_parameters() if p.requires_grad]
        selection = select_parameters(named_shapes, self.options.parameters, self.options.max_parameters)
        gradients = self._gradients(context.model, selection)
        n_parameters = gradients.shape[1]
        values = self._values(gradient_gram(gradients, centre=True), n_parameters)
        return {**values, f"{self.family}/{self.name}/n_parameters": float(n_parameters)}
