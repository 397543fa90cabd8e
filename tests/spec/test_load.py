from __future__ import annotations

import pytest

from emergence.spec import SpecError, resolve, run_key
from emergence.spec.load import apply_overrides

# (a change to the tiny spec, the dotted path named, words the message must contain)
MALFORMED = [
    ({"task": {"name": "binary_additon"}}, "task.name", ["did you mean 'binary_addition'", "allowed: activity_selection, addition, bfs, binary_addition"]),
    ({"model": {"act_fn": "rellu"}}, "model.act_fn", ["given 'rellu'", "did you mean 'relu'"]),
    ({"model": {"n_layer": 3}}, "model.n_layer", ["unknown field 'n_layer'", "did you mean 'n_layers'"]),
    ({"training": {"steps": -5}}, "training.steps", ["greater than 0", "-5"]),
    ({"training": {"batch_size": "big"}}, "training.batch_size", ["'big'"]),
    ({"training": {"optimizer": {"name": "adam"}}}, "training.optimizer.name", ["given 'adam'", "did you mean 'adamw'"]),
    ({"measures": [{"name": "rank_me"}]}, "measures.0.name", ["did you mean 'rankme'"]),
    ({"measures": [{"name": "rankme", "sites": ["resid_pst"]}]}, "measures.0.sites.0", ["did you mean 'resid_post'"]),
    ({"measures": [{"name": "rankme", "layer": "all"}]}, "measures.0.layer", ["unknown field 'layer'", "did you mean 'layers'"]),
    ({"measures": [{"name": "rankme", "layers": [7]}]}, "measures.0.layers", ["layers [7]", "0..1"]),
    ({"tracking": [{"backend": "mlfow"}]}, "tracking.0.backend", ["unknown tracker 'mlfow'"]),
    ({"schedule": {"evry": 5}}, "schedule.evry", ["did you mean 'every'"]),
    ({"seed": "zero"}, "seed", ["'zero'"]),
    ({"name": "has space"}, "name", ["has space"]),
    ({"colour": "blue"}, "colour", ["unknown field 'colour'"]),
    ({"model": {"d_model": 30, "n_heads": 4}}, "model.n_heads", ["not divisible"]),
    ({"task": {"train_size": 500}}, "task.train_size", ["has only 256 distinct inputs", "556 is larger"]),
    ({"task": {"level": 4}}, "task.level", ["no level 4", "levels: [1, 2, 3]"]),
    ({"task": {"params": {"n_bit": 4}}}, "task.params", ["unknown parameter(s) ['n_bit']", "did you mean 'n_bits'"]),
    ({"task": {"diagnostic_size": 100}}, "task.diagnostic_size", ["exceeds test_size 56"]),
]


