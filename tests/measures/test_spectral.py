"""Spectral edge against the SVD of explicitly stacked update vectors (numpy), on planted trajectories."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from emergence import registry
from emergence.measures.base import MeasureContext, MeasureSetup
from emergence.measures.spectral import (
    PROJECTION_CHUNK_ROWS,
    GaussianProjection,
    SpectralEdge,
    adiabatic_band,
    adiabatic_parameter,
    spectral_statistics,
)
from emergence.models import build_model
from emergence.spec.schema import ModelSpec
from emergence.tasks import build_task
from emergence.train.loop import answer_loss

CPU = torch.device("cpu")
KEYS = {"k_star", "gap_ratio", "sigma1_sigma2", "sigma2_sigma3", "g23", "gap", "sigma1"}


class Flat(torch.nn.Module):
    """A model that is just a parameter vector (split in two named tensors), so tests set theta directly."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.b = torch.nn.Parameter(torch.zeros(n - n // 2, dtype=torch.float64))
        self.a = torch.nn.Parameter(torch.zeros(n // 2, dtype=torch.float64))

    def set(self, theta: np.ndarray) -> None:
        # Sorted-name order is a then b: the measure must flatten in that order, not registration order.
        with torch.no_grad():
            self.a.copy_(torch.tensor(theta[: self.a.numel()]))
            self.b.copy_(torch.tensor(theta[self.a.numel() :]))


def setup_for(seed: int = 0) -> MeasureSetup:
    task = build_task("binary_addition", 1, {"n_bits": 3}, 8, 4, 4, 0)
    return MeasureSetup(n_layers=1, d_model=4, task=task, device=CPU, seed=seed)


def make_measure(seed: int = 0, **options) -> SpectralEdge:
    return SpectralEdge(SpectralEdge.Options(**options), setup_for(seed))


def planted_deltas(n_steps: int, p: int, strengths: list[float], noise: float, seed: int) -> np.ndarray:
    """Updates drawn from a planted low-rank subspace (one strength per direction) plus isotropic noise."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(p, len(strengths))))[0]
    coefficients = rng.normal(size=(n_steps, len(strengths))) * np.asarray(strengths)
    return coefficients @ basis.T + noise * rng.normal(size=(n_steps, p))


def run_trajectory(measure: SpectralEdge, deltas: np.ndarray, lrs: list[float] | None = None, start: int = 0) -> list[dict]:
    """Feed theta_0 = 0, theta_t = theta_{t-1} + delta_t through the Measure; one call per snapshot."""
    model = Flat(deltas.shape[1])
    thetas = np.vstack([np.zeros(deltas.shape[1]), np.cumsum(deltas, axis=0)])
    out = []
    for step, theta in enumerate(thetas[start:], start=start):
        model.set(theta)
        out.append(measure.compute(MeasureContext(step=step, model=model, activations={}, lr=(lrs or [1.0] * len(thetas))[step])))
    return out


def reference(window: np.ndarray) -> dict[str, float]:
    """The definitions computed independently: SVD of the stacked W x P matrix."""
    sigma = np.linalg.svd(window, compute_uv=False)
    ratios = sigma[:-1] / sigma[1:]
    k = int(np.argmax(ratios))
    return {
        "k_star": k + 1,
        "gap_ratio": ratios[k],
        "sigma1_sigma2": sigma[0] / sigma[1],
        "sigma2_sigma3": sigma[1] / sigma[2],
        "g23": sigma[1] ** 2 - sigma[2] ** 2,
        "gap": sigma[k] ** 2 - sigma[k + 1] ** 2,
        "sigma1": sigma[0],
    }


def test_planted_rank_two_gives_k_star_two_and_matches_svd():
    deltas = planted_deltas(10, 400, [3.0, 2.0], noise=0.01, seed=0)
    values = spectral_statistics(deltas @ deltas.T)
    expected = reference(deltas)
    assert values["k_star"] == 2
    assert values["gap_ratio"] > 5  # the planted gap is large, noise sigma ~ 0.01 * sqrt(400)
    for key in KEYS:
        assert values[key] == pytest.approx(expected[key], rel=1e-9), key


def test_rank_one_plant_moves_k_star_to_one():
    deltas = planted_deltas(10, 400, [3.0], noise=0.01, seed=1)
    assert spectral_statistics(deltas @ deltas.T)["k_star"] == 1


def test_measure_logs_nothing_until_window_is_full_then_matches_svd_of_last_w_deltas():
    window = 4
    deltas = planted_deltas(9, 301, [3.0, 2.0], noise=0.02, seed=2)
    deltas[0] *= 50  # a huge first update: were it kept past its time, sigma1 would stay large
    results = run_trajectory(make_measure(window=window), deltas)
    assert results[:window] == [{}] * window  # first call: snapshot only; then 1..W-1 deltas
    for t in range(window, len(results)):
        expected = reference(deltas[t - window : t])  # deltas t-W+1 .. t (deltas[i] moves theta_i -> theta_{i+1})
        for key in KEYS:
            assert results[t][f"spectral/{key}"] == pytest.approx(expected[key], rel=1e-6), (t, key)
    assert results[window]["spectral/sigma1"] > 4 * results[window + 1]["spectral/sigma1"]  # oldest dropped
    assert "spectral/adiabatic" not in results[window]  # G(t-1) was not a full window yet
    assert "spectral/adiabatic" in results[window + 1]


def test_adiabatic_parameter_against_hand_computation():
    window, lr = 3, 0.1
    deltas = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.5, 0.1], [0.3, 0.0, 0.0, 1.5]])
    results = run_trajectory(make_measure(window=window), deltas, lrs=[lr] * 5)
    # G(t-1) from deltas 0..2, G(t) from deltas 1..3, entries written out: <d_i, d_j>.
    g_prev = np.array([[1.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 0.26]])
    g_now = np.array([[4.0, 0.0, 0.0], [0.0, 0.26, 0.15], [0.0, 0.15, 0.09 + 2.25]])
    eigenvalues = np.sort(np.linalg.eigvalsh(g_now))[::-1]
    sigma = np.sqrt(eigenvalues)
    k = int(np.argmax(sigma[:-1] / sigma[1:]))
    expected = np.sqrt(((g_now - g_prev) ** 2).sum()) / (lr * (eigenvalues[k] - eigenvalues[k + 1]) ** 2)
    assert results[-1]["spectral/adiabatic"] == pytest.approx(expected, rel=1e-9)
    assert adiabatic_parameter(g_now, g_prev, lr, eigenvalues[k] - eigenvalues[k + 1]) == pytest.approx(expected, rel=1e-12)
    assert results[-1]["spectral/adiabatic_band"] == adiabatic_band(expected, 0.5, 2.0)


def test_adiabatic_bands_and_degenerate_denominator():
    assert [adiabatic_band(a, 0.5, 2.0) for a in (0.1, 0.5, 1.0, 2.0, 2.5)] == [0, 1, 1, 1, 2]
    assert adiabatic_band(1.0, 1.5, 3.0) == 0  # thresholds are options
    assert np.isnan(adiabatic_parameter(np.eye(3), np.eye(3), 0.0, 1.0))  # lr = 0 in warmup
    measure = make_measure(window=3, adiabatic_transition_at=1e-9, adiabatic_unstable_at=1e-8)
    deltas = planted_deltas(5, 50, [1.0, 1.0], noise=0.1, seed=3)
    assert run_trajectory(measure, deltas)[-1]["spectral/adiabatic_band"] == 2


def test_a_motionless_window_gives_nan_not_an_error():
    values = spectral_statistics(np.zeros((4, 4)))
    assert np.isnan(values["gap_ratio"]) and values["sigma1"] == 0


def test_projection_keeps_k_star_and_gap_ratio_close_and_improves_with_dimension():
    p, window = 20_000, 10
    errors: dict[int, list[float]] = {100: [], 400: []}
    for seed in range(4):
        deltas = planted_deltas(window, p, [1.0, 1.0], noise=0.002, seed=seed)
        exact = spectral_statistics(deltas @ deltas.T)
        for dim in errors:
            projection = GaussianProjection(p, dim, seed, CPU)
            projected = np.stack([projection(torch.tensor(d, dtype=torch.float32)).numpy() for d in deltas])
            values = spectral_statistics(projected @ projected.T)
            assert values["k_star"] == exact["k_star"] == 2
            errors[dim].append(abs(values["gap_ratio"] / exact["gap_ratio"] - 1))
    # d = 10 W: within 25% (the isotropic bulk's top singular value is inflated by ~sqrt((W - k*) / d)).
    assert max(errors[100]) < 0.25
    assert np.mean(errors[400]) < np.mean(errors[100])


def test_streamed_projection_is_the_held_matrix_and_depends_on_the_seed():
    p, dim = PROJECTION_CHUNK_ROWS + 123, 3  # two blocks, the second partial
    vector = torch.randn(p, generator=torch.Generator().manual_seed(0))
    held = GaussianProjection(p, dim, seed=7, device=CPU, hold=True)
    streamed = GaussianProjection(p, dim, seed=7, device=CPU, hold=False)
    assert held._held is not None and streamed._held is None
    torch.testing.assert_close(held(vector), streamed(vector), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(held(vector), held._held.double().T @ vector.double(), rtol=1e-10, atol=1e-10)
    assert not torch.allclose(held(vector), GaussianProjection(p, dim, seed=8, device=CPU)(vector))


def test_measure_with_projection_uses_the_seeded_matrix():
    deltas = planted_deltas(4, 500, [2.0, 1.0], noise=0.01, seed=4)
    result = run_trajectory(make_measure(seed=5, window=3, projection_dim=30), deltas)[-1]
    projection = GaussianProjection(500, 30, seed=5, device=CPU)
    projected = np.stack([projection(torch.tensor(d)).numpy() for d in deltas[1:]])
    assert result["spectral/gap_ratio"] == pytest.approx(spectral_statistics(projected @ projected.T)["gap_ratio"], rel=1e-6)
    exact = run_trajectory(make_measure(seed=5, window=3, projection_dim="auto"), deltas)[-1]  # small P: auto = exact
    assert exact["spectral/gap_ratio"] == pytest.approx(reference(deltas[1:])["gap_ratio"], rel=1e-6)


def test_state_dict_round_trip_continues_exactly():
    deltas = planted_deltas(14, 200, [3.0, 1.0], noise=0.05, seed=6)
    lrs = list(np.linspace(0.5, 1.0, 15))
    uninterrupted = run_trajectory(make_measure(window=4, projection_dim=20), deltas, lrs)
    first = make_measure(window=4, projection_dim=20)
    run_trajectory(first, deltas[:6], lrs)  # calls at steps 0..6
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = make_measure(window=4, projection_dim=20)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    continued = run_trajectory(resumed, deltas, lrs, start=7)
    assert continued == uninterrupted[7:]
    assert any("spectral/adiabatic" in values for values in continued)
    with pytest.raises(ValueError, match="window"):
        make_measure(window=5).load_state_dict(first.state_dict())


def test_repeated_step_does_not_move_the_window():
    measure = make_measure(window=3)
    deltas = planted_deltas(4, 30, [1.0], noise=0.1, seed=7)
    last = run_trajectory(measure, deltas)[-1]
    assert run_trajectory(measure, deltas, start=4) == [last]


def test_options_select_attention_weights_or_prefixes_and_reject_unknowns():
    model = build_model(ModelSpec(n_layers=2, d_model=16, n_heads=2, d_mlp=32), 6, 16, 0, CPU)
    attention = make_measure(parameters="attention")._selected(model)
    assert len(attention) == 8 and all(".attn." in n and n.endswith("weight") for n in attention)
    layer1 = make_measure(parameters=["layers.1.mlp"])._selected(model)
    assert len(layer1) == 4 and all(n.startswith("layers.1.") and ".mlp." in n for n in layer1)
    for bad in ({"window": 2}, {"nonsense": 1}, {"parameters": []}, {"adiabatic_transition_at": 3.0}):
        with pytest.raises(ValidationError):
            SpectralEdge.Options(**bad)
    assert registry.measures.get("spectral_edge") is SpectralEdge


def snapshot(model: torch.nn.Module) -> dict:
    return {
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
    }


def test_real_bridge_trained_a_few_steps_matches_stacked_deltas_and_is_left_untouched():
    torch.manual_seed(0)
    task = build_task("binary_addition", 1, {"n_bits": 3}, 40, 20, 10, 0)
    model = build_model(ModelSpec(n_layers=1, d_model=16, n_heads=2, d_mlp=32), len(task.vocab.tokens), task.seq_len, 0, CPU)
    setup = MeasureSetup(n_layers=1, d_model=16, task=task, device=CPU, seed=0)
    measure = SpectralEdge(SpectralEdge.Options(window=3), setup)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    thetas, results = [], []
    for step in range(6):
        thetas.append(np.concatenate([p.detach().double().reshape(-1).numpy() for _, p in sorted(model.named_parameters())]))
        model.head._original_component.weight.requires_grad_(step % 2 == 0)  # flags the measure must keep
        model.train(step % 2 == 0)
        before = snapshot(model)
        results.append(measure.compute(MeasureContext(step=step, model=model, activations={}, lr=1e-2)))
        after = snapshot(model)
        for part in ("params", "grads"):
            for name, value in before[part].items():
                assert (value is None) == (after[part][name] is None) and (value is None or torch.equal(value, after[part][name]))
        assert before["requires_grad"] == after["requires_grad"] and before["training"] == after["training"]
        model.head._original_component.weight.requires_grad_(True)
        optimizer.zero_grad()
        answer_loss(model(task.train.tokens), task.train.tokens, task.train.target_mask).backward()
        optimizer.step()
    assert results[:3] == [{}] * 3
    deltas = np.diff(np.stack(thetas), axis=0)
    for t in (3, 4, 5):
        expected = reference(deltas[t - 3 : t])
        assert results[t]["spectral/gap_ratio"] == pytest.approx(expected["gap_ratio"], rel=1e-4)
        assert results[t]["spectral/sigma1"] == pytest.approx(expected["sigma1"], rel=1e-5)
    assert np.isfinite(results[5]["spectral/adiabatic"])
