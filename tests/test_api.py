"""The public API (`import emergence`): light to import, the same errors as the CLI as exceptions, typed
results, and docs/api.md's notebook session run exactly as written there."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
API_DOC = REPO / "docs" / "api.md"


def _python(code: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def test_import_emergence_does_not_import_torch(tmp_path: Path) -> None:
    probe = _python(
        "import sys, emergence\n"
        "names = ['run', 'validate', 'load_run', 'load_runs', 'report', 'spec_of', 'RunResult', 'SpecError']\n"
        "assert all(callable(getattr(emergence, n)) for n in names)\n"
        "print(sorted(m for m in ('torch', 'transformer_lens', 'mlflow', 'wandb') if m in sys.modules))",
        tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"


def test_bad_input_raises_the_cli_message(tmp_path: Path) -> None:
    import emergence

    with pytest.raises(emergence.SpecError) as caught:
        emergence.validate(REPO / "specs" / "tiny.yaml", ["model.n_layerz=3", "training.steps=-1"])
    problems = {p.path: p for p in caught.value.problems}
    assert problems["model.n_layerz"].given == "n_layerz" and "n_layers" in problems["model.n_layerz"].allowed
    assert problems["training.steps"].given == -1
    assert str(caught.value).startswith(f"error: {REPO / 'specs' / 'tiny.yaml'}: ")

    with pytest.raises(emergence.SpecError) as from_mapping:
        emergence.run({"name": "x", "task": {"name": "binary_additon"}}, output_dir=str(tmp_path))
    (problem,) = [p for p in from_mapping.value.problems if p.path == "task.name"]
    assert from_mapping.value.source == "<spec>" and "binary_addition" in problem.message
    assert problem.allowed and "binary_addition" in problem.allowed
    assert not any(tmp_path.iterdir())  # nothing was created

    with pytest.raises(emergence.SpecError, match="execution.workerz"):
        emergence.run(REPO / "specs" / "tiny.yaml", workerz=2)
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        emergence.load_run(tmp_path)


def test_a_mapping_spec_runs_and_loads_back_typed(tiny_raw: dict, tmp_path: Path) -> None:
    import emergence
    from emergence.record import read_journal

    tiny_raw["training"]["steps"] = 20
    (result,) = emergence.run(tiny_raw, progress=False)
    assert result.state == "completed" and result.directory is not None and result.spec == "tiny"
    assert result.resolved_spec["run_key"] == result.run_key == result.directory.name
    journal = result.journal
    assert journal.index.name == "step" and list(journal.index) == sorted(journal.index) and journal.index[0] == 0
    assert {"behavior/test/exact_match", "geometry/rankme/resid_post/L1"} <= set(journal.columns)
    steps, values = read_journal(result.directory).series("behavior/test/exact_match")
    column = journal["behavior/test/exact_match"].dropna()
    assert list(column.index) == list(steps) and column.to_list() == list(values)
    assert result.verdicts and all("verdict" in v for v in result.verdicts)
    assert result.signal_verdicts == [v for v in result.verdicts if v["kind"] == "signal"]

    loaded = emergence.load_run(result.directory)
    assert (loaded.run_key, loaded.state, loaded.verdicts) == (result.run_key, "completed", result.verdicts)
    (again,) = emergence.run(emergence.spec_of(loaded), progress=False)
    assert (again.run_key, again.state) == (result.run_key, "skipped")
    assert emergence.report(result.directory) == result.directory / "report.html"


def test_the_notebook_session_in_the_docs_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", API_DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    session = [b for b in blocks if "emergence.run(" in b or "load_runs" in b or "load_run(" in b]
    assert len(session) >= 4
    (tmp_path / "specs").mkdir()
    shutil.copy(REPO / "specs" / "tiny.yaml", tmp_path / "specs" / "tiny.yaml")
    ran = _python("\n".join(blocks), tmp_path, timeout=600)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert (tmp_path / "rankme.png").stat().st_size > 10_000
    assert re.search(r"^0 completed ", ran.stdout, re.M) and re.search(r"^1 completed ", ran.stdout, re.M), ran.stdout
    assert (tmp_path / "api-tour.db").exists() and len(list((tmp_path / "api-tour-runs" / "tiny").iterdir())) >= 2