def merge(base: dict, change: dict) -> dict:
    merged = dict(base)
    for key, value in change.items():
        merged[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


@pytest.mark.parametrize(("change", "path", "words"), MALFORMED, ids=[m[1] for m in MALFORMED])
def test_malformed_spec_names_file_path_and_allowed(tiny_raw, write_spec, change, path, words):
    spec_file = write_spec(merge(tiny_raw, change))
    with pytest.raises(SpecError) as caught:
        resolve(str(spec_file))
    text = caught.value.render()
    assert text.startswith(f"error: {spec_file}: {path}"), text
    for word in words:
        assert word in text, text


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(SpecError, match="file not found"):
        resolve(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntask: {name: [\n")
    with pytest.raises(SpecError, match="not valid YAML at line"):
        resolve(str(bad))


def test_overrides_reach_nested_fields_and_list_items(tiny_raw, write_spec):
    tiny_raw["tracking"] = [{"backend": "none"}]
    spec_file = write_spec(tiny_raw)
    (run,) = resolve(str(spec_file), ["model.n_layers=3", "seed=4", "measures.1.every=20", "tracking.0.experiment=other"])
    assert run.spec.model.n_layers == 3
    assert run.spec.seed == 4
    assert run.spec.measures[1].every == 20
    assert run.spec.tracking[0].experiment == "other"


def test_override_of_missing_list_item_is_an_error():
    with pytest.raises(SpecError, match=r"tracking\.3: no list item '3'"):
        apply_overrides({"tracking": []}, ["tracking.3.experiment=x"], "f.yaml")


def test_grid_expands_to_the_product_with_distinct_keys(tiny_raw, write_spec):
    tiny_raw["grid"] = {"model.n_layers": [1, 2], "seed": [0, 1, 2]}
    runs = resolve(str(write_spec(tiny_raw)))
    assert len(runs) == 6
    assert len({r.run_key for r in runs}) == 6
    assert {(r.spec.model.n_layers, r.spec.seed) for r in runs} == {(n, s) for n in (1, 2) for s in (0, 1, 2)}
    assert all(r.spec.grid == {} for r in runs)


def test_bad_grid_point_fails_before_anything_runs(tiny_raw, write_spec):
    tiny_raw["grid"] = {"model.act_fn": ["relu", "tanhh"]}
    with pytest.raises(SpecError, match="model.act_fn"):
        resolve(str(write_spec(tiny_raw)))


def test_run_key_ignores_destinations_but_not_results(tiny_raw, write_spec):
    (base,) = resolve(str(write_spec(tiny_raw)))
    (moved,) = resolve(str(write_spec(tiny_raw)), ["execution.output_dir=/elsewhere", "name=renamed", "tracking=[{backend: none}]"])
    (reseeded,) = resolve(str(write_spec(tiny_raw)), ["seed=1"])
    assert base.run_key == moved.run_key
    assert base.run_key != reseeded.run_key
    assert base.run_key == run_key(base.spec)
    assert len(base.run_key) == 12


def test_defaults_are_filled_so_equal_specs_share_a_key(tiny_raw, write_spec):
    explicit = merge(tiny_raw, {"measures": [{"name": "rankme", "sites": ["resid_post", "resid_pre"], "layers": "all", "position": "last_input"},
                                             {"name": "participation_ratio", "sites": ["resid_post"]},
                                             {"name": "stable_rank"}]})
    (a,) = resolve(str(write_spec(tiny_raw, "a.yaml")))
    (b,) = resolve(str(write_spec(explicit, "b.yaml")))
    assert a.run_key == b.run_key


def test_dense_start_measures_closely_early_and_leaves_other_keys_alone(tiny_raw, write_spec):
    from emergence.schedule import MeasurementSchedule
    from emergence.spec.identity import canonical_form

    (plain,) = resolve(str(write_spec(tiny_raw)))
    (dense,) = resolve(str(write_spec(tiny_raw)), ["schedule.dense_until=30", "schedule.dense_every=3"])
    assert "dense_until" not in canonical_form(plain.spec)  # specs written before the field keep their run keys
    assert plain.run_key != dense.run_key
    steps = MeasurementSchedule.from_spec(dense.spec.schedule, 100).steps()
    every = dense.spec.schedule.every
    expected_early = {s for s in range(0, 31, 3)}
    assert expected_early <= set(steps)
    assert all(s % every == 0 or s in expected_early or s == 100 or (s & (s - 1) == 0) for s in steps)
    assert not any(30 < s < 100 and s % every for s in steps)


def test_a_grid_over_sections_merges_each_into_the_base(tiny_raw, write_spec):
    tiny_raw["task"] = {"name": "parity", "level": 1, "train_size": 200, "test_size": 64, "diagnostic_size": 32, "difficulty": {1: "easy", 2: "hard"}}
    tiny_raw["grid"] = {"task": [{"name": "copy", "level": 1, "train_size": 300}, {"name": "modular_arithmetic", "level": 2}]}
    first, second = resolve(str(write_spec(tiny_raw)))
    assert (first.spec.task.name, first.spec.task.level, first.spec.task.train_size) == ("copy", 1, 300)
    assert (second.spec.task.name, second.spec.task.level) == ("modular_arithmetic", 2)
    assert second.spec.task.train_size == tiny_raw["task"]["train_size"]  # kept from the base section
    assert {first.spec.task.test_size, second.spec.task.test_size} == {64}
    assert second.spec.task.difficulty == {1: "easy", 2: "hard"}
    assert first.display_name.endswith("[task(level=1,name=copy,train_size=300)]")
    tiny_raw["grid"] = {"model.act_fn": ["relu", "gelu"]}  # scalars still replace
    assert [r.spec.model.act_fn for r in resolve(str(write_spec(tiny_raw)))] == ["relu", "gelu"]


def test_an_expensive_measure_can_follow_the_schedule(tiny_raw, write_spec):
    from emergence import registry

    own = registry.measures.get("hessian_top").default_every
    assert own == 500
    cadences = []
    for every in ("schedule", None, 7):
        tiny_raw["measures"] = [{"name": "hessian_top", "every": every}]
        (run,) = resolve(str(write_spec(tiny_raw)))
        cadences.append(run.spec.measures[0].cadence(own))
    assert cadences == [None, 500, 7]
    tiny_raw["measures"] = [{"name": "hessian_top", "every": "sometimes"}]
    with pytest.raises(SpecError, match="measures.0.every"):
        resolve(str(write_spec(tiny_raw)))
