"""Training-Jacobian specs: bad input is one clear line naming file, field, given value and what is allowed,
exit status 2, and nothing created; a spec without the study keeps its run key."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from emergence.spec import SpecError, resolve
from emergence.spec.identity import canonical_form

REPO = Path(__file__).resolve().parents[2]
REFERENCE = yaml.safe_load((REPO / "specs" / "jacobian-digits.yaml").read_text())


def problems(raw: dict) -> list:
    with pytest.raises(SpecError) as caught:
        resolve(raw)
    return caught.value.problems


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        ({"jacobian": {"mode": "sketch", "rank": 4805, "retrain": None}}, "jacobian.rank", ["4805", "4,810", "allowed: rank + oversample <= 4,810"]),
        ({"model": {"kind": "mlp", "sizes": [64, 256, 10], "act": "gelu"}}, "jacobian.mode", ["19,210", "max_exact_params", "force: true"]),
        ({"training": {"autocast": "bf16"}}, "training.autocast", ["'bf16'", "deterministic", "allowed: null"]),
        ({"training": {"device": "cuda"}}, "training.device", ["'cuda'", "allowed: auto, cpu"]),
        ({"training": {"optimizer": {"name": "adamw"}}}, "training.optimizer.name", ["'adamw'", "allowed: sgd"]),
        ({"model": {"kind": "mlp", "sizes": [32, 64, 10]}}, "model.sizes", ["[32, 64, 10]", "start with 64 and end with 10"]),
        ({"task": {"name": "parity", "train_size": 100, "test_size": 100}, "model": {"kind": "mlp", "sizes": [8, 2]}}, "model.kind", ["'parity'", "digits"]),
        ({"measures": [{"name": "rankme"}]}, "measures", ["['rankme']", "allowed: []"]),
        ({"jacobian": {"mode": "sketch", "retrain": {"subspaces": ["bulk"]}}}, "jacobian.retrain.subspaces", ["['bulk']", "chaotic"]),
        ({"jacobian": {"retrain": {"dims": [100, 5000]}}}, "jacobian.retrain.dims", ["[5000]", "1..4,810"]),
        ({"jacobian": {"mode": "exactly"}}, "jacobian.mode", ["'exactly'", "did you mean 'exact'"]),
    ],
)
def test_bad_jacobian_input_names_the_field_given_value_and_allowed(change, path, words):
    raw = copy.deepcopy(REFERENCE)
    for section, value in change.items():
        if isinstance(value, dict) and isinstance(raw.get(section), dict):
            for key, item in value.items():
                if isinstance(item, dict) and isinstance(raw[section].get(key), dict):
                    raw[section][key] = {**raw[section][key], **item}
                else:
                    raw[section][key] = item
        else:
            raw[section] = value
    found = problems(raw)
    assert [p.path for p in found] == [path], found
    for word in words:
        assert word in found[0].message, (word, found[0].message)


def test_mlp_without_the_study_is_refused():
    raw = copy.deepcopy(REFERENCE)
    del raw["jacobian"]
    (problem,) = problems(raw)
    assert problem.path == "jacobian" and "add a jacobian: section" in problem.message


def test_force_lets_exact_mode_past_the_limit():
    raw = copy.deepcopy(REFERENCE)
    raw["model"]["sizes"] = [64, 256, 10]
    raw["jacobian"]["force"] = True
    assert resolve(raw)[0].spec.jacobian.force


def test_cli_exits_2_before_anything_exists(tmp_path):
    raw = copy.deepcopy(REFERENCE)
    raw["jacobian"] = {"mode": "sketch", "rank": 5000}
    raw["execution"] = {"output_dir": str(tmp_path / "runs")}
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text(yaml.safe_dump(raw))
    done = subprocess.run([sys.executable, "-m", "emergence.cli", "run", str(spec_file)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2, done
    assert done.stderr.strip().startswith(f"error: {spec_file}: jacobian.rank: given 5000")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_specs_without_the_study_keep_their_canonical_form():
    """Neither the jacobian section nor the model kind enters a transformer spec's run key."""
    (run,) = resolve(REPO / "specs" / "addition.yaml")
    form = canonical_form(run.spec)
    assert '"jacobian"' not in form and '"kind"' not in form
    reference = canonical_form(resolve(REPO / "specs" / "jacobian-digits.yaml")[0].spec)
    assert '"jacobian"' in reference and '"kind":"mlp"' in reference
