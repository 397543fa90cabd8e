"""The commutator defect against two explicit SGD steps each way, the QK commutator against the stacked head weights."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from emergence import registry
from emergence.measures.base import MeasureContext, MeasureSetup
from emergence.measures.commutators import (
    DEFECT_KEY,
    CommutatorDefect,
    QKCommutator,
    commutator_defect,
    qk_commutator_norms,
)
from emergence.models import build_model
from emergence.spec.schema import ModelSpec
from emergence.tasks import build_task
from emergence.train.loop import answer_loss

CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def task():
    return build_task("modular_arithmetic", 1, {"p": 7}, 30, 19, 10, 0)


def bridge(task, d_model: int = 8, n_heads: int = 2, seed: int = 0):
    spec = ModelSpec(n_layers=1, d_model=d_model, n_heads=n_heads, d_mlp=16, normalization=None)
    return build_model(spec, len(task.vocab), task.seq_len, seed, CPU)


def explicit_defect(model: torch.nn.Module, task, batch_a: torch.Tensor, batch_b: torch.Tensor, lr: float) -> float:
    """theta_AB and theta_BA by two real torch.optim.SGD steps on copies of the model, in float64."""

    def sgd_step(net: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        optimizer = torch.optim.SGD(net.parameters(), lr=lr)
        optimizer.zero_grad()
        tokens = task.train.tokens[batch]
        answer_loss(net(tokens), tokens, task.train.target_mask[batch]).backward()
        step = torch.cat([(-lr * p.grad).reshape(-1) for p in net.parameters()])
        optimizer.step()
        return step

    ab, ba = copy.deepcopy(model), copy.deepcopy(model)
    first_a = sgd_step(ab, batch_a)
    sgd_step(ab, batch_b)
    first_b = sgd_step(ba, batch_b)
    sgd_step(ba, batch_a)
    theta_ab = torch.cat([p.detach().reshape(-1) for p in ab.parameters()])
    theta_ba = torch.cat([p.detach().reshape(-1) for p in ba.parameters()])
    return float((theta_ab - theta_ba).norm() / (first_a.norm() * first_b.norm()))


def test_the_defect_equals_two_explicit_sgd_steps_each_way(task):
    model = bridge(task).double().eval()  # float64: the explicit form subtracts two nearly equal thetas
    batch_a, batch_b = torch.arange(0, 10), torch.arange(10, 20)
    params = {name: p for name, p in model.named_parameters()}

    def loss_at(p, batch):
        tokens = task.train.tokens[batch]
        logits = torch.func.functional_call(model, p, (tokens,), tie_weights=False)
        return answer_loss(logits, tokens, task.train.target_mask[batch])

    for lr in (1e-2, 1e-3):
        ours = commutator_defect(loss_at, params, batch_a, batch_b, lr)
        assert ours == pytest.approx(explicit_defect(model, task, batch_a, batch_b, lr), rel=1e-5)
    # Steps on one batch commute with themselves: the defect is the non-commutation of two different batches.
    assert commutator_defect(loss_at, params, batch_a, batch_a, 1e-3) == pytest.approx(0.0, abs=1e-9)


def test_the_measure_is_the_median_over_pairs_and_leaves_the_model_untouched(task):
    model = bridge(task).eval()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    setup = MeasureSetup(n_layers=1, d_model=8, task=task, device=CPU, seed=0)
    measure = CommutatorDefect(CommutatorDefect.Options.model_validate({"pairs": 3, "batch_size": 8}), setup)
    context = MeasureContext(step=100, model=model, activations={}, lr=1e-3)
    value = measure.compute(context)[DEFECT_KEY]
    assert math.isfinite(value) and value > 0
    assert measure.compute(context)[DEFECT_KEY] == value  # minibatches from (seed, step): the same again
    assert measure.compute(MeasureContext(step=150, model=model, activations={}, lr=1e-3))[DEFECT_KEY] != value
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name]) and p.grad is None
    # A full batch each would be one batch twice (defect 0): each minibatch is capped at half the data.
    whole = CommutatorDefect(CommutatorDefect.Options.model_validate({"batch_size": 10_000}), setup)
    assert whole.batch_size == len(task.train) // 2


def stacked_commutator(w_q: torch.Tensor, w_k: torch.Tensor) -> float:
    """The d_model x d_model matrices as the heads' d_model x d_head blocks side by side, then the commutator."""
    q = torch.cat(list(w_q), dim=1).double()  # [d_model, heads * d_head]
    k = torch.cat(list(w_k), dim=1).double()
    return float(torch.linalg.matrix_norm(q @ k - k @ q))


