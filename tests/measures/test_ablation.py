"""Ablation: the hook removes exactly the probe direction at exactly the probed positions; the random
control moves the stream by the same amount; the measure reports exact match with intervals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emergence.measures.ablation import (
    Ablation,
    AblationOptions,
    AblationSite,
    ablation_hooks,
    ablation_sites,
    mean_with_interval,
    random_unit_directions,
    remove_direction,
)
from emergence.measures.base import MeasureContext, MeasureSetup
from emergence.measures.behavior import answer_statistics
from emergence.measures.probes import ProbeResult
from emergence.models import build_model
from emergence.spec.schema import ModelSpec
from emergence.tasks import build_task

CPU = torch.device("cpu")


def test_ablation_zeroes_the_probe_logit_and_keeps_the_orthogonal_complement():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(50, 12, generator=generator, dtype=torch.float64) * 3
    direction = random_unit_directions(1, 12, generator)[0].double()
    direction = direction / direction.norm()  # unit in float64, so the identities hold to 1e-12
    offset = 0.7
    ablated = remove_direction(x, direction, offset)
    assert torch.allclose(ablated @ direction + offset, torch.zeros(50, dtype=torch.float64), atol=1e-12)
    complement = torch.eye(12, dtype=torch.float64) - torch.outer(direction, direction)
    assert torch.allclose(ablated @ complement, x @ complement, atol=1e-12)

    control = random_unit_directions(1, 12, generator)[0].double()
    control = control / control.norm()
    moved = remove_direction(x, direction, offset, along=control)
    assert torch.allclose((moved - x).norm(dim=1), (ablated - x).norm(dim=1), atol=1e-12)  # same size of change
    assert not torch.allclose(moved, ablated)


def test_sites_are_the_best_layer_per_position_with_unit_directions():
    weight = np.array([3.0, 4.0])
    results = [
        ProbeResult("carry", 0, 1, "binary", 10, 10, 0.7, 0.5, np.nan, weight, 10.0),
        ProbeResult("carry", 1, 1, "binary", 10, 10, 0.9, 0.5, np.nan, 2 * weight, 10.0),
        ProbeResult("sum", 0, 1, "categorical", 10, 10, 0.99, 0.5, np.nan, None, np.nan),  # nothing to ablate
    ]
    (site,) = ablation_sites(results)
    assert (site.feature, site.layer, site.position, site.probe_accuracy) == ("carry", 1, 1, 0.9)
    assert torch.allclose(site.direction, torch.tensor([0.6, 0.8]))
    assert site.offset == pytest.approx(10.0 / 10.0)  # bias over |2 * (3, 4)| = 10


@pytest.fixture(scope="module")
def bridge_and_task():
    task = build_task("binary_addition", 1, {"n_bits": 5}, 300, 64, 16, 0)
    model = build_model(ModelSpec(n_layers=2, d_model=16, n_heads=2, d_mlp=32), len(task.vocab), task.seq_len, 0, CPU)
    return model, task


def test_hook_changes_only_the_probed_positions_at_the_probed_layer(bridge_and_task):
    model, task = bridge_and_task
    split = task.test
    generator = torch.Generator().manual_seed(1)
    site = AblationSite("carry", 0, 2, random_unit_directions(1, 16, generator)[0], 0.3, 1.0)
    seen: dict[str, torch.Tensor] = {}

    def record(name: str):
        def hook(activations: torch.Tensor, hook: object) -> None:
            seen[name] = activations.detach().clone()
        return hook

    names = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    with torch.no_grad():
        model.run_with_hooks(split.tokens, fwd_hooks=[(n, record("clean/" + n)) for n in names])
        # The recording hook on the same point runs after the ablation hook and sees its output.
        hooks = ablation_hooks([site], "resid_post")(split)
        model.run_with_hooks(split.tokens, fwd_hooks=[*hooks, *[(n, record("ablated/" + n)) for n in names]])
    clean, ablated = seen["clean/" + names[0]], seen["ablated/" + names[0]]
    rows = torch.arange(len(split))
    columns = split.prompt_len - 1 + 2
    logits = ablated[rows, columns] @ site.direction + site.offset
    assert torch.allclose(logits, torch.zeros(len(split)), atol=1e-5)
    untouched = torch.ones_like(clean, dtype=torch.bool)
    untouched[rows, columns] = False
    assert torch.equal(ablated[untouched], clean[untouched])
    assert not torch.allclose(seen["ablated/" + names[1]], seen["clean/" + names[1]])  # and it flows on


def test_hooked_exact_match_without_change_is_the_plain_exact_match(bridge_and_task):
    model, task = bridge_and_task
    zero_site = AblationSite("carry", 1, 0, torch.zeros(16), 0.0, 1.0)  # removes nothing
    plain = answer_statistics(model, task.test, CPU)
    hooked = answer_statistics(model, task.test, CPU, hooks=ablation_hooks([zero_site], "resid_post"))
    for a, b in zip(plain, hooked, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_bootstrap_interval_brackets_the_mean_and_a_constant_is_exact():
    values = np.r_[np.ones(70), np.zeros(30)]
    mean, low, high = mean_with_interval(values, 1000, 0.95, 0)
    assert mean == 0.7 and 0.58 < low < 0.7 < high < 0.8
    assert mean_with_interval(np.ones(20), 1000, 0.95, 0) == (1.0, 1.0, 1.0)


def test_hooked_statistics_follow_a_hook_that_moves_the_stream(bridge_and_task):
    model, task = bridge_and_task
    # Not the all-ones direction: every LayerNorm that reads the stream removes it, so it would change nothing.
    direction = random_unit_directions(1, 16, torch.Generator().manual_seed(3))[0]
    push = AblationSite("carry", 0, 1, direction, 40.0, 1.0)  # moves x by -(w.x + 40) w at answer position 1
    plain = answer_statistics(model, task.test, CPU)
    hooked = answer_statistics(model, task.test, CPU, hooks=ablation_hooks([push], "resid_post"))
    assert not torch.allclose(plain[0], hooked[0])


def test_ablation_measure_reports_exact_match_with_intervals(bridge_and_task):
    model, task = bridge_and_task
    params = {"n_bits": 5}
    setup = MeasureSetup(
        2, 16, task, CPU, 0, make_examples=lambda a, b, seed: build_task("binary_addition", 1, params, a, b, 0, seed), total_steps=400
    )
    options = AblationOptions(features=["carry_in"], fit_size=200, held_out_size=60, n_controls=3, n_bootstrap=200)
    measure = Ablation(options, setup)
    assert measure.compute(MeasureContext(step=100, model=model, activations={}, lr=1e-3)) == {}  # at: end
    context = MeasureContext(step=400, model=model, activations={}, lr=1e-3)
    values = measure.compute(context)
    exact = answer_statistics(model, task.test, CPU)[2].float().mean().item()
    assert values["ablation/carry_in/baseline"] == pytest.approx(exact)
    assert values["ablation/carry_in/sites"] == 5  # the carry into bits 1-5 (into bit 0 it is always 0)
    for name in ("baseline", "ablated", "control"):
        assert values[f"ablation/carry_in/{name}_lo"] <= values[f"ablation/carry_in/{name}"] <= values[f"ablation/carry_in/{name}_hi"]
    assert values["ablation/carry_in/drop"] == pytest.approx(values["ablation/carry_in/baseline"] - values["ablation/carry_in/ablated"])
    columns, rows = context.tables["ablation"]
    assert rows[0][0] == "carry_in" and rows[0][columns.index("drop")] == pytest.approx(values["ablation/carry_in/drop"])
    sites = context.tables["ablation_sites"][1]
    assert sorted(row[2] for row in sites) == [1, 2, 3, 4, 5] and all(row[3] in (0, 1) for row in sites)


def test_ablation_refuses_non_binary_features():
    task = build_task("binary_multiplication", 1, {}, 200, 50, 10, 0)
    setup = MeasureSetup(
        1, 16, task, CPU, 0, make_examples=lambda a, b, seed: build_task("binary_multiplication", 1, {}, a, b, 0, seed)
    )
    with pytest.raises(ValueError, match=r"\['column_ones'\] are not binary"):
        Ablation(AblationOptions(features=["column_ones"], fit_size=200, held_out_size=50), setup)
    with pytest.raises(ValueError):
        AblationOptions()  # features are required
