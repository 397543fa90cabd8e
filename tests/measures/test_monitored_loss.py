"""The measures that differentiate a loss, on a model someone else trains (``emergence.Monitor``'s ``loss_fn``):
the same numbers as a trained run's where both apply, per-example gradients equal to one backward pass per
example (tied weights included), the model left as found, and probes on labels the user gives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from emergence.capture import CaptureRequest
from emergence.measures.base import MeasureContext, MeasureSetup
from emergence.measures.curvature import HessianTop, HessianTrace
from emergence.measures.gradients import FisherRank, GradCovRank, ParameterSlice
from emergence.measures.llc import LLC
from emergence.measures.monitored_loss import LossInputError, MonitoredLoss
from emergence.measures.probes import Probe
from emergence.models import build_model
from emergence.spec.schema import ModelSpec
from emergence.tasks import build_task
from emergence.train.loop import answer_loss

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def task():
    return build_task("binary_addition", 1, {"n_bits": 3}, 40, 20, 10, 0)


def bridge(task, seed: int = 1) -> torch.nn.Module:
    return build_model(ModelSpec(n_layers=1, d_model=16, n_heads=2, d_mlp=32), len(task.vocab), task.seq_len, seed, CPU)


def answer_nll_per_example(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """A user's loss_fn: each example's summed cross-entropy over its answer tokens (the trained run's Fisher
    differentiates exactly this, as a log-likelihood)."""
    tokens, mask = batch
    log_probs = torch.log_softmax(model(tokens)[:, :-1].float(), dim=-1)
    nll = -log_probs.gather(-1, tokens[:, 1:, None])[..., 0]
    return (nll * mask[:, 1:]).sum(dim=1)


def answer_mean_per_example(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    tokens, mask = batch
    return answer_nll_per_example(model, batch) / mask[:, 1:].sum(dim=1)


def trained(task, **fields: object) -> MeasureSetup:
    return MeasureSetup(n_layers=1, d_model=16, task=task, device=CPU, seed=3, **fields)


def monitored(loss: MonitoredLoss, **fields: object) -> MeasureSetup:
    return MeasureSetup(n_layers=1, d_model=0, task=None, device=CPU, seed=3, loss=loss, **fields)


def both(measure_class, task, model, batch, loss_fn, options: dict) -> tuple[dict[str, float], dict[str, float]]:
    """The measure's values in a trained run and under a Monitor whose diagnostic batch is the same examples."""
    context = MeasureContext(step=11, model=model, activations={}, lr=1e-3)
    opts = measure_class.Options.model_validate(options)
    from_task = measure_class(opts, trained(task)).compute(context)
    from_loss = measure_class(opts, monitored(MonitoredLoss(model, loss_fn, batch))).compute(context)
    return from_task, from_loss


def test_gradient_ranks_equal_the_trained_runs(task):
    model = bridge(task)
    batch = (task.diagnostic.tokens, task.diagnostic.target_mask)
    for measure_class, options in ((FisherRank, {"n_examples": 12, "chunk_size": 5}), (GradCovRank, {"max_parameters": 300})):
        from_task, from_loss = both(measure_class, task, model, batch, answer_nll_per_example, options)
        assert from_loss.keys() == from_task.keys()
        for key, value in from_task.items():
            assert from_loss[key] == pytest.approx(value, rel=1e-4), key


def test_curvature_and_llc_equal_the_trained_runs(task):
    """Each example of binary addition has the same number of answer tokens, so the mean of per-example means
    (the Monitor's) is the token-weighted mean (the trained run's): the same loss, the same numbers."""
    assert task.train.target_mask.sum(1).unique().numel() == 1
    model = bridge(task)
    batch = (task.train.tokens, task.train.target_mask)
    for measure_class, options in (
        (HessianTop, {"batch_size": 16}),
        (HessianTrace, {"batch_size": 16, "n_probes": 4}),
        (LLC, {"n_examples": 24, "batch_size": 8, "num_chains": 2, "num_draws": 10, "num_burnin_steps": 2}),
    ):
        from_task, from_loss = both(measure_class, task, model, batch, answer_mean_per_example, options)
        assert from_loss.keys() == from_task.keys()
        for key, value in from_task.items():
            assert from_loss[key] == pytest.approx(value, rel=1e-3, abs=1e-6), key
    # The bridge still holds its own parameters (functional_call restored each one, once).
    assert all(isinstance(p, torch.nn.Parameter) for _, p in model.named_parameters(remove_duplicate=False))
    # A loss_fn that gives only the mean serves the curvature and the LLC as well.
    mean_only = lambda model, batch: answer_loss(model(batch[0]), batch[0], batch[1])  # noqa: E731
    from_task, from_mean = both(LLC, task, model, batch, mean_only, {"n_examples": 24, "batch_size": 8, "num_chains": 2, "num_draws": 10})
    assert from_mean["llc/mean"] == pytest.approx(from_task["llc/mean"], rel=1e-3)


