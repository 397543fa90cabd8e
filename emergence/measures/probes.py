"""Linear probes: can a task's intermediate quantities (carries, queue membership ...) be read linearly off
the residual stream, per layer and answer position, and since when?

Each task labels its features at the position that predicts each answer token (``tasks/base.py``); the
probe at answer position j reads the residual stream at that same position. A probe is fitted on a fresh
probe set drawn from the task and scored on a held-out one, at every call, and once on the untrained model
(same init seed) as the baseline that "decodable" is judged against (METHODS.md, quiet features).

Kinds, from the labels of the probe set: binary (values in {0, 1}) and categorical (at most
``max_classes`` distinct values) get scikit-learn logistic regression (C = 100 as the study); more values
are numeric and get least squares, scored by the accuracy of the rounded prediction (every label is an
integer) and by R^2. A vector feature (``queue/A``, ``queue/B`` ...) is one binary probe per component;
its family (``queue``) is what the scalars and the verdicts summarise.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler

from emergence.capture import CaptureRequest, capture
from emergence.measures.base import Measure, MeasureContext, MeasureOptions, MeasureSetup
from emergence.measures.builtin import ProbeOptions
from emergence.tasks.base import NO_LABEL, Split

log = logging.getLogger(__name__)
Kind = Literal["binary", "categorical", "numeric"]
PROBE_SEED_OFFSET = 7_919  # the probe set's seed is the run seed plus this: other examples than train and test
MIN_HELD_OUT = 10  # a (feature, position) with fewer labelled held-out examples is not scored
PROBE_TABLE_COLUMNS = [
    "feature", "family", "layer", "position", "kind", "n_fit", "n_held_out", "accuracy", "log_loss", "r2", "baseline_accuracy",
]


@dataclass
class ProbeResult:
    """One probe: a feature component at one layer and answer position."""

    feature: str
    layer: int
    position: int
    kind: Kind
    n_fit: int
    n_held_out: int
    accuracy: float
    log_loss: float  # NaN for numeric probes
    r2: float  # NaN for classifiers
    weight: np.ndarray | None  # binary probes only, in raw residual-stream coordinates: logit = weight . x + bias
    bias: float

    @property
    def standard_error(self) -> float:
        return math.sqrt(max(self.accuracy * (1 - self.accuracy), 0.0) / self.n_held_out)


def family_of(feature: str) -> str:
    return feature.split("/", 1)[0]


def select_features(available: Sequence[str], wanted: Sequence[str] | None) -> list[str]:
    """Feature components to probe: all, or those whose family or own name is wanted."""
    if wanted is None:
        return sorted(available)
    chosen = [f for f in sorted(available) if f in wanted or family_of(f) in wanted]
    missing = [w for w in wanted if not any(f == w or family_of(f) == w for f in available)]
    if missing:
        families = sorted({family_of(f) for f in available})
        raise ValueError(f"unknown feature(s) {missing}; this task has {families}")
    return chosen


def label_kind(labels: np.ndarray, max_classes: int) -> Kind:
    values = np.unique(labels[labels != NO_LABEL])
    if np.isin(values, [0, 1]).all():
        return "binary"
    return "categorical" if len(values) <= max_classes else "numeric"


def fit_probe(
    x_fit: np.ndarray, y_fit: np.ndarray, x_held_out: np.ndarray, y_held_out: np.ndarray, kind: Kind, c: float, max_iter: int
) -> tuple[float, float, float, np.ndarray | None, float]:
    """(accuracy, log loss, R^2, weight, bias) of one probe; the weight only for a binary probe, in the
    coordinates of ``x`` (the standardisation the fit uses is folded back in)."""
    scaler = StandardScaler().fit(x_fit)
    z_fit, z_held_out = scaler.transform(x_fit), scaler.transform(x_held_out)
    if kind == "numeric":
        regression = LinearRegression().fit(z_fit, y_fit)
        predicted = regression.predict(z_held_out)
        accuracy = float(np.mean(np.rint(predicted) == y_held_out))
        return accuracy, math.nan, float(r2_score(y_held_out, predicted)), None, math.nan
    # newton-cg: 10-15 iterations where lbfgs hits max_iter on near-separable residual-stream features
    # (0.05 s against 1 s for 2,000 x 64 on this machine's CPU).
    classifier = LogisticRegression(C=c, max_iter=max_iter, solver="newton-cg")
    with warnings.catch_warnings():
        # A probe that separates its classes perfectly never converges at C = 100; its accuracy is still right.
        warnings.simplefilter("ignore", ConvergenceWarning)
        classifier.fit(z_fit, y_fit)
    probabilities = classifier.predict_proba(z_held_out)
    accuracy = float(np.mean(classifier.classes_[probabilities.argmax(1)] == y_held_out))
    # Manual log loss: a held-out label the fit set never showed gets probability 0 (clipped), not an error.
    column = {label: i for i, label in enumerate(classifier.classes_)}
    picked = np.array([probabilities[i, column[y]] if y in column else 0.0 for i, y in enumerate(y_held_out)])
    log_loss = float(-np.mean(np.log(np.clip(picked, 1e-15, 1.0))))
    if kind != "binary":
        return accuracy, log_loss, math.nan, None, math.nan
    scale = scaler.scale_
    weight = classifier.coef_[0] / scale
    bias = float(classifier.intercept_[0] - np.sum(classifier.coef_[0] * scaler.mean_ / scale))
    return accuracy, log_loss, math.nan, weight, bias


@dataclass
class ProbeSet:
    """The fresh examples probes are fitted and scored on, fixed for the whole run."""

    fit: Split
    held_out: Split
    features: list[str]
    kinds: dict[str, Kind]


def build_probe_set(setup: MeasureSetup, options: ProbeOptions) -> ProbeSet:
    if setup.make_examples is None:
        raise ValueError("probes need fresh task examples: MeasureSetup.make_examples is not set")
    fit_size, held_out_size = options.fit_size, options.held_out_size
    space = setup.task.input_space_size
    if fit_size + held_out_size > space:
        # A small task (parity over 10 bits has 1,024 inputs): every input, split 4:1.
        held_out_size = max(space // 5, 1)
        fit_size = space - held_out_size
        log.warning("probe set: %s has %d inputs; fitting on %d and scoring on %d", setup.task.name, space, fit_size, held_out_size)
    data = setup.make_examples(fit_size, held_out_size, setup.seed + PROBE_SEED_OFFSET)
    fit, held_out = (fits_context(split, setup.task.seq_len) for split in (data.train, data.test))
    features = select_features(list(fit.features), options.features)
    kinds = {f: label_kind(fit.features[f], options.max_classes) for f in features}
    return ProbeSet(fit, held_out, features, kinds)


def fits_context(split: Split, n_ctx: int) -> Split:
    """The examples that fit the model's context (fresh draws of a variable-length task can be longer than
    any the model was built for), padded to exactly ``n_ctx`` columns."""
    keep = torch.nonzero(split.prompt_len + split.answer_len <= n_ctx).flatten()
    kept = split.subset(keep)
    if kept.tokens.shape[1] > n_ctx:
        kept = dataclasses.replace(kept, tokens=kept.tokens[:, :n_ctx])  # only padding lies past n_ctx now
    return kept


def answer_activations(model: torch.nn.Module, split: Split, site: str, layers: Sequence[int], device: torch.device) -> dict[int, np.ndarray]:
    """layer -> [N, answer positions, d] float32 activations at the positions that predict each answer token."""
    requests = [CaptureRequest(site, layer, "answer") for layer in layers]
    _, captured = capture(model, split, requests, device)
    return {request.layer: captured[request].numpy() for request in requests}


def probe_all(
    model: torch.nn.Module, probe_set: ProbeSet, options: ProbeOptions, layers: Sequence[int], device: torch.device
) -> list[ProbeResult]:
    """Every probe of ``probe_set`` (feature component x layer x answer position) on ``model`` as it is now."""
    fit_acts = answer_activations(model, probe_set.fit, options.site, layers, device)
    held_acts = answer_activations(model, probe_set.held_out, options.site, layers, device)
    results = []
    for feature in probe_set.features:
        y_fit_all, y_held_all = probe_set.fit.features[feature], probe_set.held_out.features[feature]
        width = min(y_fit_all.shape[1], next(iter(fit_acts.values())).shape[1])
        for position in range(width):
            fit_rows = np.flatnonzero(y_fit_all[:, position] != NO_LABEL)
            held_rows = np.flatnonzero(y_held_all[:, position] != NO_LABEL)
            y_fit, y_held = y_fit_all[fit_rows, position], y_held_all[held_rows, position]
            if len(np.unique(y_fit)) < 2 or len(held_rows) < MIN_HELD_OUT:
                continue  # a constant label is not a feature; too few held-out labels cannot be scored
            for layer in layers:
                accuracy, log_loss, r2, weight, bias = fit_probe(
                    fit_acts[layer][fit_rows, position], y_fit, held_acts[layer][held_rows, position], y_held,
                    probe_set.kinds[feature], options.C, options.max_iter,
                )
                results.append(
                    ProbeResult(feature, layer, position, probe_set.kinds[feature], len(fit_rows), len(held_rows),
                                accuracy, log_loss, r2, weight, bias)
                )
    return results


def best_per_cell(results: Sequence[ProbeResult]) -> dict[tuple[str, int], ProbeResult]:
    """(feature, position) -> its most accurate layer's probe (the first layer on a tie)."""
    best: dict[tuple[str, int], ProbeResult] = {}
    for result in results:
        key = (result.feature, result.position)
        if key not in best or result.accuracy > best[key].accuracy:
            best[key] = result
    return best


