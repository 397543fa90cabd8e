"""The LLC against models whose learning coefficient is known, its reliability flag, and calibrate-llc."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from emergence import registry
from emergence.cli import app
from emergence.measures.base import MeasureContext, MeasureSetup
from emergence.measures.llc import (
    LLC,
    SGLDSettings,
    SGLDTrace,
    batch_stream,
    estimate_llc,
    sgld_loss_trace,
    trace_rise,
)
from emergence.models import build_model
from emergence.spec.schema import ModelSpec
from emergence.tasks import build_task
from emergence.train.loop import answer_loss

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


# -- linear regression: a regular model, lambda = d/2 -----------------------------------------------


def regression(d: int, n: int = 1000, seed: int = 0):
    """y = X w0 + N(0, 1); loss = mean 0.5 (y - Xw)^2, the Gaussian NLL up to a constant; w* = OLS."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ torch.randn(d, generator=g, dtype=torch.float64) + torch.randn(n, generator=g, dtype=torch.float64)
    w_star = torch.linalg.lstsq(x, y[:, None]).solution[:, 0]

    def loss_fn(params, index):
        return 0.5 * ((y[index] - x[index] @ params["w"]) ** 2).mean()

    def reference(index):
        return float(loss_fn({"w": w_star}, index))

    return x, w_star, loss_fn, reference


def exact_sgld_llc(x: torch.Tensor, nbeta: float, gamma: float, lr: float) -> float:
    """The expectation the sampler converges to, computed independently in closed form.

    The loss is quadratic: L(w) - L(w*) = 1/2 d^T S d with S = X^T X / n. Full-batch SGLD is the
    linear recursion d' = (I - lr A / 2) d + sqrt(lr) xi with A = nbeta S + gamma I, whose stationary
    covariance along an eigenvalue a of A is 1 / (a (1 - lr a / 4)) (solve c = (1 - lr a/2)^2 c + lr).
    So nbeta E[L - L*] = 1/2 sum_i nbeta s_i / (a_i (1 - lr a_i / 4)); -> d/2 as gamma, lr -> 0."""
    s = torch.linalg.eigvalsh(x.T @ x / len(x)).numpy()
    a = nbeta * s + gamma
    return float(0.5 * np.sum(nbeta * s / (a * (1 - lr * a / 4))))


@pytest.mark.parametrize("d", [4, 12])
def test_llc_of_a_regular_model_is_half_its_dimension(d):
    x, w_star, loss_fn, reference = regression(d)
    n = len(x)
    nbeta = n / math.log(n)
    settings = SGLDSettings(lr=1e-3, localization=1.0, nbeta=nbeta, num_chains=4, num_draws=2000, num_burnin_steps=100)
    trace = sgld_loss_trace(loss_fn, reference, {"w": w_star}, n, n, settings, seed=1)
    estimate = estimate_llc(trace, reference(torch.arange(n)), nbeta, 100, rise_tolerance=0.1)

    exact = exact_sgld_llc(x, nbeta, 1.0, 1e-3)
    # Over 12 seeds the error against `exact` had a standard deviation of 5.6% (d=4) and 4.2% (d=12)
    # of it with 500 draws per chain; 2000 draws halve that, so 10% is more than 3.5 sigma.
    assert estimate.mean == pytest.approx(exact, rel=0.10)
    # Against the theory's d/2: localization moves the target by -0.7%, the step size by +3%.
    assert estimate.mean == pytest.approx(d / 2, rel=0.15)
    assert not estimate.unreliable
    assert np.isfinite(estimate.per_chain).all() and estimate.std > 0
    assert estimate.mean == pytest.approx(float(np.mean(estimate.per_chain)))
    # By hand from the trace: draws after burn-in only.
    by_hand = nbeta * (trace.loss[:, 100:].mean(axis=1) - reference(torch.arange(n)))
    assert np.allclose(estimate.per_chain, by_hand)


def test_sampler_is_deterministic_and_leaves_its_start_alone():
    x, w_star, loss_fn, reference = regression(3, n=200)
    start = w_star.clone()
    settings = SGLDSettings(1e-3, 1.0, 30.0, 2, 20, 5)
    a = sgld_loss_trace(loss_fn, reference, {"w": w_star}, 200, 50, settings, seed=4)
    b = sgld_loss_trace(loss_fn, reference, {"w": w_star}, 200, 50, settings, seed=4)
    c = sgld_loss_trace(loss_fn, reference, {"w": w_star}, 200, 50, settings, seed=5)
    assert np.array_equal(a.loss, b.loss) and not np.array_equal(a.loss, c.loss)
    assert not np.array_equal(a.loss[0], a.loss[1])  # chains are independent
    assert torch.equal(w_star, start) and not w_star.requires_grad and w_star.grad is None
    # The baseline is the same batches' loss at the start: at step 0 the weights are the start.
    assert np.allclose(a.loss[:, 0], a.baseline[:, 0])


