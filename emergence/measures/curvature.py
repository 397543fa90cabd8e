"""Loss curvature: the top Hessian eigenvalue (Lanczos) and the Hessian trace (Hutchinson).

Definitions in METHODS.md ("Gradient geometry and curvature"). Both measures see only Hessian-vector
products of the answer loss on one fixed training batch, never the Hessian itself: the shipped models
have ~10^5 parameters, so the matrix would not fit, while one product costs about two backward passes.

The products come from double backward: the gradient is built once with ``create_graph=True`` and
every product differentiates ``<grad, v>`` through that same graph, so Lanczos and Hutchinson pay for
one forward pass per measurement rather than one per product.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from emergence.measures.base import (
    Measure,
    MeasureContext,
    MeasureOptions,
    MeasureSetup,
    fixed_subset,
    fixed_train_subset,
)
from emergence.measures.monitored_loss import MonitoredLoss
from emergence.measures.parameters import evaluation_mode, matches_prefix
from emergence.train.loop import answer_loss

MatVec = Callable[[torch.Tensor], torch.Tensor]
# Relative size below which a new Lanczos direction counts as zero: the Krylov space is exhausted
# (an invariant subspace), so the Ritz values are exact and further steps would divide by noise.
BREAKDOWN = 1e-10


# -- pure numerics on a symmetric operator given as a matrix-vector product ------------------------


@dataclass(frozen=True)
class TopEigenvalue:
    value: float  # the largest (algebraic) Ritz value
    iterations: int  # operator products spent by Lanczos, not counting the residual check
    residual: float  # ||H y - value * y|| / |value| for the unit Ritz vector y, from one extra product
    vector: torch.Tensor  # the unit Ritz vector y, float64


def lanczos_top_eigenvalue(
    matvec: MatVec,
    dim: int,
    max_iterations: int,
    tolerance: float,
    generator: torch.Generator,
    device: torch.device,
) -> TopEigenvalue:
    """Largest eigenvalue of the symmetric operator ``matvec`` by Lanczos with full reorthogonalisation.

    "Top" means the largest algebraic eigenvalue (the sharpness), not the largest in magnitude: a
    saddle's big negative direction is not what a step size has to fit under. Stops when the Ritz
    pair's residual estimate ``beta_k |s_k|`` falls to ``tolerance * |value|`` (this bounds the
    eigenvalue's relative error by ``tolerance``; a small change between iterations does not, since
    Lanczos can stall before it finds an outlier), when the Krylov space is exhausted, or after
    ``max_iterations``. The basis is kept in float64 and fully reorthogonalised: with at most a few
    dozen vectors this costs less than one product and removes Lanczos' spurious copies of converged
    eigenvalues. The start vector is Gaussian from ``generator`` (drawn on the CPU, so a seed gives
    the same start on every device).
    """
    if dim == 0:
        raise ValueError("the operator has no dimensions (no parameters selected?)")
    start = torch.randn(dim, generator=generator, dtype=torch.float64).to(device)
    basis = [start / start.norm()]
    alphas: list[float] = []
    betas: list[float] = []  # betas[k] couples basis[k] and basis[k + 1]
    ritz_values = ritz_vectors = None
    iterations = 0
    for _ in range(min(max_iterations, dim)):
        q = basis[-1]
        w = matvec(q).to(torch.float64)
        iterations += 1
        alpha = float(q @ w)
        alphas.append(alpha)
        w = w - alpha * q - (betas[-1] * basis[-2] if betas else 0.0)
        stacked = torch.stack(basis)
        for _ in range(2):  # classical Gram-Schmidt twice: enough in float64 ("twice is enough")
            w = w - stacked.T @ (stacked @ w)
        beta = float(w.norm())
        ritz_values, ritz_vectors = torch.linalg.eigh(tridiagonal(alphas, betas))
        value = float(ritz_values[-1])
        scale = max(abs(value), float(ritz_values.abs().max()), 1e-300)
        if beta <= BREAKDOWN * scale or beta * abs(float(ritz_vectors[-1, -1])) <= tolerance * abs(value):
            break
        betas.append(beta)
        basis.append(w / beta)
    assert ritz_values is not None and ritz_vectors is not None
    value = float(ritz_values[-1])
    vector = torch.stack(basis[: len(alphas)]).T @ ritz_vectors[:, -1].to(device)
    vector = vector / vector.norm()
    residual_norm = float((matvec(vector).to(torch.float64) - value * vector).norm())
    return TopEigenvalue(value, iterations, relative(residual_norm, value), vector)


def tridiagonal(alphas: Sequence[float], betas: Sequence[float]) -> torch.Tensor:
    """The Lanczos matrix T_k: ``alphas`` on the diagonal, the first k-1 ``betas`` beside it."""
    k = len(alphas)
    off = torch.tensor(list(betas[: k - 1]), dtype=torch.float64)
    return torch.diag(torch.tensor(list(alphas), dtype=torch.float64)) + torch.diag(off, 1) + torch.diag(off, -1)


def relative(residual_norm: float, value: float) -> float:
    if value != 0:
        return residual_norm / abs(value)
    return 0.0 if residual_norm == 0 else math.inf


@dataclass(frozen=True)
class TraceEstimate:
    estimate: float  # mean of z^T H z over the probes
    standard_error: float  # sample standard deviation / sqrt(n_probes); NaN with one probe
    n_probes: int


def hutchinson_trace(matvec: MatVec, dim: int, n_probes: int, generator: torch.Generator, device: torch.device) -> TraceEstimate:
    """Hutchinson's estimator tr H = E[z^T H z] with Rademacher z (entries +-1, drawn on the CPU).

    Rademacher rather than Gaussian probes: the variance is 2 * sum_{i != j} H_ij^2, with no diagonal
    term, so it is the lower-variance choice and is exact for a diagonal H.
    """
    samples = []
    for _ in range(n_probes):
        z = (torch.randint(0, 2, (dim,), generator=generator, dtype=torch.float64) * 2 - 1).to(device)
        samples.append(float(z @ matvec(z).to(torch.float64)))
    values = torch.tensor(samples, dtype=torch.float64)
    standard_error = float(values.std(correction=1) / math.sqrt(n_probes)) if n_probes > 1 else math.nan
    return TraceEstimate(float(values.mean()), standard_error, n_probes)


# -- Hessian-vector products of a loss of named parameters ----------------------------------------


class HessianVectorProduct:
    """v -> H v for the Hessian of ``loss_fn(params)`` at ``params``, on flat vectors.

    ``params`` are the leaves to differentiate (any tensors; they are detached here, so the caller's
    tensors, their ``requires_grad`` and ``.grad`` are never touched). The flat order is the dict's.
    The gradient graph is built once and reused by every product.
    """

    def __init__(self, loss_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor], params: dict[str, torch.Tensor]) -> None:
        self.names = list(params)
        self.leaves = [params[name].detach().requires_grad_(True) for name in self.names]
        self.shapes = [leaf.shape for leaf in self.leaves]
        self.dim = sum(leaf.numel() for leaf in self.leaves)
        self.dtype = self.leaves[0].dtype if self.leaves else torch.float32
        # A caller under no_grad would otherwise get a graph-less loss. PyTorch's fused attention kernels (the
        # default scaled_dot_product_attention of Hugging Face models) have no double backward; the math
        # kernel computes the same attention with ordinary, twice-differentiable operations.
        with torch.enable_grad(), sdpa_kernel([SDPBackend.MATH]):
            loss = loss_fn(dict(zip(self.names, self.leaves, strict=True)))
            if not loss.requires_grad:
                # The loss does not see the leaves: a detaching functional_call (tie_weights=True on a
                # bridge) lands here, and every product would silently be zero.
                raise RuntimeError("the loss does not depend on the selected parameters; products would be zero")
            gradients = torch.autograd.grad(loss, self.leaves, create_graph=True, allow_unused=True)
        self.loss = float(loss.detach())
        # A leaf the loss ignores, or one it sees only linearly, has no second derivatives; it keeps
        # its place in the flat vector but takes no part in the double backward.
        self._pairs = [(i, g) for i, g in enumerate(gradients) if g is not None and g.requires_grad]

    def __call__(self, vector: torch.Tensor) -> torch.Tensor:
        if not self._pairs:
            return torch.zeros(self.dim, dtype=vector.dtype, device=vector.device)
        parts = list(torch.split(vector.to(self.dtype), [leaf.numel() for leaf in self.leaves]))
        with torch.enable_grad():
            products = torch.autograd.grad(
                [g for _, g in self._pairs],
                self.leaves,
                grad_outputs=[parts[i].view(self.shapes[i]) for i, _ in self._pairs],
                retain_graph=True,
                allow_unused=True,
            )
        flat = [p.reshape(-1) if p is not None else torch.zeros_like(part) for p, part in zip(products, parts, strict=True)]
        return torch.cat(flat).to(vector.dtype)


def select_parameters(model: torch.nn.Module, prefixes: Literal["all"] | Sequence[str]) -> dict[str, torch.Tensor]:
    """Trainable parameters whose name starts with one of ``prefixes`` at a ``.`` boundary.

    A TransformerBridge reaches each parameter under several alias names
    (``layers.0.attn.q._original_component.weight`` and
    ``layers.0._original_component.attn._original_component.q._original_component.weight``); a prefix
    may match any of them, and the parameter is returned once, under ``named_parameters()``'s name.
    Matching whole dotted components keeps ``layers.1`` from also taking ``layers.10``. Frozen
    parameters are left out: training does not move along them.
    """
    aliases: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(parameter), []).append(name)
    selected, used = {}, set()
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if prefixes == "all":
            selected[name] = parameter
            continue
        for prefix in prefixes:
            if any(matches_prefix(alias, prefix) for alias in aliases[id(parameter)]):
                selected[name] = parameter
                used.add(prefix)
    unused = [p for p in ([] if prefixes == "all" else prefixes) if p not in used]
    if unused:
        raise ValueError(f"parameter prefixes {unused} match no trainable parameter; names look like {next(iter(aliases.values()))}")
    if not selected:
        raise ValueError("no trainable parameters selected")
    return selected


def model_loss_hvp(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    target_mask: torch.Tensor,
    prefixes: Literal["all"] | Sequence[str],
) -> HessianVectorProduct:
    """Hessian-vector products of ``answer_loss`` on one batch w.r.t. the selected parameters.

    The parameters enter through ``functional_call(..., tie_weights=False)`` as detached copies that
    share storage: the model's own tensors, flags and grads are untouched. ``tie_weights=False``: on
    a TransformerBridge the default can detach the parameters and leave every product zero.
    """
    selected = select_parameters(model, prefixes)
    # The rest pass as detached tensors so that no graph is kept for parameters nobody asked about.
    frozen = {name: p.detach() for name, p in model.named_parameters() if name not in selected}

    def loss_fn(params: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = functional_call(model, {**frozen, **params}, (tokens,), tie_weights=False)
        return answer_loss(logits, tokens, target_mask)

    return HessianVectorProduct(loss_fn, selected)


def measurement_generator(seed: int, step: int) -> torch.Generator:
    """Probes and start vectors depend on (run seed, step) only, like the training data order."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


