"""The command line, as a user meets it: exit codes, messages, nothing created on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from emergence.cli import app

runner = CliRunner()


def test_validate_ok(tiny_raw, write_spec):
    result = runner.invoke(app, ["validate", str(write_spec(tiny_raw))])
    assert result.exit_code == 0, result.output
    assert "ok:" in result.output and "1 run(s)" in result.output


def test_malformed_spec_exits_2_with_one_line_per_problem_and_creates_nothing(tiny_raw, write_spec, tmp_path):
    tiny_raw["model"]["act_fn"] = "rellu"
    tiny_raw["training"]["stepz"] = 3
    spec_file = write_spec(tiny_raw)
    for command in ("validate", "run"):
        # A real process: the user sees stderr, not a traceback.
        done = subprocess.run([sys.executable, "-m", "emergence.cli", command, str(spec_file)], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 2, done
        lines = done.stderr.strip().splitlines()
        assert f"error: {spec_file}: model.act_fn: given 'rellu' (did you mean 'relu'?)" in lines[0]
        assert any(line.startswith(f"error: {spec_file}: training.stepz: unknown field 'stepz'") for line in lines)
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "mlflow.db").exists()


def test_bad_override_exits_2(tiny_raw, write_spec):
    result = runner.invoke(app, ["validate", str(write_spec(tiny_raw)), "model.n_layers=two"])
    assert result.exit_code == 2
    assert "model.n_layers" in result.output


def test_ls_lists_builtins():
    tasks = runner.invoke(app, ["ls", "tasks"])
    assert tasks.exit_code == 0 and "binary_addition" in tasks.output and "carry" in tasks.output
    measures = runner.invoke(app, ["ls", "measures"])
    assert "rankme" in measures.output and "participation_ratio" in measures.output
    assert runner.invoke(app, ["ls", "task"]).exit_code == 2


def test_sample_json_lines_are_correct_sums():
    result = runner.invoke(app, ["sample", "binary_addition", "--level", "1", "--n", "4", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.strip().splitlines()]
    assert len(rows) == 4
    for row in rows:
        a = int("".join(reversed(row["prompt"][:8])), 2)
        b = int("".join(reversed(row["prompt"][9:17])), 2)
        assert int("".join(reversed(row["answer"][:-1])), 2) == a + b
        assert len(row["features"]["carry"]) == len(row["answer"])


def test_sample_takes_explicit_params_and_marks_unlabelled_positions():
    result = runner.invoke(app, ["sample", "binary_addition", "--param", "n_bits=3", "--n", "2", "--json"])
    assert result.exit_code == 0, result.output
    for row in map(json.loads, result.output.strip().splitlines()):
        assert row["prompt"][3] == "+" and len(row["answer"]) == 5
        assert row["features"]["carry"][-2:] == [None, None]


def test_sample_misspelt_param_is_a_clear_error():
    result = runner.invoke(app, ["sample", "binary_addition", "--param", "n_bit=3"])
    assert result.exit_code == 2
    assert "unknown parameter(s) ['n_bit']" in result.output and "did you mean 'n_bits'" in result.output


def test_task_catalogue_in_docs_is_current():
    """docs/tasks.md is generated from the tasks; if this fails, run: emergence ls tasks --markdown > docs/tasks.md"""
    result = runner.invoke(app, ["ls", "tasks", "--markdown"])
    assert result.exit_code == 0, result.output
    docs = Path(__file__).resolve().parents[1] / "docs" / "tasks.md"
    assert result.output == docs.read_text(encoding="utf-8")


def test_sample_unknown_task_suggests():
    result = runner.invoke(app, ["sample", "binary_adition"])
    assert result.exit_code == 2
    assert "did you mean 'binary_addition'" in result.output


def test_sigterm_marks_the_run_interrupted_and_resumable(tiny_raw, write_spec, tmp_path):
    """`timeout` and schedulers stop jobs with SIGTERM; the run must not be left looking alive."""
    import signal
    import time

    tiny_raw["training"]["steps"] = 5000
    spec_file = write_spec(tiny_raw)
    job = subprocess.Popen([sys.executable, "-m", "emergence.cli", "run", str(spec_file), "--quiet"], cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal: Path | None = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        journals = list(tmp_path.glob("runs/*/*/journal.jsonl"))
        if journals and journals[0].stat().st_size > 2000:
            journal = journals[0]
            break
        time.sleep(0.2)
    assert journal is not None, "the run never started writing its journal"
    job.send_signal(signal.SIGTERM)
    _, said = job.communicate(timeout=60)
    assert job.returncode == 130 and "again (same overrides) to resume" in said, said
    status = json.loads((journal.parent / "status.json").read_text())
    assert status["state"] == "failed" and "interrupted" in status["reason"]