def test_batch_stream_covers_every_example_once_per_epoch():
    at = batch_stream(10, 3, seed=0)  # 3 batches of 3 per epoch, one example left out each epoch
    epoch = torch.cat([at(0), at(1), at(2)])
    assert len(set(epoch.tolist())) == 9
    assert not torch.equal(torch.cat([at(3), at(4), at(5)]), epoch)  # a new shuffle every epoch
    assert torch.equal(batch_stream(5, 100, 0)(7).sort().values, torch.arange(5))  # full batch


# -- the unreliable flag ------------------------------------------------------------------------------


def test_trace_rise_on_explicit_traces():
    rng = np.random.default_rng(0)
    noise = rng.normal(scale=0.3, size=(4, 100))
    ramp = np.linspace(0.0, 2.0, 100)  # mean 1: second-half mean - first-half mean = 1
    relative, significant = trace_rise(ramp + noise)
    assert significant and relative == pytest.approx(1.0, abs=0.15)
    relative, significant = trace_rise(1.0 + noise)
    assert not significant and abs(relative) < 0.15
    relative, significant = trace_rise(2.0 - ramp + noise)  # falling: never rising
    assert not significant and relative < 0


def test_a_chain_still_climbing_after_burn_in_is_unreliable():
    x, w_star, loss_fn, reference = regression(10)
    n, nbeta = len(x), len(x) / math.log(len(x))
    # Relaxation time 2 / (lr nbeta s) ~ 1400 steps: 100 draws without burn-in are still climbing.
    slow = SGLDSettings(1e-5, 1.0, nbeta, 4, 100, 0)
    estimate = estimate_llc(sgld_loss_trace(loss_fn, reference, {"w": w_star}, n, 100, slow, 0), reference(torch.arange(n)), nbeta, 0, 0.1)
    assert estimate.rising and estimate.unreliable and not estimate.non_finite
    assert estimate.rise > 0.5 and estimate.mean < 2.5  # far below d/2 = 5: the reason for the flag
    # Relaxation ~14 steps: flat after 50 steps of burn-in.
    fast = SGLDSettings(1e-3, 1.0, nbeta, 4, 100, 50)
    estimate = estimate_llc(sgld_loss_trace(loss_fn, reference, {"w": w_star}, n, 100, fast, 0), reference(torch.arange(n)), nbeta, 50, 0.1)
    assert not estimate.unreliable and estimate.mean == pytest.approx(5.0, rel=0.3)


def test_a_diverging_chain_gives_nan_and_unreliable_not_an_error():
    x, w_star, loss_fn, reference = regression(4)
    n, nbeta = len(x), len(x) / math.log(len(x))
    trace = sgld_loss_trace(loss_fn, reference, {"w": w_star}, n, 100, SGLDSettings(1.0, 1.0, nbeta, 2, 200, 0), 0)  # overflows within ~90 steps
    assert np.isnan(trace.loss).any()
    estimate = estimate_llc(trace, reference(torch.arange(n)), nbeta, 0, 0.1)
    assert estimate.non_finite and estimate.unreliable and math.isnan(estimate.mean)
    assert np.isnan(estimate.per_chain).all()


def test_one_nan_chain_leaves_the_others_and_flags_the_estimate():
    loss = np.full((3, 10), 1.5)
    loss[1, 4:] = np.nan
    estimate = estimate_llc(SGLDTrace(loss, np.ones((3, 10))), 1.0, 2.0, 2, 0.1)
    assert estimate.unreliable and estimate.non_finite
    assert estimate.per_chain[0] == estimate.per_chain[2] == pytest.approx(1.0) and math.isnan(estimate.per_chain[1])
    assert estimate.mean == pytest.approx(1.0) and estimate.std == 0.0


# -- the Measure on a real TransformerBridge -----------------------------------------------------------


@pytest.fixture(scope="module")
def task():
    return build_task("binary_addition", 1, {"n_bits": 3}, 40, 20, 10, 0)


