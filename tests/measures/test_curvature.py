"""Curvature measures against Hessians built another way: explicit matrices and autograd's own."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch.func import functional_call

from emergence import registry
from emergence.measures.base import MeasureContext, MeasureSetup
from emergence.measures.curvature import (
    HessianTop,
    HessianTrace,
    HessianVectorProduct,
    hutchinson_trace,
    lanczos_top_eigenvalue,
    model_loss_hvp,
    select_parameters,
)
from emergence.models import build_model
from emergence.spec.schema import ModelSpec
from emergence.tasks import build_task
from emergence.train.loop import answer_loss

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def symmetric_with_eigenvalues(eigenvalues: list[float], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A dense symmetric matrix with the given spectrum, and its eigenvectors as columns."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(len(eigenvalues), len(eigenvalues))))
    q = torch.tensor(q)
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T, q


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- Lanczos and Hutchinson on explicit matrices ----------------------------------------------------


def test_lanczos_finds_largest_algebraic_eigenvalue_not_largest_magnitude():
    # A big negative eigenvalue (a saddle direction) must not be reported as the top.
    spectrum = [-40.0, 25.0, 9.0] + list(np.linspace(-3, 3, 57))
    a, q = symmetric_with_eigenvalues(spectrum)
    top = lanczos_top_eigenvalue(lambda v: a @ v, 60, 40, 1e-8, generator(), CPU)
    assert top.value == pytest.approx(25.0, rel=1e-8)
    assert abs(float(top.vector @ q[:, 1])) == pytest.approx(1.0, abs=1e-6)
    assert top.residual < 1e-8
    assert top.iterations < 40  # stopped on the residual, not on the iteration cap


def test_lanczos_reports_the_true_residual_when_it_runs_out_of_iterations():
    # Clustered top eigenvalues: three steps cannot separate them.
    a, _ = symmetric_with_eigenvalues([10.0, 9.9, 9.8] + list(np.linspace(0, 9.7, 47)), seed=1)
    top = lanczos_top_eigenvalue(lambda v: a @ v, 50, 3, 1e-6, generator(1), CPU)
    assert top.iterations == 3
    explicit = float((a @ top.vector - top.value * top.vector).norm()) / abs(top.value)
    assert top.residual == pytest.approx(explicit, rel=1e-9)
    assert top.residual > 1e-3  # honest: not converged, and the number says so
    assert top.value < 10.0  # a Ritz value never exceeds the top eigenvalue


def test_lanczos_is_exact_once_the_krylov_space_is_exhausted():
    a, _ = symmetric_with_eigenvalues([3.0, 2.0, 1.0, 0.5, 0.1], seed=2)
    top = lanczos_top_eigenvalue(lambda v: a @ v, 5, 20, 1e-14, generator(2), CPU)
    assert top.iterations <= 5
    assert top.value == pytest.approx(3.0, rel=1e-12)


def test_lanczos_is_deterministic_given_the_generator_seed():
    a, _ = symmetric_with_eigenvalues(list(np.linspace(1, 2, 40)), seed=3)
    runs = [lanczos_top_eigenvalue(lambda v: a @ v, 40, 4, 1e-12, generator(s), CPU).value for s in (7, 7, 8)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_hutchinson_is_exact_for_a_diagonal_matrix():
    # Rademacher probes: z^T D z = sum D_ii for every z, so zero spread.
    d = torch.tensor([4.0, -1.0, 0.5, 2.0, 7.0], dtype=torch.float64)
    trace = hutchinson_trace(lambda v: d * v, 5, 10, generator(), CPU)
    assert trace.estimate == pytest.approx(12.5, abs=1e-12)
    assert trace.standard_error == pytest.approx(0.0, abs=1e-12)
    assert trace.n_probes == 10


def test_hutchinson_mean_and_standard_error_match_theory():
    a, _ = symmetric_with_eigenvalues(list(np.linspace(-1, 3, 30)), seed=4)
    n = 4000
    trace = hutchinson_trace(lambda v: a @ v, 30, n, generator(4), CPU)
    # Var(z^T A z) = 2 sum_{i != j} A_ij^2 for Rademacher z.
    off_diagonal = a - torch.diag(torch.diag(a))
    expected_se = math.sqrt(2 * float((off_diagonal**2).sum()) / n)
    assert trace.standard_error == pytest.approx(expected_se, rel=0.1)
    assert abs(trace.estimate - float(torch.trace(a))) < 4 * trace.standard_error


# -- Hessian-vector products of a loss of named parameters ------------------------------------------


def test_hvp_of_a_quadratic_over_several_tensors_is_the_known_hessian():
    # loss = 1/2 x^T A x + b^T x with x = [w.flatten(), c]; u enters linearly and `unused` not at all.
    a, _ = symmetric_with_eigenvalues([5.0, 3.0, 2.0, 1.0, -1.0, 0.5, 0.25, 4.0, -2.0, 1.5], seed=5)
    b = torch.arange(10, dtype=torch.float64)
    params = {
        "w": torch.randn(2, 3, dtype=torch.float64),
        "c": torch.randn(4, dtype=torch.float64),
        "u": torch.randn(2, dtype=torch.float64),
        "unused": torch.randn(3, dtype=torch.float64),
    }

    def loss_fn(p: dict[str, torch.Tensor]) -> torch.Tensor:
        x = torch.cat([p["w"].reshape(-1), p["c"]])
        return 0.5 * x @ a @ x + b @ x + p["u"].sum()

    hvp = HessianVectorProduct(loss_fn, params)
    assert hvp.dim == 15
    full = torch.zeros(15, 15, dtype=torch.float64)
    full[:10, :10] = a
    for i in range(15):
        e = torch.zeros(15, dtype=torch.float64)
        e[i] = 1.0
        assert torch.allclose(hvp(e), full[:, i], atol=1e-12)
    top = lanczos_top_eigenvalue(hvp, hvp.dim, 30, 1e-10, generator(5), CPU)
    assert top.value == pytest.approx(5.0, rel=1e-9)
    assert hutchinson_trace(hvp, hvp.dim, 3, generator(), CPU).estimate != 0.0
    assert all(not p.requires_grad for p in params.values())  # the caller's tensors are left alone


def test_hvp_refuses_a_loss_that_does_not_see_the_parameters():
    params = {"w": torch.randn(3)}
    with pytest.raises(RuntimeError, match="does not depend"):
        HessianVectorProduct(lambda p: p["w"].detach().pow(2).sum(), params)


def test_prefixes_match_whole_dotted_components():
    model = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(11)])
    assert set(select_parameters(model, ["1"])) == {"1.weight", "1.bias"}  # not 10.*
    assert set(select_parameters(model, ["10.weight", "2"])) == {"10.weight", "2.weight", "2.bias"}
    model[3].weight.requires_grad_(False)
    assert "3.weight" not in select_parameters(model, "all")
    with pytest.raises(ValueError, match="match no trainable"):
        select_parameters(model, ["blocks.0"])


# -- a tiny TransformerBridge (280 parameters) against torch.autograd.functional.hessian ------------


@pytest.fixture(scope="module")
def task():
    return build_task("binary_addition", 1, {"n_bits": 3}, 40, 20, 10, 0)


def tiny_bridge(task, d_model: int = 4, seed: int = 0):
    spec = ModelSpec(n_layers=1, d_model=d_model, n_heads=1, d_mlp=2 * d_model)
    return build_model(spec, len(task.vocab), task.seq_len, seed, CPU)


@pytest.fixture(scope="module")
def reference(task):
    """The tiny bridge, its parameter names and its full Hessian from torch.autograd.functional.hessian."""
    model = tiny_bridge(task).eval()
    tokens, mask = task.train.tokens, task.train.target_mask
    named = dict(model.named_parameters())
    shapes = [p.shape for p in named.values()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in named.values()])

    def loss_of_flat(flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, [math.prod(s) for s in shapes])
        params = {n: part.view(s) for n, part, s in zip(named, parts, shapes, strict=True)}
        return answer_loss(functional_call(model, params, (tokens,), tie_weights=False), tokens, mask)

    hessian = torch.autograd.functional.hessian(loss_of_flat, flat0, vectorize=True).double()
    return model, list(named), hessian


def test_reference_hessian_is_a_real_hessian(reference):
    _, names, hessian = reference
    assert hessian.shape == (280, 280)
    assert torch.allclose(hessian, hessian.T, atol=1e-4)
    assert float(hessian.abs().max()) > 1e-2  # not the silently-detached zero matrix


def test_bridge_hvp_top_eigenvalue_and_trace_match_the_full_hessian(reference, task):
    model, _, hessian = reference
    hvp = model_loss_hvp(model, task.train.tokens, task.train.target_mask, "all")
    v = torch.randn(hvp.dim, generator=generator(9), dtype=torch.float64)
    assert torch.allclose(hvp(v), hessian @ v, rtol=1e-4, atol=1e-5 * float(hessian.abs().max()))

    eigenvalues = torch.linalg.eigvalsh(hessian)
    top = lanczos_top_eigenvalue(hvp, hvp.dim, 120, 1e-5, generator(10), CPU)
    assert top.value == pytest.approx(float(eigenvalues[-1]), rel=1e-4)
    assert top.residual < 1e-4

    trace = hutchinson_trace(hvp, hvp.dim, 1000, generator(11), CPU)
    assert abs(trace.estimate - float(torch.trace(hessian))) < 4 * trace.standard_error
    off_diagonal = hessian - torch.diag(torch.diag(hessian))
    assert trace.standard_error == pytest.approx(math.sqrt(2 * float((off_diagonal**2).sum()) / 1000), rel=0.15)


def test_parameter_prefixes_give_the_principal_submatrix(reference, task):
    model, names, hessian = reference
    hvp = model_loss_hvp(model, task.train.tokens, task.train.target_mask, ["layers.0.attn"])
    # The prefix uses the bridge's short alias; named_parameters() reports the long names.
    assert hvp.names == [n for n in names if ".attn." in n] and len(hvp.names) == 8
    sizes = [p.numel() for p in model.parameters()]
    offsets = np.cumsum([0] + sizes)
    index = torch.cat([torch.arange(offsets[i], offsets[i + 1]) for i, n in enumerate(names) if n in hvp.names])
    block = hessian[index][:, index]
    top = lanczos_top_eigenvalue(hvp, hvp.dim, 80, 1e-6, generator(12), CPU)
    assert top.value == pytest.approx(float(torch.linalg.eigvalsh(block)[-1]), rel=1e-4)


# -- the Measure classes on a real bridge and split ----------------------------------------------------


def make_measures(task, **options):
    setup = MeasureSetup(n_layers=1, d_model=16, task=task, device=CPU, seed=3)
    top = HessianTop(HessianTop.Options.model_validate(options.get("top", {})), setup)
    trace = HessianTrace(HessianTrace.Options.model_validate(options.get("trace", {})), setup)
    return top, trace


def test_measures_on_a_real_bridge(task):
    model = tiny_bridge(task, d_model=16, seed=1)
    top, trace = make_measures(task)
    assert registry.measures.get("hessian_top") is HessianTop and registry.measures.get("hessian_trace") is HessianTrace
    assert top.cost == trace.cost == "expensive" and top.default_every == 500
    assert len(top.tokens) == len(task.train)  # batch_size 256 > 40 examples: the whole split

    context = MeasureContext(step=5, model=model, activations={}, lr=1e-3)
    values = {**top.compute(context), **trace.compute(context)}
    assert set(values) == {
        "curvature/hessian_top",
        "curvature/hessian_top/iterations",
        "curvature/hessian_top/residual",
        "curvature/hessian_trace",
        "curvature/hessian_trace/standard_error",
        "curvature/hessian_trace/n_probes",
    }
    assert all(math.isfinite(v) for v in values.values())
    assert values["curvature/hessian_top"] > 0
    assert 1 <= values["curvature/hessian_top/iterations"] <= 20
    assert values["curvature/hessian_trace/n_probes"] == 20

    # The product through functional_call equals plain double backward on the model's own parameters:
    # neither zero nor detached (the tie_weights pitfall).
    hvp = top._hvp(model)
    v = torch.randn(hvp.dim, generator=generator(13))
    params = list(model.parameters())
    loss = answer_loss(model(task.train.tokens), task.train.tokens, task.train.target_mask)
    gradients = torch.autograd.grad(loss, params, create_graph=True)
    parts = torch.split(v, [p.numel() for p in params])
    direct = torch.autograd.grad(gradients, params, [part.view(p.shape) for part, p in zip(parts, params, strict=True)])
    direct = torch.cat([d.reshape(-1) for d in direct])
    assert float(direct.norm()) > 1e-3
    assert torch.allclose(hvp(v), direct, rtol=1e-4, atol=1e-5 * float(direct.abs().max()))

    # Deterministic given (seed, step); another step draws other probes.
    assert {**top.compute(context), **trace.compute(context)} == values
    later = trace.compute(MeasureContext(step=6, model=model, activations={}, lr=1e-3))
    assert later["curvature/hessian_trace"] != values["curvature/hessian_trace"]


def test_fixed_batch_is_drawn_once_from_the_run_seed(task):
    a, _ = make_measures(task, top={"batch_size": 8})
    b, trace = make_measures(task, top={"batch_size": 8}, trace={"batch_size": 8})
    assert len(a.tokens) == 8
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.tokens, trace.tokens)
    # A real draw, not the first 8 rows.
    assert not torch.equal(a.tokens, task.train.tokens[:8])
    rows = {tuple(t.tolist()) for t in task.train.tokens}
    assert all(tuple(t.tolist()) in rows for t in a.tokens)


def test_measures_leave_the_model_exactly_as_found(task):
    model = tiny_bridge(task, d_model=16, seed=2)
    loss = answer_loss(model(task.train.tokens), task.train.tokens, task.train.target_mask)
    loss.backward()  # grads from a training step in flight
    params = dict(model.named_parameters())
    frozen_name = next(n for n in params if "ln_out" in n)
    params[frozen_name].requires_grad_(False)
    model.train()
    next(m for n, m in model.named_modules() if n.endswith("mlp")).eval()  # a mixed-mode module tree

    before_values = {n: p.detach().clone() for n, p in params.items()}
    before_grads = {n: None if p.grad is None else p.grad.clone() for n, p in params.items()}
    before_flags = {n: p.requires_grad for n, p in params.items()}
    before_modes = {n: m.training for n, m in model.named_modules()}

    top, trace = make_measures(task, top={"max_iterations": 4}, trace={"n_probes": 3})
    context = MeasureContext(step=1, model=model, activations={}, lr=1e-3)
    top.compute(context)
    trace.compute(context)

    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], before_values[n]) for n in params)
    assert all(
        (after[n].grad is None and before_grads[n] is None) or torch.equal(after[n].grad, before_grads[n]) for n in params
    )
    assert before_grads[frozen_name] is not None and after[frozen_name].grad is not None
    assert {n: p.requires_grad for n, p in after.items()} == before_flags
    assert {n: m.training for n, m in model.named_modules()} == before_modes
    assert any(before_modes.values()) and not all(before_modes.values())


class DropoutLogits(torch.nn.Module):
    """tokens -> logits through dropout: a model whose train-mode loss differs at every call."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, 8)
        self.drop = torch.nn.Dropout(0.5)
        self.out = torch.nn.Linear(8, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.drop(self.embed(tokens))))


