"""Model-size presets and the execution section: what a grid over sizes resolves to, and what it rejects."""

from __future__ import annotations

import pytest

from emergence.models import build_model, count_parameters
from emergence.spec import SpecError, resolve
from emergence.spec.schema import MODEL_PRESETS, ModelSpec, preset_parameters


def test_presets_span_the_studies_sizes_and_count_what_they_claim():
    counts = {name: preset_parameters(name) for name in MODEL_PRESETS}
    assert list(counts.values()) == sorted(counts.values()), "presets are listed small to large"
    assert 0.35e6 < counts["tiny"] < 0.45e6 and 80e6 < counts["base"] < 90e6  # the studies' 405K to 85M
    # The claimed count is the blocks' parameters: a built model minus its embeddings, unembedding and norms.
    import torch

    model = build_model(ModelSpec(preset="mini"), d_vocab=7, n_ctx=9, seed=0, device=torch.device("cpu"))
    in_blocks = sum(p.numel() for name, p in model.named_parameters() if name.startswith("layers.") and p.dim() >= 2)
    assert in_blocks == pytest.approx(preset_parameters("mini"), rel=0.001)
    assert count_parameters(model) > in_blocks


def test_a_grid_over_presets_gives_one_run_per_size_keyed_by_the_concrete_shape(tiny_raw, write_spec):
    del tiny_raw["model"]
    tiny_raw["grid"] = {"model.preset": ["tiny", "mini"], "seed": [0, 1]}
    runs = resolve(str(write_spec(tiny_raw)))
    assert [(r.spec.model.preset, r.spec.model.d_model, r.spec.model.n_layers, r.spec.seed) for r in runs] == [
        ("tiny", 128, 2, 0), ("tiny", 128, 2, 1), ("mini", 256, 4, 0), ("mini", 256, 4, 1),
    ]
    assert len({r.sweep_key for r in runs}) == 1 and len({r.run_key for r in runs}) == 4
    # The preset is only a name: the same shape spelt out is the same run.
    tiny_raw.pop("grid")
    tiny_raw["model"] = {"n_layers": 2, "d_model": 128, "n_heads": 2}
    (spelt_out,) = resolve(str(write_spec(tiny_raw, "spelt.yaml")))
    assert spelt_out.run_key == runs[0].run_key


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["model.preset=huge"], ["model.preset", "unknown model preset 'huge'", "allowed: micro, tiny, mini, small, medium, base"]),
        (["model.preset=base"], ["model.n_layers", "conflicts with model.preset 'base'"]),
        (["execution.executor=rey"], ["execution.executor", "unknown executor 'rey'"]),
        (["execution.workers=0"], ["execution.workers", "greater than 0"]),
        (["execution.resources.gpus=-1"], ["execution.resources.gpus"]),
    ],
)
def test_bad_sizes_and_executors_are_named_before_anything_runs(tiny_raw, write_spec, overrides, words):
    with pytest.raises(SpecError) as raised:
        resolve(str(write_spec(tiny_raw)), overrides)
    message = raised.value.render()
    assert all(word in message for word in words), message


def test_execution_options_do_not_change_the_run_key(tiny_raw, write_spec):
    path = str(write_spec(tiny_raw))
    (plain,) = resolve(path)
    (pooled,) = resolve(path, ["execution.workers=4", "execution.threads_per_worker=1", "execution.resources.gpus=0.25"])
    assert plain.run_key == pooled.run_key