def tiny_bridge(task, seed: int = 0):
    spec = ModelSpec(n_layers=1, d_model=16, n_heads=2, d_mlp=32)
    return build_model(spec, len(task.vocab), task.seq_len, seed, CPU)


def make_measure(task, **options):
    base = {"num_chains": 2, "num_draws": 10, "num_burnin_steps": 4, "batch_size": 16}
    return LLC(LLC.Options.model_validate({**base, **options}), MeasureSetup(1, 16, task, CPU, seed=3))


def test_measure_on_a_real_bridge(task):
    model = tiny_bridge(task, seed=1)
    measure = make_measure(task)
    assert registry.measures.get("llc") is LLC
    assert LLC.cost == "expensive" and LLC.default_every == 1000
    assert len(measure.tokens) == len(task.train)  # n_examples 1024 > 40: the whole split
    assert measure.nbeta == pytest.approx(16 / math.log(16))  # devinterp's default_nbeta(batch)

    context = MeasureContext(step=7, model=model, activations={}, lr=1e-3)
    values = measure.compute(context)
    assert set(values) == {
        "llc/mean", "llc/std", "llc/unreliable", "llc/rise", "llc/init_loss", "llc/nbeta", "llc/chain_0", "llc/chain_1"
    }
    assert all(math.isfinite(v) for v in values.values())
    assert values["llc/unreliable"] in (0.0, 1.0)
    # L(w*) is answer_loss over the subset, computed here the plain way.
    with torch.no_grad():
        direct = float(answer_loss(model(task.train.tokens), task.train.tokens, task.train.target_mask))
    assert values["llc/init_loss"] == pytest.approx(direct, rel=1e-5)
    # SGLD moved the weights: the loss changed (not the silently detached functional_call).
    assert measure.last_trace.shape == (2, 14)
    assert np.abs(measure.last_trace - measure.last_estimate.baseline).max() > 1e-6
    assert values["llc/mean"] == pytest.approx(
        values["llc/nbeta"] * (measure.last_trace[:, 4:].mean() - values["llc/init_loss"]), rel=1e-6
    )
    # Deterministic given (seed, step); another step draws other noise.
    assert measure.compute(context) == values
    assert measure.compute(MeasureContext(step=8, model=model, activations={}, lr=1e-3))["llc/mean"] != values["llc/mean"]


def test_measure_leaves_the_model_exactly_as_found(task):
    model = tiny_bridge(task, seed=2)
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
    before_rng = torch.get_rng_state()

    make_measure(task, lr=1e-2).compute(MeasureContext(step=1, model=model, activations={}, lr=1e-3))

    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], before_values[n]) for n in params)
    assert all(
        (after[n].grad is None and before_grads[n] is None) or torch.equal(after[n].grad, before_grads[n]) for n in params
    )
    assert before_grads[frozen_name] is not None
    assert {n: p.requires_grad for n, p in after.items()} == before_flags
    assert {n: m.training for n, m in model.named_modules()} == before_modes
    assert torch.equal(torch.get_rng_state(), before_rng)  # the training run's random stream is untouched


def test_non_finite_weights_give_unreliable_not_an_error(task):
    model = tiny_bridge(task, seed=2)
    with torch.no_grad():
        next(iter(model.parameters())).fill_(float("nan"))
    values = make_measure(task).compute(MeasureContext(step=1, model=model, activations={}, lr=1e-3))
    assert values["llc/unreliable"] == 1.0 and math.isnan(values["llc/mean"])


def test_options_are_strict_and_subset_is_drawn_from_the_run_seed(task):
    with pytest.raises(ValidationError):
        LLC.Options.model_validate({"n_probes": 5})
    with pytest.raises(ValidationError):
        LLC.Options.model_validate({"num_draws": 1})
    a, b = make_measure(task, n_examples=8), make_measure(task, n_examples=8)
    assert len(a.tokens) == 8 and torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, task.train.tokens[:8])
    assert make_measure(task, nbeta=3.5).nbeta == 3.5


# -- calibrate-llc end to end --------------------------------------------------------------------------


