"""Causal ablation of probed features: does the model *use* the direction a probe reads? (METHODS.md)

For every answer position of a feature, the most accurate layer's binary probe gives a direction. With
the probe's weight scaled to unit length (and its bias with it), the residual stream x at that layer and
position is replaced by x - (w.x + b) w, which sets the probe's logit to 0 and leaves the orthogonal
complement of w untouched. All of a feature's positions are ablated at once, on the run's test set, and
exact match is compared with the unablated model and with controls that move x by the same amount along
random unit directions: x - (w.x + b) r. Exact match under these hooks is still greedy decoding
(``behavior.py``). Confidence intervals are percentile bootstraps over test examples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import bootstrap

from emergence.measures.base import MeasureContext, MeasureOptions, MeasureSetup
from emergence.measures.behavior import answer_statistics
from emergence.measures.builtin import AblationOptions  # noqa: F401  (its options, importable beside it)
from emergence.measures.probes import (
    ProbeFitting,
    ProbeResult,
    best_per_cell,
    family_of,
    probe_all,
)
from emergence.tasks.base import Split

ABLATION_TABLE_COLUMNS = [
    "family", "sites", "baseline", "baseline_lo", "baseline_hi", "ablated", "ablated_lo", "ablated_hi",
    "control", "control_lo", "control_hi", "drop", "relative_drop", "control_drop",
]
SITE_TABLE_COLUMNS = ["family", "feature", "position", "layer", "probe_accuracy"]


@dataclass(frozen=True)
class AblationSite:
    """One direction to remove: a binary probe at its best layer for one answer position."""

    feature: str
    layer: int
    position: int
    direction: torch.Tensor  # unit norm, [d]
    offset: float  # the probe's bias divided by the norm of its weight
    probe_accuracy: float


def ablation_sites(results: Sequence[ProbeResult]) -> list[AblationSite]:
    sites = []
    for (feature, position), best in sorted(best_per_cell(results).items()):
        if best.weight is None:
            continue
        norm = float(np.linalg.norm(best.weight))
        if norm == 0:
            continue
        direction = torch.tensor(best.weight / norm, dtype=torch.float32)
        sites.append(AblationSite(feature, best.layer, position, direction, best.bias / norm, best.accuracy))
    return sites


def remove_direction(x: torch.Tensor, direction: torch.Tensor, offset: float, along: torch.Tensor | None = None) -> torch.Tensor:
    """x - (direction . x + offset) * along, row by row; ``along`` defaults to ``direction`` (the ablation)."""
    logit = x @ direction + offset
    return x - logit[:, None] * (direction if along is None else along)


def ablation_hooks(
    sites: Sequence[AblationSite], site_name: str, controls: Sequence[torch.Tensor] | None = None
) -> Callable[[Split], list[tuple[str, Callable[..., Any]]]]:
    """Hooks for one chunk of examples; ``controls[i]`` (unit, [d]) replaces site i's direction of change."""
    by_layer: dict[int, list[int]] = {}
    for i, site in enumerate(sites):
        by_layer.setdefault(site.layer, []).append(i)

    def for_chunk(chunk: Split) -> list[tuple[str, Callable[..., Any]]]:
        def make_hook(indices: list[int]) -> Callable[..., torch.Tensor]:
            def hook(activations: torch.Tensor, hook: object) -> torch.Tensor:
                changed = activations.clone()
                for i in indices:
                    site = sites[i]
                    rows = torch.nonzero(chunk.answer_len > site.position).flatten().to(changed.device)
                    columns = (chunk.prompt_len.to(changed.device)[rows] - 1 + site.position)
                    direction = site.direction.to(changed.device, changed.dtype)
                    along = None if controls is None else controls[i].to(changed.device, changed.dtype)
                    changed[rows, columns] = remove_direction(changed[rows, columns], direction, site.offset, along)
                return changed

            return hook

        return [(f"blocks.{layer}.hook_{site_name}", make_hook(indices)) for layer, indices in by_layer.items()]

    return for_chunk


def random_unit_directions(n: int, d: int, generator: torch.Generator) -> list[torch.Tensor]:
    vectors = torch.randn(n, d, generator=generator)
    return list(vectors / vectors.norm(dim=1, keepdim=True))


def mean_with_interval(values: np.ndarray, n_resamples: int, confidence: float, seed: int) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap interval; a constant sample's interval is the constant itself."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if np.all(values == values[0]):
        return mean, mean, mean
    interval = bootstrap(
        (values,), np.mean, n_resamples=n_resamples, confidence_level=confidence, method="percentile",
        random_state=np.random.default_rng(seed),
    ).confidence_interval
    return mean, float(interval.low), float(interval.high)


class Ablation(ProbeFitting, declared="ablation"):
    def __init__(self, options: MeasureOptions, setup: MeasureSetup) -> None:
        super().__init__(options, setup)
        not_binary = sorted({f for f, kind in self.probe_set.kinds.items() if kind != "binary"})
        if not_binary:
            raise ValueError(f"ablation removes binary probe directions; {not_binary} are not binary features")

    def compute(self, context: MeasureContext) -> dict[str, float]:
        options = self.options
        if options.at == "end" and self.setup.total_steps is not None and context.step != self.setup.total_steps:
            return {}
        results = probe_all(context.model, self.probe_set, options, self.layers, self.setup.device)
        sites = ablation_sites(results)
        test = self.setup.task.test
        device = self.setup.device
        baseline = answer_statistics(context.model, test, device)[2].numpy()
        rows, site_rows, values = [], [], {}
        for family in sorted({family_of(f) for f in self.probe_set.features}):
            family_sites = [s for s in sites if family_of(s.feature) == family]
            site_rows += [[family, s.feature, s.position, s.layer, s.probe_accuracy] for s in family_sites]
            if not family_sites:
                continue
            ablated = answer_statistics(context.model, test, device, hooks=ablation_hooks(family_sites, options.site))[2].numpy()
            generator = torch.Generator().manual_seed(self.setup.seed * 1_000_003 + context.step)
            controls = np.mean(
                [
                    answer_statistics(
                        context.model, test, device,
                        hooks=ablation_hooks(family_sites, options.site, random_unit_directions(len(family_sites), self.setup.d_model, generator)),
                    )[2].numpy()
                    for _ in range(options.n_controls)
                ],
                axis=0,
            )
            seed = self.setup.seed + context.step
            stats = {
                name: mean_with_interval(sample, options.n_bootstrap, options.confidence, seed)
                for name, sample in (("baseline", baseline), ("ablated", ablated), ("control", controls))
            }
            drop = stats["baseline"][0] - stats["ablated"][0]
            relative = drop / stats["baseline"][0] if stats["baseline"][0] > 0 else math.nan
            control_drop = stats["baseline"][0] - stats["control"][0]
            rows.append([family, len(family_sites), *stats["baseline"], *stats["ablated"], *stats["control"], drop, relative, control_drop])
            prefix = f"ablation/{family}"
            for name, (mean, low, high) in stats.items():
                values.update({f"{prefix}/{name}": mean, f"{prefix}/{name}_lo": low, f"{prefix}/{name}_hi": high})
            values.update({f"{prefix}/drop": drop, f"{prefix}/relative_drop": relative, f"{prefix}/control_drop": control_drop,
                           f"{prefix}/sites": float(len(family_sites))})
        context.tables["ablation"] = (list(ABLATION_TABLE_COLUMNS), rows)
        context.tables["ablation_sites"] = (list(SITE_TABLE_COLUMNS), site_rows)
        return values