def test_qk_commutator_from_stacked_head_weights(task):
    model = bridge(task, d_model=8, n_heads=2)
    w_q, w_k = model.W_Q[0].detach(), model.W_K[0].detach()
    values = qk_commutator_norms(w_q, w_k, per_head=True)
    assert values[""] == pytest.approx(stacked_commutator(w_q, w_k), rel=1e-10)
    q = torch.cat(list(w_q), dim=1).double()
    k = torch.cat(list(w_k), dim=1).double()
    for head in range(2):
        block = slice(4 * head, 4 * head + 4)
        qb, kb = q[block, block], k[block, block]
        assert values[f"H{head}"] == pytest.approx(float(torch.linalg.matrix_norm(qb @ kb - kb @ qb)), rel=1e-10)
    # Commuting matrices (both diagonal) give 0; this is what the measure's norm says about them.
    diagonal = torch.diag(torch.arange(1.0, 9.0)).reshape(8, 2, 4).permute(1, 0, 2)
    assert qk_commutator_norms(diagonal, 2 * diagonal, per_head=False)[""] == 0.0


def test_qk_measure_reads_every_layer_of_a_bridge(task):
    spec = ModelSpec(n_layers=2, d_model=8, n_heads=2, d_mlp=16)
    model = build_model(spec, len(task.vocab), task.seq_len, 0, CPU)
    setup = MeasureSetup(n_layers=2, d_model=8, task=task, device=CPU, seed=0)
    measure = QKCommutator(QKCommutator.Options.model_validate({"per_head": True}), setup)
    values = measure.compute(MeasureContext(step=0, model=model, activations={}, lr=1e-3))
    assert sorted(values) == sorted(f"commutator/qk/L{layer}{head}" for layer in (0, 1) for head in ("", "/H0", "/H1"))
    for layer in (0, 1):
        assert values[f"commutator/qk/L{layer}"] == pytest.approx(stacked_commutator(model.W_Q[layer].detach(), model.W_K[layer].detach()))
    with pytest.raises(ValueError, match="not square|not d_model"):
        qk_commutator_norms(torch.randn(2, 8, 3), torch.randn(2, 8, 3), per_head=False)


def test_options_declare_the_onset_rules_and_refuse_unknown_ones():
    defect = registry.measures.info("commutator_defect").Options
    assert [(pattern, rule.describe()) for pattern, rule in defect().onset_rules()] == [
        ("commutator/defect", "baseline_ratio(factor=10.0, floor=20.0, baseline_measurements=3, hold=1)")
    ]
    sigma = defect.model_validate({"onset": {"rule": "sigma"}}).onset_rules()[0][1]
    assert (sigma.rule, sigma.n_sd, sigma.baseline_measurements, sigma.hold) == ("sigma", 3.0, 10, 2)
    qk = registry.measures.info("qk_commutator").Options
    assert qk().onset_rules()[0][1].describe() == "peak(skip_first=3)"
    with pytest.raises(ValidationError, match="rule"):
        defect.model_validate({"onset": {"rule": "hunch"}})
    with pytest.raises(ValidationError):
        defect.model_validate({"onset": {"rule": "baseline_ratio", "factr": 5}})
    assert np.isfinite(defect().lr)
