"""The commands that should answer at once import none of the heavy libraries: not torch, TransformerLens or
devinterp (a run needs them, `--help` does not), and no tracker or executor plugin (mlflow, wandb, ray): `ls`
describes a plugin from its distribution's metadata without importing it.

Each command runs in a fresh interpreter that reports ``sys.modules`` when the command is done, so a
module-level ``import torch`` anywhere on the way (the CLI, the spec, the registry, a task, a measure's
declaration) fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformer_lens", "devinterp", "mlflow", "wandb", "ray", "emergence_mlflow", "emergence_wandb", "emergence_ray")
MARKER = "IMPORTED-HEAVY="

# The command line as `emergence` runs it (standalone, exit code and all), then what it imported.
RUN_AND_REPORT = f"""
import json, sys
from emergence.cli import app
code = 0
try:
    app(sys.argv[1:], prog_name="emergence")
except SystemExit as stop:
    code = stop.code or 0
print({MARKER!r} + json.dumps([m for m in {HEAVY!r} if m in sys.modules]), file=sys.stderr)
sys.exit(code)
"""


def emergence(*args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-c", RUN_AND_REPORT, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    reports = [line for line in done.stderr.splitlines() if line.startswith(MARKER)]
    assert reports, done.stderr
    return done, json.loads(reports[-1].removeprefix(MARKER))


def plugin_names(group: str) -> list[str]:
    return [entry.name for entry in entry_points(group=group)]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--help"], ["validate", "calibrate-llc"]),
        (["validate", "specs/tiny.yaml"], ["ok: specs/tiny.yaml: 1 run(s): tiny ("]),
        (["validate", "specs/addition.yaml"], ["ok: specs/addition.yaml: 1 run(s)"]),  # tracks to mlflow: named, not imported
        (["ls", "tasks"], ["binary_addition", "carry", "levels: L1"]),
        (["ls", "measures"], ["rankme", "llc", "cost expensive; every 1000 steps", "n_examples"]),
        (["ls", "trackers"], ["none", *plugin_names("emergence.trackers")]),
        (["ls", "executors"], ["local", *plugin_names("emergence.executors")]),
    ],
    ids=["help", "validate-tiny", "validate-addition", "ls-tasks", "ls-measures", "ls-trackers", "ls-executors"],
)
def test_fast_commands_import_no_heavy_library(args, expected):
    done, heavy = emergence(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    for text in expected:
        assert text in done.stdout, f"{text!r} not in the output of emergence {' '.join(args)}:\n{done.stdout}"
    assert heavy == [], f"emergence {' '.join(args)} imported {heavy}"


def test_ls_describes_a_plugin_from_its_metadata():
    trackers = plugin_names("emergence.trackers")
    assert trackers, "make setup installs the MLflow and W&B trackers"
    done, _ = emergence("ls", "trackers")
    entry = next(iter(entry_points(group="emergence.trackers", name=trackers[0])))
    assert entry.dist is not None
    assert f"plugin ({entry.dist.name} {entry.dist.version}, {entry.value})" in done.stdout
    assert entry.dist.metadata["Summary"].split(":")[0] in done.stdout


def test_a_spec_error_still_exits_2_without_a_heavy_import(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text((ROOT / "specs" / "tiny.yaml").read_text().replace("name: rankme,", "name: rankmee,"), encoding="utf-8")
    done, heavy = emergence("validate", str(spec))
    assert done.returncode == 2
    assert f"error: {spec}: measures.0.name: unknown measure 'rankmee' (did you mean 'rankme'?)" in done.stderr
    assert heavy == []


def test_the_startup_benchmark_runs(tmp_path):
    """A small version of benchmarks/startup.py: every command once, timed against the bare typer app."""
    out = tmp_path / "startup.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "startup.py"), "--repeats", "1", "--json", str(out)],
        capture_output=True, text=True, check=True, timeout=300,
    )
    rows = {row["command"]: row for row in json.loads(out.read_text())}
    emergence_rows = [row for name, row in rows.items() if name.startswith("emergence")]
    assert len(emergence_rows) == 3
    for row in emergence_rows:
        assert row["baseline"] in rows and row["ratio"] > 0 and not row["imports_torch"]
