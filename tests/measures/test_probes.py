"""Linear probes: planted features are found, random ones are not, raw-space weights reproduce the logits,
and the measure works on a real bridge with its untrained-model baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from emergence.measures.base import MeasureContext, MeasureSetup
from emergence.measures.probes import (
    Probe,
    ProbeOptions,
    ProbeResult,
    family_summary,
    fit_probe,
    fits_context,
    label_kind,
    select_features,
)
from emergence.models import build_model
from emergence.spec.schema import ModelSpec
from emergence.tasks import build_task
from emergence.tasks.base import NO_LABEL

CPU = torch.device("cpu")


def planted(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Activations with an offset and uneven scales (so un-standardising the weights matters), a direction."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 5.0, size=d) + rng.normal(size=d) * 3
    direction = rng.normal(size=d)
    return x, direction, rng.normal(size=n)


def test_a_planted_binary_feature_is_found_and_its_raw_weights_give_the_logits():
    x, direction, noise = planted(3000, 24, 0)
    score = x @ direction
    y = (score + 0.05 * score.std() * noise > np.median(score)).astype(np.int64)
    accuracy, log_loss, r2, weight, bias = fit_probe(x[:2000], y[:2000], x[2000:], y[2000:], "binary", 100.0, 200)
    assert accuracy > 0.95 and log_loss < 0.2 and math.isnan(r2)
    # The weight is in the coordinates of x: its sign agrees with the labels as well as the probe does.
    assert weight is not None and weight.shape == (24,)
    raw_accuracy = np.mean(((x[2000:] @ weight + bias) > 0).astype(int) == y[2000:])
    assert raw_accuracy == pytest.approx(accuracy, abs=1e-9)
    cosine = weight @ direction / np.linalg.norm(weight) / np.linalg.norm(direction)
    assert cosine > 0.9


def test_a_random_label_is_not_decodable():
    x, _, _ = planted(3000, 24, 1)
    y = np.random.default_rng(2).integers(0, 2, size=3000)
    accuracy, log_loss, *_ = fit_probe(x[:2000], y[:2000], x[2000:], y[2000:], "binary", 100.0, 200)
    assert 0.4 < accuracy < 0.6 and log_loss > 0.6


def test_categorical_and_numeric_features():
    x, direction, noise = planted(3000, 16, 3)
    score = (x @ direction - (x @ direction).mean()) / (x @ direction).std()
    classes = np.digitize(score, [-1.0, 0.0, 1.0])  # 4 ordered classes: linearly separable
    accuracy, log_loss, _, weight, _ = fit_probe(x[:2000], classes[:2000], x[2000:], classes[2000:], "categorical", 100.0, 200)
    assert accuracy > 0.9 and weight is None  # no single direction to ablate for a multi-class probe
    counts = np.rint(10 * score + 50).astype(np.int64)  # a linear integer quantity
    accuracy, log_loss, r2, weight, _ = fit_probe(x[:2000], counts[:2000], x[2000:], counts[2000:], "numeric", 100.0, 200)
    assert r2 > 0.99 and accuracy > 0.6 and math.isnan(log_loss) and weight is None
    shuffled = np.random.default_rng(4).permutation(counts)
    _, _, r2, _, _ = fit_probe(x[:2000], shuffled[:2000], x[2000:], shuffled[2000:], "numeric", 100.0, 200)
    assert r2 < 0.05


def test_label_kinds_ignore_unlabelled_positions():
    assert label_kind(np.array([[0, 1, NO_LABEL]]), 32) == "binary"
    assert label_kind(np.array([[0, 1, 2, NO_LABEL]]), 32) == "categorical"
    assert label_kind(np.arange(40)[None, :], 32) == "numeric"
    assert label_kind(np.array([[-3, -1, 2]]), 32) == "categorical"


def test_feature_selection_by_family_or_component():
    available = ["carry", "queue/A", "queue/B", "visited/A"]
    assert select_features(available, None) == sorted(available)
    assert select_features(available, ["queue"]) == ["queue/A", "queue/B"]
    assert select_features(available, ["queue/B", "carry"]) == ["carry", "queue/B"]
    with pytest.raises(ValueError, match=r"unknown feature\(s\) \['stack'\]; this task has \['carry', 'queue', 'visited'\]"):
        select_features(available, ["stack"])


def result(feature: str, layer: int, position: int, accuracy: float) -> ProbeResult:
    return ProbeResult(feature, layer, position, "binary", 100, 100, accuracy, 0.1, math.nan, None, 0.0)


def test_family_summary_takes_the_best_layer_per_cell_and_the_mean_over_cells():
    results = [
        result("queue/A", 0, 0, 0.6), result("queue/A", 1, 0, 0.9),  # best: layer 1
        result("queue/B", 0, 0, 0.8), result("queue/B", 1, 0, 0.7),  # best: layer 0
        result("carry", 0, 3, 0.5), result("carry", 1, 3, 0.5),  # a tie keeps layer 0
    ]
    summary = family_summary(results)
    assert summary["queue"]["accuracy"] == pytest.approx((0.9 + 0.8) / 2)
    assert summary["queue"]["se"] == pytest.approx((math.sqrt(0.09 / 100) + math.sqrt(0.16 / 100)) / 2)
    assert summary["queue"]["best_layer"] == 1  # mean 0.8 at layer 1 against 0.7 at layer 0
    assert summary["carry"] == {"accuracy": 0.5, "se": pytest.approx(0.05), "best_layer": 0.0, "cells": 1.0, "L0": 0.5, "L1": 0.5}
    assert (summary["queue"]["L0"], summary["queue"]["L1"]) == (pytest.approx(0.7), pytest.approx(0.8))


def test_fresh_examples_longer_than_the_model_context_are_dropped():
    data = build_task("bfs", 1, {}, 200, 50, 0, 5)
    longest = int((data.train.prompt_len + data.train.answer_len).max())
    shorter = fits_context(data.train, longest - 1)
    assert 0 < len(shorter) < len(data.train) and shorter.tokens.shape[1] == longest - 1
    assert bool(((shorter.prompt_len + shorter.answer_len) <= longest - 1).all())


@pytest.fixture(scope="module")
def setup() -> MeasureSetup:
    task = build_task("binary_addition", 1, {"n_bits": 5}, 200, 60, 20, 0, train_features=False)
    spec = ModelSpec(n_layers=2, d_model=16, n_heads=2, d_mlp=32)
    return MeasureSetup(
        2, 16, task, CPU, 0,
        make_examples=lambda n_train, n_test, seed: build_task("binary_addition", 1, {"n_bits": 5}, n_train, n_test, 0, seed),
        initial_model=lambda: build_model(spec, len(task.vocab), task.seq_len, 0, CPU),
        total_steps=10,
    )


def test_probe_measure_on_a_real_bridge(setup):
    measure = Probe(ProbeOptions(features=["carry"], fit_size=200, held_out_size=100), setup)
    untrained = setup.initial_model()
    context = MeasureContext(step=0, model=untrained, activations={}, lr=1e-3)
    values = measure.compute(context)
    assert set(values) == {
        "probe/carry/accuracy", "probe/carry/se", "probe/carry/best_layer", "probe/carry/baseline", "probe/carry/L0/acc", "probe/carry/L1/acc",
    }
    # At step 0 the model is the untrained model: probe and baseline are the same numbers.
    assert values["probe/carry/accuracy"] == values["probe/carry/baseline"]
    columns, rows = context.tables["probes"]
    assert columns[:4] == ["feature", "family", "layer", "position"]
    positions = {row[3] for row in rows}
    assert positions == {0, 1, 2, 3, 4} and {row[2] for row in rows} == {0, 1}  # the carry out of bits 0-4, both layers
    assert all(row[7] == row[10] for row in rows)  # accuracy == baseline accuracy cell by cell

    # A different model: the baseline stays the untrained one, and survives a checkpoint round trip.
    other = build_model(ModelSpec(n_layers=2, d_model=16, n_heads=2, d_mlp=32), len(setup.task.vocab), setup.task.seq_len, 1, CPU)
    later = measure.compute(MeasureContext(step=5, model=other, activations={}, lr=1e-3))
    assert later["probe/carry/baseline"] == values["probe/carry/baseline"]
    restored = Probe(ProbeOptions(features=["carry"], fit_size=200, held_out_size=100), setup)
    restored.load_state_dict(measure.state_dict())
    assert restored.compute(MeasureContext(step=5, model=other, activations={}, lr=1e-3)) == later


def test_probe_measure_skips_constant_labels(setup):
    measure = Probe(ProbeOptions(features=["carry_in"], fit_size=200, held_out_size=100), setup)
    context = MeasureContext(step=0, model=setup.initial_model(), activations={}, lr=1e-3)
    measure.compute(context)
    assert 0 not in {row[3] for row in context.tables["probes"][1]}  # the carry into bit 0 is always 0


def test_a_probe_set_larger_than_the_input_space_takes_every_input(setup):
    small = build_task("binary_addition", 1, {"n_bits": 3}, 40, 20, 10, 0, train_features=False)
    tiny = MeasureSetup(2, 16, small, CPU, 0, make_examples=lambda a, b, seed: build_task("binary_addition", 1, {"n_bits": 3}, a, b, 0, seed))
    measure = Probe(ProbeOptions(fit_size=2000, held_out_size=500), tiny)
    assert (len(measure.probe_set.fit), len(measure.probe_set.held_out)) == (52, 12)  # 64 inputs, 4:1


def test_probe_options_are_strict(setup):
    with pytest.raises(ValueError):
        ProbeOptions(layer=[0])
    with pytest.raises(ValueError):
        ProbeOptions(sites=["blocks.*", "embed"])  # a Monitor's probes read one module family
    with pytest.raises(ValueError, match=r"probe\.sites names module paths for a Monitor; a trained run probes `site`"):
        Probe(ProbeOptions(sites=["resid_post"]), setup)
    with pytest.raises(ValueError):
        ProbeOptions(C=0)
