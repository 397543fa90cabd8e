"""Gradient geometry: vmap per-example gradients against a loop of backward(), ranks against known spectra."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
import torch

from emergence.measures.base import MeasureContext, MeasureSetup
from emergence.measures.geometry import rankme
from emergence.measures.gradients import (
    FisherRank,
    GradCovRank,
    ParameterSlice,
    answer_log_likelihood,
    first_parameters,
    gradient_gram,
    model_gradients,
    rankme_of_gram,
    select_parameters,
)
from emergence.measures.parameters import matches_prefix
from emergence.models import build_model
from emergence.spec.schema import ModelSpec
from emergence.tasks import build_task
from emergence.train.loop import answer_loss

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def task():
    return build_task("binary_addition", 1, {"n_bits": 3}, 40, 20, 10, 0)


def tiny_model(task, seed: int = 0) -> torch.nn.Module:
    return build_model(ModelSpec(n_layers=1, d_model=16, n_heads=2), len(task.vocab), task.seq_len, seed, CPU)


def loop_gradients(model: torch.nn.Module, split) -> torch.Tensor:
    """One backward() per example of the summed answer log-likelihood, from the training loss."""
    model.eval()
    rows = []
    for i in range(len(split)):
        model.zero_grad(set_to_none=True)
        tokens, mask = split.tokens[i : i + 1], split.target_mask[i : i + 1]
        log_likelihood = -answer_loss(model(tokens), tokens, mask) * mask[:, 1:].sum()  # mean -> sum over answer tokens
        log_likelihood.backward()
        rows.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    model.zero_grad(set_to_none=True)
    return torch.stack(rows)


def matrix_with_singular_values(singular_values, n: int, p: int, seed: int = 0, orthogonal_to_ones: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    left = rng.normal(size=(n, n))
    if orthogonal_to_ones:  # so that centring over rows leaves the matrix unchanged
        left = np.column_stack([np.ones(n), left[:, 1:]])
    u, _ = np.linalg.qr(left)
    if orthogonal_to_ones:
        u = u[:, 1:]
    v, _ = np.linalg.qr(rng.normal(size=(p, p)))
    k = len(singular_values)
    return u[:, :k] @ np.diag(singular_values) @ v[:, :k].T


def rankme_formula(singular_values: np.ndarray) -> float:
    p = singular_values / singular_values.sum() + 1e-7
    return float(np.exp(-(p * np.log(p)).sum()))


# -- the log-likelihood and the per-example gradients -----------------------------------------------


def test_answer_log_likelihood_is_minus_summed_answer_cross_entropy(task):
    logits = torch.randn(1, task.diagnostic.tokens.shape[1], len(task.vocab), generator=torch.Generator().manual_seed(0))
    tokens, mask = task.diagnostic.tokens[:1], task.diagnostic.target_mask[:1]
    expected = -answer_loss(logits, tokens, mask) * mask[:, 1:].sum()
    assert float(answer_log_likelihood(logits[0], tokens[0], mask[0])) == pytest.approx(float(expected), rel=1e-6)


def test_vmap_gradients_equal_a_loop_of_backward_on_a_bridge(task):
    model = tiny_model(task)
    expected = loop_gradients(model, task.diagnostic)
    # chunk_size 3 does not divide 10 examples: the last chunk is short
    gradients = model_gradients(model, task.diagnostic, None, chunk_size=3)
    assert expected.abs().max() > 0.1  # a detached functional_call would give zeros and still "match" nothing
    assert gradients.shape == expected.shape == (10, sum(p.numel() for p in model.parameters()))
    torch.testing.assert_close(gradients, expected, atol=1e-5, rtol=1e-4)


def test_selected_columns_are_the_leading_scalars_in_named_parameters_order(task):
    model = tiny_model(task)
    full = model_gradients(model, task.diagnostic, None, chunk_size=10)
    named_shapes = [(name, p.numel()) for name, p in model.named_parameters()]
    cut = named_shapes[0][1] + 37  # the boundary falls inside the second tensor
    first = model_gradients(model, task.diagnostic, select_parameters(named_shapes, "first", cut), chunk_size=4)
    torch.testing.assert_close(first, full[:, :cut])

    offsets = np.cumsum([0] + [numel for _, numel in named_shapes])
    wanted = [i for i, (name, _) in enumerate(named_shapes) if ".attn." in name]
    attention = model_gradients(model, task.diagnostic, select_parameters(named_shapes, ["layers.0.attn"], None), chunk_size=4)
    torch.testing.assert_close(attention, torch.cat([full[:, offsets[i] : offsets[i + 1]] for i in wanted], dim=1))


def test_parameter_selection_rules():
    shapes = [("a.weight", 10), ("layers.1._original_component.w", 5), ("layers.10.w", 7)]
    assert first_parameters(shapes, 12) == [ParameterSlice("a.weight", 10), ParameterSlice("layers.1._original_component.w", 2)]
    assert first_parameters(shapes, None) == [ParameterSlice(n, c) for n, c in shapes]
    # prefixes match whole dotted components, of the raw name or the name without the bridge's wrapper
    assert matches_prefix("layers.1._original_component.w", "layers.1")
    assert matches_prefix("layers.1._original_component.w", "layers.1.w")
    assert not matches_prefix("layers.10.w", "layers.1")
    assert select_parameters(shapes, ["layers.10"], 3) == [ParameterSlice("layers.10.w", 3)]
    with pytest.raises(ValueError, match="match no parameter"):
        select_parameters(shapes, ["blocks.0"], None)


# -- Gram and rank ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "p"), [(30, 50), (40, 10)])  # more parameters than examples, and fewer
def test_rank_of_gram_is_rankme_of_the_gradient_matrix(n, p):
    singular_values = np.array([6.0, 3.0, 2.0, 0.5, 0.1])
    g = matrix_with_singular_values(singular_values, n, p)
    rank = rankme_of_gram(gradient_gram(torch.from_numpy(g).float(), centre=False), p)
    padded = np.concatenate([singular_values, np.zeros(min(n, p) - len(singular_values))])
    assert rank == pytest.approx(rankme_formula(padded), rel=1e-4)
    assert rank == pytest.approx(rankme(g), rel=1e-4)


def test_uncentred_gram_is_g_gt_over_n():
    g = np.random.default_rng(3).normal(size=(12, 40000))  # more columns than one Gram block
    expected = g @ g.T / 12
    np.testing.assert_allclose(gradient_gram(torch.from_numpy(g), centre=False), expected, rtol=1e-10)


def test_centred_gram_removes_the_mean_gradient():
    n, p = 25, 30
    fluctuations = matrix_with_singular_values([4.0, 2.0, 1.0], n, p, seed=1, orthogonal_to_ones=True)
    mean_gradient = np.random.default_rng(2).normal(size=p) * 100.0
    g = torch.from_numpy(fluctuations + mean_gradient)
    centred = g.numpy() - g.numpy().mean(0)
    np.testing.assert_allclose(gradient_gram(g, centre=True), centred @ centred.T / n, atol=1e-9)
    # the huge shared direction dominates the uncentred spectrum and is gone after centring
    assert rankme_of_gram(gradient_gram(g, centre=False), p) < 1.2
    expected = rankme_formula(np.array([4.0, 2.0, 1.0] + [0.0] * (n - 3)))
    assert rankme_of_gram(gradient_gram(g, centre=True), p) == pytest.approx(expected, rel=1e-4)


def test_non_finite_gradients_give_nan():
    g = torch.ones(4, 6)
    g[1, 2] = float("nan")
    assert np.isnan(rankme_of_gram(gradient_gram(g, centre=False), 6))


# -- the measures ----------------------------------------------------------------------------------


def setup_for(task, seed: int = 0) -> MeasureSetup:
    return MeasureSetup(n_layers=1, d_model=16, task=task, device=CPU, seed=seed)


def context_for(model: torch.nn.Module) -> MeasureContext:
    return MeasureContext(step=100, model=model, activations={}, lr=1e-3)


def test_measures_on_a_real_bridge_match_loop_gradients(task):
    model = tiny_model(task)
    explicit = loop_gradients(model, task.diagnostic).double().numpy()

    fisher = FisherRank(FisherRank.Options.model_validate({"chunk_size": 4}), setup_for(task))
    values = fisher.compute(context_for(model))
    assert set(values) == {"gradient/fisher_rank", "gradient/fisher_rank/trace"}
    assert values["gradient/fisher_rank"] == pytest.approx(rankme(explicit), rel=1e-4)
    assert values["gradient/fisher_rank/trace"] == pytest.approx((explicit**2).sum() / len(explicit), rel=1e-4)

    covariance = GradCovRank(GradCovRank.Options.model_validate({"max_parameters": 500}), setup_for(task))
    values = covariance.compute(context_for(model))
    centred = explicit[:, :500] - explicit[:, :500].mean(0)
    assert values["gradient/grad_cov_rank/n_parameters"] == 500
    assert values["gradient/grad_cov_rank"] == pytest.approx(rankme(centred), rel=1e-4)
    assert 1.0 < values["gradient/grad_cov_rank"] < len(explicit)


def test_measures_leave_the_model_exactly_as_found(task):
    model = tiny_model(task)
    model.train()
    model.ln_out.eval()  # a mixed state: restoring with model.train(True) would get this wrong
    parameters = dict(model.named_parameters())
    frozen = next(iter(parameters))
    parameters[frozen].requires_grad_(False)
    for name, p in parameters.items():
        if name != frozen:
            p.grad = torch.full_like(p, 0.25)
    before = {name: p.detach().clone() for name, p in parameters.items()}
    modes = {name: m.training for name, m in model.named_modules()}

    for measure_class in (FisherRank, GradCovRank):
        measure_class(measure_class.Options(), setup_for(task)).compute(context_for(model))

    after = dict(model.named_parameters())
    assert all(after[name] is p for name, p in parameters.items())
    for name, p in after.items():
        assert torch.equal(p, before[name])
        assert p.requires_grad == (name != frozen)
        assert (p.grad is None) if name == frozen else torch.equal(p.grad, torch.full_like(p, 0.25))
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert not model.ln_out.training and model.training


def test_example_subset_is_fixed_by_the_run_seed_across_steps(task):
    def chosen(seed: int) -> list[list[int]]:
        return FisherRank(FisherRank.Options(n_examples=4), setup_for(task, seed)).index.tolist()

    assert len(chosen(0)) == 4
    assert chosen(0) == chosen(0)
    assert chosen(0) != chosen(1)
    model = tiny_model(task)
    measure = FisherRank(FisherRank.Options(n_examples=4), setup_for(task))
    first = measure.compute(MeasureContext(step=100, model=model, activations={}, lr=1e-3))
    assert measure.compute(MeasureContext(step=200, model=model, activations={}, lr=1e-3)) == first


def test_options_are_strict():
    with pytest.raises(pydantic.ValidationError):
        FisherRank.Options.model_validate({"chunk": 4})
    with pytest.raises(pydantic.ValidationError):
        GradCovRank.Options.model_validate({"parameters": "first_50000"})
    assert GradCovRank.Options().parameters == "first" and GradCovRank.Options().max_parameters == 50_000
    assert FisherRank.cost == GradCovRank.cost == "moderate"