def family_summary(results: Sequence[ProbeResult]) -> dict[str, dict[str, float]]:
    """Per feature family: the mean over (component, position) of the best layer's held-out accuracy,
    its standard error (the mean of the cells' binomial errors: cells share examples, so errors are not
    averaged down), the layer that is best on average, and each layer's mean accuracy (``L{layer}``)."""
    best = best_per_cell(results)
    summary: dict[str, dict[str, float]] = {}
    for family in sorted({family_of(r.feature) for r in results}):
        cells = [r for (feature, _), r in best.items() if family_of(feature) == family]
        by_layer: dict[int, list[float]] = {}
        for r in results:
            if family_of(r.feature) == family:
                by_layer.setdefault(r.layer, []).append(r.accuracy)
        summary[family] = {
            "accuracy": float(np.mean([r.accuracy for r in cells])),
            "se": float(np.mean([r.standard_error for r in cells])),
            "best_layer": float(max(by_layer, key=lambda layer: (np.mean(by_layer[layer]), -layer))),
            "cells": float(len(cells)),
            **{f"L{layer}": float(np.mean(accuracies)) for layer, accuracies in sorted(by_layer.items())},
        }
    return summary


# -- a monitored model: feature labels of its diagnostic examples, probes on what the Monitor captured --------

HELD_OUT_SHARE = 0.2  # of the diagnostic examples, held out to score the probes fitted on the rest