def test_calibrate_llc_on_a_tiny_run(tmp_path):
    spec = yaml.safe_load((Path(__file__).parents[2] / "specs" / "tiny.yaml").read_text(encoding="utf-8"))
    spec["training"]["steps"] = 20
    spec["execution"] = {"output_dir": str(tmp_path / "runs")}
    spec["measures"] = [{"name": "stable_rank"}]
    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(spec_path), "--quiet"])
    assert result.exit_code == 0, result.output

    args = ["calibrate-llc", str(spec_path), "--lr", "1e-4", "--lr", "1e-3", "--nbeta", "20", "--num-chains", "2",
            "--num-draws", "8", "--num-burnin-steps", "4", "--batch-size", "32", "--n-examples", "64"]
    result = runner.invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    run_dirs = list((tmp_path / "runs" / "tiny").iterdir())
    assert len(run_dirs) == 1
    run_dir = run_dirs[0]
    assert "LLC calibration, step 20" in result.output and "1e-04" not in result.output  # rendered with :g
    assert "0.0001" in result.output and "0.001" in result.output
    payload = json.loads((run_dir / "llc_calibration.json").read_text(encoding="utf-8"))
    assert (run_dir / "llc_calibration.png").stat().st_size > 1000
    assert payload["checkpoint_step"] == 20 and payload["n_examples"] == 64
    swept = [(r["lr"], r["localization"], r["nbeta"]) for r in payload["results"]]
    assert swept == [(1e-4, 100.0, 20.0), (1e-3, 100.0, 20.0)]
    if payload["recommended"] is None:
        assert "no setting gave flat" in result.output
    else:
        chosen = payload["recommended_settings"]
        assert (chosen["lr"], chosen["localization"], chosen["nbeta"]) in swept
        assert payload["results"][payload["recommended"]]["acceptable"]
        assert "recommended: lr=" in result.output

    missing = runner.invoke(app, [*args[:2], "--checkpoint", "7"])
    assert missing.exit_code == 2 and "no checkpoint for step 7" in missing.output


def test_a_negative_estimate_is_unreliable():
    from emergence.measures.llc import LLCEstimate

    flat = np.zeros((2, 4))
    estimate = LLCEstimate(mean=-3.0, std=0.1, per_chain=np.array([-3.1, -2.9]), init_loss=1.0, nbeta=10.0, rise=0.0,
                           rising=False, non_finite=False, trace=flat, baseline=flat, num_burnin_steps=1)
    assert estimate.unreliable
    assert not LLCEstimate(**{**estimate.__dict__, "mean": 3.0}).unreliable


def test_recommendation_prefers_the_step_size_whose_llc_is_stable_across_localizations():
    from emergence.measures.llc import LLCEstimate, SGLDSettings
    from emergence.studies.llc_calibration import CalibrationResult, localization_spread, recommend

    flat = np.zeros((2, 4))

    def result(lr: float, gamma: float, mean: float, std: float) -> CalibrationResult:
        estimate = LLCEstimate(mean=mean, std=std, per_chain=np.array([mean, mean]), init_loss=1.0, nbeta=46.0, rise=0.0,
                               rising=False, non_finite=False, trace=flat, baseline=flat, num_burnin_steps=1)
        return CalibrationResult(SGLDSettings(lr, gamma, 46.0, 2, 4, 1), estimate)

    # The addition checkpoint's sweep (step 1000): every trace flat; lr = 1e-3 has the smallest chain spread
    # at gamma = 1000 but an LLC that more than doubles with gamma.
    results = [
        result(1e-4, 10, 35.25, 1.32), result(1e-3, 10, 48.29, 2.6),
        result(1e-4, 100, 34.24, 1.92), result(1e-3, 100, 52.03, 2.73),
        result(1e-4, 1000, 31.25, 0.164), result(1e-3, 1000, 108.9, 0.39),
    ]
    spread = localization_spread(results)
    assert spread[0] == pytest.approx((35.25 - 31.25) / np.mean([35.25, 34.24, 31.25]))
    assert spread[1] == spread[3] == spread[5] > 0.8
    assert recommend(results) == 4  # lr 1e-4; among its gammas the lowest std/mean
    assert recommend(results[:2]) == 0  # one gamma each: chain agreement alone decides (1.32/35 < 2.6/48)


def test_with_two_chains_every_chain_must_rise_on_its_own():
    draws = np.linspace(0.0, 1.0, 40)
    climbing, flat = 1.0 + draws, np.full(40, 1.5)
    both = estimate_llc(SGLDTrace(np.stack([climbing, climbing + 0.1]), np.zeros((2, 40))), 0.0, 1.0, 0, 0.1)
    assert both.rising and both.unreliable  # a t-test across two chains would have passed this as flat
    one = estimate_llc(SGLDTrace(np.stack([climbing, flat]), np.zeros((2, 40))), 0.0, 1.0, 0, 0.1)
    assert not one.rising