# -- measures ------------------------------------------------------------------------------------


def monitored_loss_hvp(
    model: torch.nn.Module, loss: MonitoredLoss, index: torch.Tensor, prefixes: Literal["all"] | Sequence[str]
) -> HessianVectorProduct:
    """Hessian-vector products of a monitored model's mean loss (the user's ``loss_fn``) on the examples
    ``index`` picks from its diagnostic batch, w.r.t. the selected parameters; the model is only read."""
    selected = select_parameters(model, prefixes)
    frozen = {name: p.detach() for name, p in model.named_parameters() if name not in selected}
    return HessianVectorProduct(lambda params: loss.mean({**frozen, **params}, index), selected)


class CurvatureMeasure(Measure):
    needs_task = True  # a fixed batch of the run's training data
    monitor_inputs = ("loss_fn",)  # under a Monitor: the user's mean loss on a fixed part of the diagnostic batch

    def __init__(self, options: MeasureOptions, setup: MeasureSetup) -> None:
        super().__init__(options, setup)
        if setup.loss is not None:
            self.index = fixed_subset(setup.loss.n, self.options.batch_size, setup.seed)
            return
        batch = fixed_train_subset(setup.task.train, self.options.batch_size, setup.seed)
        self.tokens = batch.tokens.to(setup.device)
        self.target_mask = batch.target_mask.to(setup.device)

    def _hvp(self, model: torch.nn.Module) -> HessianVectorProduct:
        if self.setup.loss is not None:
            return monitored_loss_hvp(model, self.setup.loss, self.index, self.options.parameters)
        return model_loss_hvp(model, self.tokens, self.target_mask, self.options.parameters)


