"""`emergence compare` on runs the test makes: one row per run, every format, filters, clear errors."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from emergence.cli import app
from emergence.compare import render, select
from emergence.rundir import RunResult
from emergence.runner import run_one
from emergence.spec import resolve


@pytest.fixture(scope="module")
def two_seed_sweep(tmp_path_factory):
    """The tiny spec at seeds 0 and 1, 30 steps each, with its verdicts on."""
    import yaml

    from tests.conftest import TINY_SPEC

    root = tmp_path_factory.mktemp("compare")
    raw = yaml.safe_load(TINY_SPEC.read_text())
    raw.update({"execution": {"output_dir": str(root / "runs")}, "grid": {"seed": [0, 1]}})
    raw["training"]["steps"] = 30
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    runs = resolve(str(path))
    outcomes = [run_one(run) for run in runs]
    assert all(o.state == "completed" for o in outcomes)
    return root / "runs", runs


def test_one_row_per_run_in_every_format(two_seed_sweep):
    runs_dir, runs = two_seed_sweep
    result = CliRunner().invoke(app, ["compare", str(runs_dir), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert sorted(r["run_key"] for r in rows) == sorted(r.run_key for r in runs)
    assert {r["seed"] for r in rows} == {0, 1} and {r["spec"] for r in rows} == {"tiny"}
    assert all(r["task"] == "binary_addition" and r["d_model"] == 32 and r["n_params"] > 0 for r in rows)
    signal = "geometry/rankme/resid_post/L1"
    assert all(r[signal].split(" ")[0] in ("precursor", "synchronous", "lagging", "no_signal", "no_emergence") for r in rows)

    csv_rows = list(csv.DictReader(io.StringIO(CliRunner().invoke(app, ["compare", str(runs_dir), "--format", "csv"]).stdout)))
    assert [r["run_key"] for r in csv_rows] == [r["run_key"] for r in rows] and signal in csv_rows[0]
    markdown = CliRunner().invoke(app, ["compare", str(runs_dir), "--format", "markdown"]).stdout.splitlines()
    assert markdown[0].startswith("| run_key | spec | task") and markdown[1].startswith("|---|") and len(markdown) == 4
    table = CliRunner().invoke(app, ["compare", str(runs_dir)]).stdout.splitlines()
    assert table[0].split()[:3] == ["run_key", "spec", "task"] and len(table) == 3

    one_dir = runs_dir / "tiny" / runs[0].run_key
    single = json.loads(CliRunner().invoke(app, ["compare", str(one_dir), "--format", "json"]).stdout)
    assert [r["run_key"] for r in single] == [runs[0].run_key]


def test_filters_and_errors(two_seed_sweep):
    runs_dir, _ = two_seed_sweep
    runner = CliRunner()
    assert runner.invoke(app, ["compare", str(runs_dir), "--task", "bfs"]).exit_code == 1  # no runs match
    assert runner.invoke(app, ["compare", str(runs_dir), "--spec", "tiny", "--format", "json"]).exit_code == 0
    bad = runner.invoke(app, ["compare", str(runs_dir), "--format", "xml"])
    assert bad.exit_code == 2 and "allowed: table, markdown, csv, json" in bad.output
    assert runner.invoke(app, ["compare", str(runs_dir / "missing")]).exit_code == 2
    assert runner.invoke(app, ["compare", str(runs_dir), "--tag", "novalue"]).exit_code == 2


def row(run_key: str, seed: int, tags: dict[str, str], verdicts: list[dict]) -> RunResult:
    return RunResult(run_key, "s", "t", 1, 2, 64, 100, seed, "completed", 800, tags=tags, verdicts=verdicts)


def test_select_by_tag_and_verdict_cells():
    rows = [
        row("a", 0, {"team": "x"}, [{"signal": "llc/mean", "verdict": "precursor", "lead_steps": 200}]),
        row("b", 1, {"team": "y"}, [{"kind": "feature", "feature": "carry", "verdict": "quiet", "lead_steps": 650}]),
    ]
    assert [r.run_key for r in select(rows, tags={"team": "y"})] == ["b"]
    cells = json.loads(render(rows, "json"))
    assert cells[0]["llc/mean"] == "precursor (200)" and cells[0]["feature/carry"] is None
    assert cells[1]["feature/carry"] == "quiet (650)"
    with pytest.raises(ValueError, match="allowed"):
        render(rows, "html")


def test_run_from_a_run_directory_is_the_same_run_unless_overridden(two_seed_sweep, tmp_path):
    runs_dir, runs = two_seed_sweep
    source = runs_dir / "tiny" / runs[0].run_key
    runner = CliRunner()
    same = runner.invoke(app, ["run", "--from-run", str(source), "--quiet"])
    assert same.exit_code == 0, same.output
    assert f"skipped {source}" in same.output.replace("\n", "")  # the same run key: already completed
    moved = runner.invoke(app, ["run", "--from-run", str(source), f"execution.output_dir={tmp_path}", "training.steps=4", "--quiet"])
    assert moved.exit_code == 0, moved.output
    assert (tmp_path / "tiny").exists() and runs[0].run_key not in [p.name for p in (tmp_path / "tiny").iterdir()]
    missing = runner.invoke(app, ["run", "--from-run", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "not a run directory" in missing.output
    assert runner.invoke(app, ["run"]).exit_code == 2
