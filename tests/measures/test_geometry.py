"""Geometry measures on matrices whose spectra we choose."""

from __future__ import annotations

import numpy as np
import pytest

from emergence.measures.geometry import participation_ratio, rankme, stable_rank


def matrix_with_singular_values(singular_values: list[float], n: int = 50, d: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(n, n)))
    v, _ = np.linalg.qr(rng.normal(size=(d, d)))
    s = np.zeros((n, d))
    s[range(len(singular_values)), range(len(singular_values))] = singular_values
    return u @ s @ v.T


def test_rankme_of_k_equal_singular_values_is_k():
    for k in (1, 3, 10):
        assert rankme(matrix_with_singular_values([2.0] * k)) == pytest.approx(k, rel=1e-4)


def test_rankme_matches_entropy_formula_on_uneven_spectrum():
    sigma = np.array([5.0, 3.0, 1.0, 0.5])
    all_sigma = np.concatenate([sigma, np.zeros(16)])  # a 50x20 matrix has 20 singular values; the epsilon touches all
    p = all_sigma / all_sigma.sum() + 1e-7
    expected = np.exp(-(p * np.log(p)).sum())
    assert rankme(matrix_with_singular_values(list(sigma))) == pytest.approx(expected, rel=1e-6)


def test_rankme_is_not_centred():
    # A constant offset makes the rank-1 mean direction dominate; centring would hide it.
    rng = np.random.default_rng(1)
    z = rng.normal(size=(200, 8)) + 100.0
    assert rankme(z) < 1.5


def test_participation_ratio_uses_centred_covariance():
    rng = np.random.default_rng(2)
    scales = np.array([3.0, 2.0, 1.0, 1.0])
    z = rng.normal(size=(200_000, 4)) * scales + 50.0  # the offset must not matter
    eigenvalues = scales**2
    expected = eigenvalues.sum() ** 2 / (eigenvalues**2).sum()
    assert participation_ratio(z) == pytest.approx(expected, rel=0.02)


def test_stable_rank_is_frobenius_over_spectral():
    sigma = [4.0, 2.0, 2.0]
    assert stable_rank(matrix_with_singular_values(sigma)) == pytest.approx((16 + 4 + 4) / 16)


def test_degenerate_inputs_do_not_crash():
    zeros = np.zeros((10, 4))
    assert rankme(zeros) == 1.0
    assert participation_ratio(zeros) == 0.0
    assert stable_rank(zeros) == 0.0