@dataclass
class MonitoredProbeSet:
    """The diagnostic examples of a monitored model split once (from the run seed) into fit and held-out rows,
    with the labels the Monitor was given for them (``features={name: labels}``, one label per example)."""

    fit_rows: np.ndarray
    held_out_rows: np.ndarray
    labels: dict[str, np.ndarray]
    kinds: dict[str, Kind]


def monitored_probe_set(labels: dict[str, np.ndarray], options: ProbeOptions, seed: int) -> MonitoredProbeSet:
    features = select_features(list(labels), options.features)
    n = len(next(iter(labels.values())))
    order = np.random.default_rng(seed + PROBE_SEED_OFFSET).permutation(n)
    n_held_out = max(int(round(n * HELD_OUT_SHARE)), MIN_HELD_OUT)
    if n - n_held_out < 2:
        raise ValueError(f"probes need more than {n_held_out + 1} diagnostic examples to fit and score; the batch has {n}")
    kinds = {f: label_kind(labels[f], options.max_classes) for f in features}
    return MonitoredProbeSet(np.sort(order[n_held_out:]), np.sort(order[:n_held_out]), {f: labels[f] for f in features}, kinds)


def probe_captured(
    activations: dict[int, np.ndarray], probe_set: MonitoredProbeSet, options: ProbeOptions
) -> list[ProbeResult]:
    """Every probe of a monitored model: feature x layer, on the activations the Monitor captured
    (layer -> [N, d]); there is one position, the one the Monitor captures (reported as position 0)."""
    results = []
    for feature, labels in probe_set.labels.items():
        fit_rows = probe_set.fit_rows[labels[probe_set.fit_rows] != NO_LABEL]
        held_rows = probe_set.held_out_rows[labels[probe_set.held_out_rows] != NO_LABEL]
        y_fit, y_held = labels[fit_rows], labels[held_rows]
        if len(np.unique(y_fit)) < 2 or len(held_rows) < MIN_HELD_OUT:
            continue  # as for a task's features: a constant label, or too few to score
        for layer, x in activations.items():
            accuracy, log_loss, r2, weight, bias = fit_probe(
                x[fit_rows], y_fit, x[held_rows], y_held, probe_set.kinds[feature], options.C, options.max_iter
            )
            kind = probe_set.kinds[feature]
            results.append(ProbeResult(feature, layer, 0, kind, len(fit_rows), len(held_rows), accuracy, log_loss, r2, weight, bias))
    return results


class ProbeFitting(Measure):
    """What the probe and ablation measures share: the fresh probe set, built once, and the layer list."""

    needs_task = True  # fresh examples of the task, with their feature labels

    def __init__(self, options: MeasureOptions, setup: MeasureSetup) -> None:
        super().__init__(options, setup)
        if setup.task is not None and self.options.sites is not None:
            raise ValueError(f"{self.name}.sites names module paths for a Monitor; a trained run probes `site` ({self.options.site})")
        self.probe_set = build_probe_set(setup, self.options) if setup.task is not None else None

    @property
    def layers(self) -> list[int]:
        layers = self.options.layers
        return list(range(self.setup.n_layers)) if layers == "all" else list(layers)