class TiedMixer(torch.nn.Module):
    """A language model whose output layer is its embedding (tied weights), not a TransformerLens model."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(8, 6)
        self.block = torch.nn.Linear(6, 6)
        self.head = torch.nn.Linear(6, 8, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(tokens).mean(1)
        return self.head(hidden + torch.tanh(self.block(hidden)))


def next_token_loss(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(model(tokens[:, :-1]), tokens[:, -1], reduction="none")


def test_per_example_gradients_are_one_backward_per_example_with_ties_kept():
    torch.manual_seed(0)
    model, tokens = TiedMixer(), torch.randint(0, 8, (7, 4))
    loss = MonitoredLoss(model, next_token_loss, tokens)
    assert loss.per_example and loss.n == 7
    selection = [ParameterSlice(name, p.numel()) for name, p in model.named_parameters()]
    assert [s.name for s in selection] == ["embed.weight", "block.weight", "block.bias"]  # head.weight is embed.weight
    rows = loss.per_example_gradients(selection, torch.arange(7), chunk_size=3)
    for i in range(7):
        model.zero_grad()
        next_token_loss(model, tokens[i : i + 1]).sum().backward()
        expected = torch.cat([p.grad.flatten() for p in model.parameters()])
        assert torch.allclose(rows[i], expected, atol=1e-6), i
    # Both uses of the tied matrix count: the embedding's gradient alone would differ.
    model.zero_grad()
    untied_head = torch.nn.Parameter(model.head.weight.detach().clone())
    hidden = model.embed(tokens[:1, :-1]).mean(1)
    logits = (hidden + torch.tanh(model.block(hidden))) @ untied_head.T
    torch.nn.functional.cross_entropy(logits, tokens[:1, -1]).backward()
    assert not torch.allclose(rows[0][: model.embed.weight.numel()], model.embed.weight.grad.flatten(), atol=1e-6)


def test_measures_leave_a_monitored_model_exactly_as_found():
    torch.manual_seed(0)
    model, tokens = TiedMixer(), torch.randint(0, 8, (12, 4))
    next_token_loss(model, tokens).mean().backward()
    model.block.bias.requires_grad_(False)
    model.train()
    before = {n: (p.detach().clone(), None if p.grad is None else p.grad.clone(), p.requires_grad) for n, p in model.named_parameters()}
    setup = monitored(MonitoredLoss(model, next_token_loss, tokens))
    context = MeasureContext(step=1, model=model, activations={}, lr=1e-3)
    for measure_class in (FisherRank, GradCovRank, HessianTop, HessianTrace, LLC):
        options = {"num_draws": 4, "num_burnin_steps": 0, "num_chains": 1} if measure_class is LLC else {}
        values = measure_class(measure_class.Options.model_validate(options), setup).compute(context)
        assert all(math.isfinite(v) for v in values.values()), measure_class.name
    assert model.training and model.head.weight is model.embed.weight
    for name, p in model.named_parameters():
        value, grad, flag = before[name]
        assert torch.equal(p, value) and p.requires_grad == flag
        assert (p.grad is None) == (grad is None) and (grad is None or torch.equal(p.grad, grad))


def test_a_loss_of_the_wrong_shape_or_that_raises_is_refused():
    model, tokens = TiedMixer(), torch.randint(0, 8, (5, 4))
    with pytest.raises(LossInputError, match=r"returned \(5, 8\) on a diagnostic batch of 5 examples"):
        MonitoredLoss(model, lambda m, batch: m(batch), tokens)
    with pytest.raises(LossInputError, match="raised ZeroDivisionError"):
        MonitoredLoss(model, lambda m, batch: 1 / 0, tokens)
    mean = MonitoredLoss(model, lambda m, batch: next_token_loss(m, batch).mean(), tokens)
    assert not mean.per_example
    with pytest.raises(LossInputError, match="per-example gradients need one loss per example"):
        mean.per_example_gradients([ParameterSlice("block.bias", 6)], torch.arange(5), 2)


def test_probes_on_labels_the_user_gives():
    """Features linearly present in the captured activations are decoded; a label the activations do not hold
    stays at chance; the first measurement is the baseline."""
    rng = np.random.default_rng(0)
    n, d = 200, 8
    activations = rng.normal(size=(n, d)).astype(np.float32)
    readable = (activations[:, 0] + 0.1 * rng.normal(size=n) > 0).astype(np.int64)
    noise = rng.integers(0, 2, size=n)
    setup = MeasureSetup(
        n_layers=1, d_model=0, task=None, device=CPU, seed=0, site_layers={"net.*": [("net", 0)]},
        features={"readable": readable, "noise": noise},
    )
    probe = Probe(Probe.Options.model_validate({"sites": ["net.*"]}), setup)
    assert probe.needs() == [CaptureRequest("net", 0, "last_input")]
    context = MeasureContext(step=0, model=torch.nn.Identity(), activations={CaptureRequest("net", 0): torch.from_numpy(activations)}, lr=0.0)
    values = probe.compute(context)
    assert values["probe/readable/accuracy"] > 0.9
    assert values["probe/noise/accuracy"] < 0.7
    assert values["probe/readable/baseline"] == values["probe/readable/accuracy"]  # the first call is the baseline
    later = probe.compute(MeasureContext(step=5, model=torch.nn.Identity(), activations={CaptureRequest("net", 0): torch.zeros(n, d)}, lr=0.0))
    assert later["probe/readable/baseline"] == values["probe/readable/accuracy"]
    assert later["probe/readable/accuracy"] < 0.75
    restored = Probe(Probe.Options.model_validate({"sites": ["net.*"]}), setup)
    restored.load_state_dict(probe.state_dict())
    assert restored.compute(context)["probe/readable/baseline"] == values["probe/readable/accuracy"]
