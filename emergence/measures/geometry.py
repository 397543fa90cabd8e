"""Representation geometry of residual-stream activations: RankMe, participation ratio, stable rank.

Definitions in METHODS.md. All three are computed in float64 from the float32 capture.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from emergence.capture import CaptureRequest
from emergence.measures.base import Measure, MeasureContext

RANKME_EPSILON = 1e-7


def rankme(activations: np.ndarray) -> float:
    """exp of the entropy of the normalised singular values, no centring (Garrido et al. 2023)."""
    singular_values = np.linalg.svd(np.asarray(activations, dtype=np.float64), compute_uv=False)
    total = singular_values.sum()
    if total == 0:
        return 1.0
    p = singular_values / total + RANKME_EPSILON
    return float(np.exp(-(p * np.log(p)).sum()))


def participation_ratio(activations: np.ndarray) -> float:
    """(sum lambda)^2 / sum lambda^2 over the eigenvalues of the centred covariance."""
    centred = np.asarray(activations, dtype=np.float64)
    centred = centred - centred.mean(axis=0, keepdims=True)
    eigenvalues = np.linalg.svd(centred, compute_uv=False) ** 2  # proportional to covariance eigenvalues
    denominator = (eigenvalues**2).sum()
    return float(eigenvalues.sum() ** 2 / denominator) if denominator > 0 else 0.0


def stable_rank(activations: np.ndarray) -> float:
    """||Z||_F^2 / ||Z||_2^2."""
    singular_values = np.linalg.svd(np.asarray(activations, dtype=np.float64), compute_uv=False)
    return float((singular_values**2).sum() / singular_values[0] ** 2) if singular_values[0] > 0 else 0.0


class GeometryMeasure(Measure):
    """What the three share: one statistic over the sites, layers and positions of ``GeometryOptions`` (``builtin.py``)."""

    statistic: ClassVar[staticmethod]

    def _layers(self) -> list[int]:
        layers = self.options.layers
        return list(range(self.setup.n_layers)) if layers == "all" else list(layers)

    def needs(self) -> list[CaptureRequest]:
        requests = []
        for site in self.options.sites:
            if self.setup.site_layers is not None:  # a monitored model: module paths, matched when it was built
                requests += [CaptureRequest(family, layer, self.options.position) for family, layer in self.setup.site_layers[site]]
                continue
            layers = [0] if site == "embed" else self._layers()
            requests += [CaptureRequest(site, layer, self.options.position) for layer in layers]
        return requests

    def _statistic(self, activations: np.ndarray) -> float:
        if not np.isfinite(activations).all():
            return float("nan")  # a diverging model: record NaN, let the loss check end the run
        return type(self).statistic(activations)

    def compute(self, context: MeasureContext) -> dict[str, float]:
        values = {}
        for request in self.needs():
            key = f"geometry/{self.name}/{request.site}/L{request.layer}"
            activations = context.activations[request].numpy()
            if request.position == "answer":
                for j in range(activations.shape[1]):
                    values[f"{key}/P{j}"] = self._statistic(activations[:, j])
            else:
                values[key] = self._statistic(activations)
        return values


class RankMe(GeometryMeasure, declared="rankme"):
    statistic = staticmethod(rankme)


class ParticipationRatio(GeometryMeasure, declared="participation_ratio"):
    statistic = staticmethod(participation_ratio)


class StableRank(GeometryMeasure, declared="stable_rank"):
    statistic = staticmethod(stable_rank)