class Probe(ProbeFitting, declared="probe"):
    monitor_inputs = ("features",)  # under a Monitor: labels of the diagnostic examples, probed where the Monitor captures

    def __init__(self, options: MeasureOptions, setup: MeasureSetup) -> None:
        super().__init__(options, setup)
        self.baseline: dict[tuple[str, int, int], float] | None = None
        self.baseline_summary: dict[str, dict[str, float]] = {}
        self.monitored: MonitoredProbeSet | None = None
        if setup.features is not None:
            if self.options.sites is None:
                raise ValueError("probe: under a Monitor, name the module the probes read: sites: [transformer.h.*]")
            self.monitored = monitored_probe_set(setup.features, self.options, setup.seed)

    def _monitored_sites(self) -> list[tuple[str, int]]:
        """The (family, layer) pairs a Monitor captures for the probes: the modules ``sites`` matched, those
        of ``layers`` when it is a list."""
        assert self.options.sites is not None  # checked when built
        matched = (self.setup.site_layers or {}).get(self.options.sites[0], [])
        layers = self.options.layers
        return [(family, layer) for family, layer in matched if layers == "all" or layer in layers]

    def needs(self) -> list[CaptureRequest]:
        if self.monitored is None:
            return []
        return [CaptureRequest(family, layer, "last_input") for family, layer in self._monitored_sites()]

    def _ensure_baseline(self) -> None:
        """Probe the untrained model (same init seed as the run) once; kept in checkpoints."""
        if self.baseline is not None:
            return
        if self.setup.initial_model is None:
            raise ValueError("the probe baseline needs the untrained model: MeasureSetup.initial_model is not set")
        results = probe_all(self.setup.initial_model(), self.probe_set, self.options, self.layers, self.setup.device)
        self.baseline = {(r.feature, r.layer, r.position): r.accuracy for r in results}
        self.baseline_summary = family_summary(results)

    def _results(self, context: MeasureContext) -> list[ProbeResult]:
        """This step's probes. A monitored model has no untrained twin to compare with: its baseline is its
        first measurement (step 0 when the loop measures before it trains), kept in ``state_dict``."""
        if self.monitored is None:
            self._ensure_baseline()
            return probe_all(context.model, self.probe_set, self.options, self.layers, self.setup.device)
        activations = {layer: context.activations[CaptureRequest(family, layer, "last_input")].numpy() for family, layer in self._monitored_sites()}
        results = probe_captured(activations, self.monitored, self.options)
        if self.baseline is None:
            self.baseline = {(r.feature, r.layer, r.position): r.accuracy for r in results}
            self.baseline_summary = family_summary(results)
        return results

    def compute(self, context: MeasureContext) -> dict[str, float]:
        results = self._results(context)
        assert self.baseline is not None
        rows = [
            [r.feature, family_of(r.feature), r.layer, r.position, r.kind, r.n_fit, r.n_held_out, r.accuracy,
             r.log_loss, r.r2, self.baseline.get((r.feature, r.layer, r.position), math.nan)]
            for r in results
        ]
        context.tables["probes"] = (list(PROBE_TABLE_COLUMNS), rows)
        values: dict[str, float] = {}
        for family, summary in family_summary(results).items():
            values[f"probe/{family}/accuracy"] = summary["accuracy"]
            values[f"probe/{family}/se"] = summary["se"]
            values[f"probe/{family}/best_layer"] = summary["best_layer"]
            values[f"probe/{family}/baseline"] = self.baseline_summary.get(family, {}).get("accuracy", math.nan)
            for layer in sorted({r.layer for r in results}):  # DESIGN.md's per-layer key: mean accuracy over the family's cells
                if f"L{layer}" in summary:
                    values[f"probe/{family}/L{layer}/acc"] = summary[f"L{layer}"]
        return values

    def state_dict(self) -> dict[str, Any]:
        if self.baseline is None:
            return {}
        return {
            "baseline": [[feature, layer, position, accuracy] for (feature, layer, position), accuracy in self.baseline.items()],
            "baseline_summary": self.baseline_summary,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "baseline" in state:
            self.baseline = {(f, int(layer), int(p)): float(a) for f, layer, p, a in state["baseline"]}
            self.baseline_summary = state["baseline_summary"]


__all__: list[str] = [
    "Probe", "ProbeOptions", "ProbeResult", "best_per_cell", "family_summary", "fit_probe", "label_kind", "probe_all", "select_features",
]
