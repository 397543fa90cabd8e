"""The training Jacobian: exact J against finite differences, the sketch against exact, the tangent-free loop
against ordinary training bit for bit (our MLP loop and the transformer Trainer), and the counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from emergence.models import build_model
from emergence.models.mlp import build_mlp, mlp_parameters
from emergence.spec import resolve
from emergence.studies.jacobian import (
    ParameterLayout,
    SGDSchedule,
    UnrolledTraining,
    exact_jacobian,
    exact_svd,
    restricted_training,
    sketch_svd,
    subspace_counts,
    subspace_indices,
)
from emergence.studies.jacobian_problem import build_problem, ordinary_training
from emergence.train.loop import Trainer


def tiny_problem(sizes: list[int], steps: int, schedule: SGDSchedule | None = None, dtype: torch.dtype = torch.float64):
    """An MLP on random data, a few SGD steps over fixed batches; float64 so finite differences are sharp."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(24, sizes[0], generator=generator, dtype=dtype)
    y = torch.randint(0, sizes[-1], (24,), generator=generator)
    module = build_mlp(sizes, "gelu_new", seed=0).to(dtype)
    layout = ParameterLayout.of(module)
    theta0 = layout.flatten({n: p.detach() for n, p in module.named_parameters()}).clone()

    def loss(params: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        batch = slice(8 * (step % 3), 8 * (step % 3) + 8)
        return F.cross_entropy(functional_call(module, params, (x[batch],)), y[batch])

    lrs = tuple(0.5 * (1 + np.cos(np.pi * s / steps)) * 0.3 for s in range(steps))
    return UnrolledTraining(loss, layout, schedule or SGDSchedule(lrs, momentum=0.9)), theta0


@pytest.mark.parametrize(
    "options",
    [{}, {"weight_decay": 0.01, "grad_clip": 0.05}],
    ids=["momentum", "momentum+decay+clipping"],
)
def test_exact_jacobian_matches_central_finite_differences(options):
    steps = 6
    lrs = tuple(0.3 * 0.5 * (1 + np.cos(np.pi * s / steps)) for s in range(steps))
    train, theta0 = tiny_problem([3, 4, 2], steps, SGDSchedule(lrs, momentum=0.9, **options))
    assert theta0.numel() == mlp_parameters([3, 4, 2]) == 26
    jacobian, theta_final = exact_jacobian(train, theta0, chunk_size=7)  # chunks that do not divide n
    eps = 1e-6
    with torch.no_grad():
        columns = [(train(theta0 + eps * e) - train(theta0 - eps * e)) / (2 * eps) for e in torch.eye(26, dtype=theta0.dtype)]
    finite_differences = torch.stack(columns, dim=1)
    assert torch.allclose(jacobian, finite_differences, atol=1e-7, rtol=1e-6), (jacobian - finite_differences).abs().max()
    assert not torch.allclose(jacobian, torch.eye(26, dtype=jacobian.dtype), atol=1e-3)  # training moved something
    with torch.no_grad():  # F.cross_entropy's backward is decomposed under jvp: equal to rounding, not bitwise
        assert torch.allclose(theta_final, train(theta0), atol=1e-14, rtol=0)


def test_sketch_finds_the_leading_singular_values_of_the_exact_jacobian():
    """A slowly decaying spectrum (the top values of this J are within a factor 1.5): power iterations earn it."""
    train, theta0 = tiny_problem([6, 8, 4], 8)
    exact = exact_svd(train, theta0, chunk_size=40)
    errors = []
    for power_iterations in (1, 4):
        sketch = sketch_svd(train, theta0, rank=8, oversample=8, power_iterations=power_iterations, chunk_size=16, seed=0)
        assert sketch.singular_values.shape == (8,)
        errors.append(np.abs(sketch.singular_values - exact.singular_values[:8]) / exact.singular_values[:8])
    assert errors[1].max() < 1e-2, (errors, exact.singular_values[:8])
    assert errors[1].max() < errors[0].max() / 10
    assert np.all(sketch.singular_values <= exact.singular_values[:8] * (1 + 1e-9))  # a projection never adds
    assert abs(float(sketch.right[:, 0] @ exact.right[:, 0])) > 0.99  # the top direction itself, up to sign


def test_counts_split_every_direction_once():
    s = np.array([50.0, 2.0, 1.05, 1.0005, 1.0, 0.9995, 0.95, 0.2])
    counts = subspace_counts(s, [1e-3, 1e-2, 1e-1])
    assert counts[0] == {"delta": 1e-3, "chaotic": 3, "bulk": 3, "stable": 2}
    assert counts[2] == {"delta": 1e-1, "chaotic": 2, "bulk": 5, "stable": 1}
    assert list(subspace_indices("bulk", s, 3)) == [4, 3, 5]
    assert list(subspace_indices("stable", s, 2)) == [6, 7]


def test_restricted_training_in_the_whole_space_is_ordinary_training():
    """With B = identity, θ_0 + cᵀB trains exactly as θ does: the restriction adds nothing of its own."""
    train, theta0 = tiny_problem([3, 4, 2], 5)
    restricted = restricted_training(train.loss, train.layout, train.schedule, theta0, torch.eye(26, dtype=theta0.dtype))
    with torch.no_grad():
        assert torch.allclose(restricted, train(theta0), atol=1e-12)


def digits_spec(**jacobian):
    return resolve({
        "name": "digits-small", "seed": 3,
        "task": {"name": "digits", "train_size": 128, "test_size": 64, "diagnostic_size": 8},
        "model": {"kind": "mlp", "sizes": [64, 6, 10], "act": "gelu_new"},
        "training": {"steps": 12, "batch_size": 32, "grad_clip": None, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
                     "lr_schedule": {"name": "cosine"}},
        "jacobian": jacobian or {"mode": "exact"}, "tracking": [],
    })[0].spec


def test_tangent_free_and_forward_mode_passes_are_ordinary_training_bit_for_bit():
    spec = digits_spec()
    problem = build_problem(spec)
    ordinary = ordinary_training(problem, spec)
    unrolled = UnrolledTraining(problem.step_loss, problem.layout, problem.schedule)
    with torch.no_grad():
        assert torch.equal(unrolled(problem.theta0), ordinary)
    _, primal = exact_jacobian(unrolled, problem.theta0, chunk_size=200)
    assert torch.equal(primal, ordinary)  # the MLP's loss keeps forward mode on the same kernels
    assert not torch.equal(ordinary, problem.theta0)


def test_unrolled_loop_is_the_transformer_trainer_bit_for_bit():
    """Against train/loop.py's Trainer itself (torch.optim.SGD, LambdaLR, clip_grad_norm_), on a transformer."""
    spec = resolve({
        "name": "t", "task": {"name": "modular_arithmetic", "train_size": 120, "test_size": 40, "diagnostic_size": 8},
        "model": {"n_layers": 1, "d_model": 16, "n_heads": 2, "d_mlp": 32},
        "training": {"steps": 6, "batch_size": 32, "grad_clip": 0.5, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
                     "lr_schedule": {"name": "cosine", "warmup_steps": 2}},
        "jacobian": {"mode": "sketch", "rank": 4}, "tracking": [],
    })[0].spec
    problem = build_problem(spec)
    unrolled = UnrolledTraining(problem.step_loss, problem.layout, problem.schedule)
    with torch.no_grad():
        theta_final = unrolled(problem.theta0)
    model = build_model(spec.model, len(problem.task.vocab), problem.task.seq_len, spec.seed, torch.device("cpu"))
    assert torch.equal(problem.layout.flatten(dict(model.named_parameters())), problem.theta0)
    trainer = Trainer(model, problem.task.train, spec.training, spec.seed, torch.device("cpu"))
    for _ in trainer.steps():
        pass
    assert torch.equal(problem.layout.flatten({n: p.detach() for n, p in model.named_parameters()}), theta_final)
