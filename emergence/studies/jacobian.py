"""The training Jacobian J = dθ_T/dθ_0 of a whole training run (Belrose & Scherlis, arXiv 2412.07003).

Training is written here as a pure function of the initial parameter vector: SGD with momentum, the
momentum buffer carried as state, the learning rate of each step fixed in advance, the batches chosen by
step. Forward-mode autodiff (``torch.func.jvp``, tangents batched with ``vmap``) through that function
gives columns of J; a chunk of basis tangents at a time gives J exactly, Gaussian tangents and
vector-Jacobian products give a randomized SVD (the sketch). The tangent-free part of the same pass is
ordinary training: every update uses the kernels ``torch.optim.SGD`` and ``clip_grad_norm_`` use, in
their order, so θ_T matches an imperative loop bit for bit (``UnrolledTraining.primal_matches`` checks).

This module knows nothing of specs, tasks or models: a problem hands it a loss of (parameters, step).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from torch.func import grad, jvp, vjp, vmap

# A loss of named parameters at an optimizer step (0-based): the step picks the batch.
StepLoss = Callable[[dict[str, Tensor], int], Tensor]

DEFAULT_TOLERANCES = (1e-3, 1e-2, 1e-1)
SUBSPACES = ("chaotic", "bulk", "stable")


@dataclass(frozen=True)
class SGDSchedule:
    """SGD with momentum as ``torch.optim.SGD`` does it (dampening 0, no Nesterov), a learning rate per step."""

    lrs: tuple[float, ...]  # the learning rate of each optimizer step, as the LR scheduler sets it
    momentum: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float | None = None  # clip_grad_norm_'s max_norm, or None

    @property
    def steps(self) -> int:
        return len(self.lrs)


@dataclass
class ParameterLayout:
    """Where each named parameter lives in the flat vector (``named_parameters()`` order)."""

    names: list[str]
    shapes: list[torch.Size]

    @classmethod
    def of(cls, module: torch.nn.Module) -> ParameterLayout:
        named = list(module.named_parameters())
        return cls([n for n, _ in named], [p.shape for _, p in named])

    @property
    def sizes(self) -> list[int]:
        return [math.prod(shape) for shape in self.shapes]

    @property
    def total(self) -> int:
        return sum(self.sizes)

    def flatten(self, params: dict[str, Tensor]) -> Tensor:
        return torch.cat([params[name].reshape(-1) for name in self.names])

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        pieces = torch.split(flat, self.sizes)
        return {
            name: piece.view(shape)
            for name, piece, shape in zip(self.names, pieces, self.shapes, strict=True)
        }


class UnrolledTraining:
    """θ_0 -> θ_T through ``schedule.steps`` SGD steps of ``loss``, as a function torch.func can differentiate.

    ``reparametrize`` maps the trained vector to the model's flat parameters (identity for ordinary
    training; θ_0 + c B for training restricted to a subspace spanned by the rows of B).
    """

    def __init__(
        self,
        loss: StepLoss,
        layout: ParameterLayout,
        schedule: SGDSchedule,
        reparametrize: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self.loss = loss
        self.layout = layout
        self.schedule = schedule
        self.reparametrize = reparametrize

    def step_loss(self, trained: Tensor, step: int) -> Tensor:
        flat = trained if self.reparametrize is None else self.reparametrize(trained)
        return self.loss(self.layout.unflatten(flat), step)

    def _clip(self, gradient: Tensor) -> Tensor:
        """``clip_grad_norm_``: the norm of the per-tensor norms, coefficient max / (norm + 1e-6) clamped at 1."""
        assert self.schedule.grad_clip is not None
        sizes = self.layout.sizes if self.reparametrize is None else [gradient.numel()]
        norms = [torch.linalg.vector_norm(piece, 2.0) for piece in torch.split(gradient, sizes)]
        total = torch.linalg.vector_norm(torch.stack(norms), 2.0)
        coefficient = torch.clamp(self.schedule.grad_clip / (total + 1e-6), max=1.0)
        return gradient * coefficient

    def __call__(self, theta: Tensor) -> Tensor:
        schedule = self.schedule
        momentum_buffer: Tensor | None = None
        for step, lr in enumerate(schedule.lrs):
            gradient = grad(self.step_loss)(theta, step)
            if schedule.grad_clip is not None:
                gradient = self._clip(gradient)
            if schedule.weight_decay:
                gradient = torch.add(gradient, theta, alpha=schedule.weight_decay)
            if schedule.momentum:
                # torch.optim.SGD: the buffer starts as a copy of the first gradient, then buf*m + g.
                momentum_buffer = (
                    gradient
                    if momentum_buffer is None
                    else torch.add(momentum_buffer * schedule.momentum, gradient)
                )
                gradient = momentum_buffer
            theta = torch.add(theta, gradient, alpha=-lr)
        return theta


@dataclass
class JacobianResult:
    """What a Jacobian pass gives: singular values (descending), singular vectors when kept, θ_T, costs."""

    mode: str
    singular_values: np.ndarray
    left: np.ndarray | None  # U, columns are left singular vectors (n x r)
    right: np.ndarray | None  # V, columns are right singular vectors (n x r)
    theta_final: Tensor
    n_params: int
    seconds: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def alignment(self) -> np.ndarray:
        """cos(u_i, v_i) for each singular pair: ≈ 1 in the bulk, where a perturbation passes through unchanged."""
        assert self.left is not None and self.right is not None
        return np.einsum("ij,ij->j", self.left, self.right)


def _columns(
    train: UnrolledTraining, theta0: Tensor, tangents: Float[Tensor, "k n"]
) -> tuple[Tensor, Tensor]:
    """(θ_T, J tangentsᵀ as rows): one forward-mode pass for a batch of tangents; the primal is computed once."""

    def one(tangent: Tensor) -> tuple[Tensor, Tensor]:
        return jvp(train, (theta0,), (tangent,))

    primal, columns = vmap(one, out_dims=(None, 0))(tangents)
    return primal, columns


def exact_jacobian(
    train: UnrolledTraining,
    theta0: Tensor,
    chunk_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Float[Tensor, "n n"], Tensor]:
    """J (float32, J[i, j] = dθ_T[i]/dθ_0[j]) column chunk by column chunk, and θ_T of the tangent-free pass."""
    n = theta0.numel()
    jacobian = torch.empty(n, n, dtype=theta0.dtype)
    theta_final: Tensor | None = None
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        tangents = torch.zeros(stop - start, n, dtype=theta0.dtype)
        tangents[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
        primal, rows = _columns(train, theta0, tangents)
        jacobian[:, start:stop] = rows.T
        theta_final = primal if theta_final is None else theta_final
        if progress is not None:
            progress(stop, n)
    assert theta_final is not None
    return jacobian, theta_final


def exact_svd(
    train: UnrolledTraining,
    theta0: Tensor,
    chunk_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> JacobianResult:
    started = time.perf_counter()
    jacobian, theta_final = exact_jacobian(train, theta0, chunk_size, progress)
    jvp_seconds = time.perf_counter() - started
    started = time.perf_counter()
    # float64 for the decomposition: the bulk sits within 1e-3 of 1, where float32 rounding is visible.
    u, s, vt = np.linalg.svd(jacobian.double().numpy())
    return JacobianResult(
        "exact",
        s,
        u,
        vt.T,
        theta_final,
        theta0.numel(),
        {"jvps": jvp_seconds, "svd": time.perf_counter() - started},
        {"chunk_size": chunk_size, "jacobian_frobenius": float(np.linalg.norm(s))},
    )


def sketch_svd(
    train: UnrolledTraining,
    theta0: Tensor,
    rank: int,
    oversample: int,
    power_iterations: int,
    chunk_size: int,
    seed: int,
) -> JacobianResult:
    """Randomized SVD of J (Halko, Martinsson & Tropp 2011, algorithms 4.4 and 5.1).

    Range: Y = J Ω from rank + oversample JVPs with Gaussian Ω. Each power iteration adds one VJP pass
    (Jᵀ Q) and one JVP pass (J Q'), re-orthonormalised between, which sharpens the estimate where the
    spectrum decays slowly (the bulk). Then B = Qᵀ J from one VJP pass (reverse mode through the whole
    loop, the graph kept once and pulled back for every row of Q), and the SVD of the small B.
    """
    n = theta0.numel()
    width = rank + oversample
    generator = torch.Generator().manual_seed(seed)
    omega = torch.randn(width, n, generator=generator, dtype=theta0.dtype)
    seconds = {"jvp": 0.0, "vjp": 0.0}

    def apply_j(vectors: Tensor) -> tuple[Tensor, Tensor]:
        started = time.perf_counter()
        primal, rows = None, []
        for start in range(0, vectors.shape[0], chunk_size):
            primal, chunk = _columns(train, theta0, vectors[start : start + chunk_size])
            rows.append(chunk)
        seconds["jvp"] += time.perf_counter() - started
        assert primal is not None
        return primal, torch.cat(rows)  # rows: (J v_i)ᵀ

    vjp_function: Callable[..., Any] | None = None

    def apply_jt(vectors: Tensor) -> Tensor:
        nonlocal vjp_function
        started = time.perf_counter()
        if vjp_function is None:
            _, vjp_function = vjp(train, theta0)
        rows = [
            vmap(vjp_function)(vectors[start : start + chunk_size])[0]
            for start in range(0, vectors.shape[0], chunk_size)
        ]
        seconds["vjp"] += time.perf_counter() - started
        return torch.cat(rows)  # rows: (Jᵀ w_i)ᵀ

    theta_final, y = apply_j(omega)
    q = torch.linalg.qr(y.double().T).Q  # n x width
    for _ in range(power_iterations):
        z = torch.linalg.qr(apply_jt(q.T.to(theta0.dtype)).double().T).Q
        q = torch.linalg.qr(apply_j(z.T.to(theta0.dtype))[1].double().T).Q
    b = apply_jt(q.T.to(theta0.dtype)).double()  # rows of Qᵀ J
    started = time.perf_counter()
    u_small, s, vt = torch.linalg.svd(b, full_matrices=False)
    u = (q @ u_small)[:, :rank]
    seconds["svd"] = time.perf_counter() - started
    return JacobianResult(
        "sketch",
        s[:rank].numpy(),
        u.numpy(),
        vt[:rank].T.numpy(),
        theta_final,
        n,
        seconds,
        {
            "rank": rank,
            "oversample": oversample,
            "power_iterations": power_iterations,
            "jvps": width * (1 + power_iterations),
            "vjps": width * (1 + power_iterations),
        },
    )


def subspace_counts(singular_values: np.ndarray, tolerances: Sequence[float]) -> list[dict[str, Any]]:
    """Chaotic (σ > 1 + δ), bulk (|σ - 1| <= δ) and stable (σ < 1 - δ) directions for each tolerance δ."""
    s = np.asarray(singular_values)
    return [
        {
            "delta": float(delta),
            "chaotic": int(np.sum(s > 1 + delta)),
            "bulk": int(np.sum(np.abs(s - 1) <= delta)),
            "stable": int(np.sum(s < 1 - delta)),
        }
        for delta in tolerances
    ]


def subspace_indices(kind: str, singular_values: np.ndarray, k: int) -> np.ndarray:
    """The k singular directions of a kind: the largest σ (chaotic), the smallest (stable), the nearest 1 (bulk)."""
    s = np.asarray(singular_values)
    if kind == "chaotic":
        return np.arange(k)
    if kind == "stable":
        return np.arange(len(s) - k, len(s))
    if kind == "bulk":
        return np.argsort(np.abs(s - 1), kind="stable")[:k]
    raise ValueError(f"unknown subspace {kind!r}; allowed: {', '.join(SUBSPACES)}")


def restricted_training(
    loss: StepLoss,
    layout: ParameterLayout,
    schedule: SGDSchedule,
    theta0: Tensor,
    basis: Float[Tensor, "k n"],
) -> Tensor:
    """Train θ = θ_0 + cᵀ B from c = 0 with the same schedule and batches; returns the model's flat θ_T."""
    basis = basis.to(theta0.dtype)

    def reparametrize(coefficients: Tensor) -> Tensor:
        return theta0 + coefficients @ basis

    train = UnrolledTraining(loss, layout, schedule, reparametrize)
    with torch.no_grad():
        coefficients = train(torch.zeros(basis.shape[0], dtype=theta0.dtype))
    return reparametrize(coefficients)


def default_dimensions(n: int, points: int) -> list[int]:
    """``points`` subspace sizes evenly spaced from about n/48 (100 of the reference's 4,810, as the study) to n."""
    low = max(1, round(n / 48))
    return sorted({int(round(x)) for x in np.linspace(low, n, points)})