def test_curvature_is_measured_without_dropout_and_the_mode_restored(task):
    torch.manual_seed(0)
    model = DropoutLogits(len(task.vocab))
    _, trace = make_measures(task, trace={"n_probes": 4})
    context = MeasureContext(step=2, model=model, activations={}, lr=1e-3)
    in_train_mode = trace.compute(context)
    assert model.training
    model.eval()
    assert trace.compute(context) == in_train_mode  # dropout would make every product a different matrix
    assert not model.training


def test_non_finite_loss_gives_nan_not_an_error(task):
    model = tiny_bridge(task, d_model=16, seed=2)
    with torch.no_grad():
        next(iter(model.parameters())).fill_(float("nan"))
    top, trace = make_measures(task)
    context = MeasureContext(step=1, model=model, activations={}, lr=1e-3)
    assert math.isnan(top.compute(context)["curvature/hessian_top"])
    assert math.isnan(trace.compute(context)["curvature/hessian_trace"])


def test_options_are_strict():
    with pytest.raises(ValidationError):
        HessianTop.Options.model_validate({"n_probes": 5})
    with pytest.raises(ValidationError):
        HessianTrace.Options.model_validate({"n_probes": 1})
    with pytest.raises(ValidationError):
        HessianTop.Options.model_validate({"parameters": "some"})
    with pytest.raises(ValidationError):
        HessianTop.Options.model_validate({"parameters": []})
    assert HessianTop.Options.model_validate({"parameters": ["layers.0"]}).parameters == ["layers.0"]
    assert HessianTop.Options.model_validate({}).model_dump() == {
        "batch_size": 256,
        "parameters": "all",
        "max_iterations": 20,
        "tolerance": 1e-3,
    }