class HessianTop(CurvatureMeasure, declared="hessian_top"):
    def compute(self, context: MeasureContext) -> dict[str, float]:
        key = "curvature/hessian_top"
        with evaluation_mode(context.model):
            hvp = self._hvp(context.model)
            if not math.isfinite(hvp.loss):
                return {key: math.nan, f"{key}/iterations": 0.0, f"{key}/residual": math.nan}
            generator = measurement_generator(self.setup.seed, context.step)
            top = lanczos_top_eigenvalue(
                hvp,
                hvp.dim,
                self.options.max_iterations,
                self.options.tolerance,
                generator,
                self.setup.device,
            )
        return {key: top.value, f"{key}/iterations": float(top.iterations), f"{key}/residual": top.residual}


class HessianTrace(CurvatureMeasure, declared="hessian_trace"):
    def compute(self, context: MeasureContext) -> dict[str, float]:
        key = "curvature/hessian_trace"
        with evaluation_mode(context.model):
            hvp = self._hvp(context.model)
            if not math.isfinite(hvp.loss):
                return {key: math.nan, f"{key}/standard_error": math.nan, f"{key}/n_probes": 0.0}
            generator = measurement_generator(self.setup.seed, context.step)
            trace = hutchinson_trace(hvp, hvp.dim, self.options.n_probes, generator, self.setup.device)
        return {
            key: trace.estimate,
            f"{key}/standard_error": trace.standard_error,
            f"{key}/n_probes": float(trace.n_probes),
        }
