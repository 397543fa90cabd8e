"""The bad-input corpus (tests/spec/bad_inputs/cases.yaml): every malformed spec or override is refused with an
error line naming the file, the dotted path, the value given and what is allowed, before anything is made.

Most cases run in process, through what ``emergence run`` calls (``resolve``, then ``execute`` for what only a
run checks) and the lines its CLI prints (``SpecError.render``); the few marked ``cli`` also run as a real
``emergence run`` process: exit status 2, no traceback, no run directory, no MLflow run in the spec's store.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from emergence.spec import SpecError, resolve

HERE = Path(__file__).parent / "bad_inputs"
CASES: list[dict[str, Any]] = yaml.safe_load((HERE / "cases.yaml").read_text(encoding="utf-8"))
TINY = Path(__file__).resolve().parents[2] / "specs" / "tiny.yaml"
EMERGENCE = Path(sys.executable).parent / "emergence"


def merged(base: dict, change: dict) -> dict:
    """``change`` over ``base``: mappings merge, anything else replaces."""
    result = dict(base)
    for key, value in change.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        result[key] = merged(base[key], value) if both else value
    return result


def store_uri(directory: Path) -> str:
    return f"sqlite:///{directory / 'mlflow.db'}"


def spec_file(case: dict[str, Any], directory: Path) -> Path:
    """The case's spec as a file in ``directory``, its output (and, when it runs, its MLflow store) there too."""
    if "file" in case:
        return HERE / "files" / case["file"]
    raw = dict(case["spec"]) if "spec" in case else merged(yaml.safe_load(TINY.read_text(encoding="utf-8")), case.get("change", {}))
    raw.setdefault("execution", {})
    if isinstance(raw["execution"], dict):
        raw["execution"] = {"output_dir": str(directory / "runs"), **raw["execution"]}
    if case.get("stage") == "execute":  # a real store beside the case's own entries, which must stay empty
        raw["tracking"] = [{"backend": "mlflow", "tracking_uri": store_uri(directory)}, *raw.get("tracking", [])]
    path = directory / "spec.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def refusal(case: dict[str, Any], path: Path) -> str:
    """What ``emergence run`` prints for the case, from the calls it makes (its stages), in process."""
    with pytest.raises(SpecError) as caught:
        runs = resolve(str(path), list(case.get("overrides", [])))
        if case.get("stage") == "execute":
            from emergence.orchestrate import execute

            execute(runs)
        else:
            pytest.fail(f"{case['id']}: resolved to {len(runs)} run(s); expected a refusal")
    return caught.value.render()


def check_message(case: dict[str, Any], path: Path, text: str) -> None:
    head = f"error: {path}: {case['path']}"
    lines = [line for line in text.splitlines() if line.startswith(head)]
    assert lines, f"{case['id']}: no line starts with {head!r}:\n{text}"
    line = lines[0]
    for key in ("given", "allowed"):
        if key in case:
            assert str(case[key]) in line, f"{case['id']}: {key} {case[key]!r} not in:\n{line}"
    assert "Traceback" not in text
    assert len(line) < 2_000, f"{case['id']}: an error line of {len(line)} characters"


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input_is_refused_with_file_path_given_and_allowed(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a python tag that ran would leave its file here; a stray run directory too
    path = spec_file(case, tmp_path)
    if case.get("file") == ".":
        path = HERE / "files"  # a folder given as the spec
    check_message(case, path, refusal(case, path))
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "mlflow.db").exists(), "a refused spec opened its tracker's store"
    assert not (tmp_path / "emergence-pwned").exists()


def test_the_corpus_is_large_and_covers_every_kind():
    assert len(CASES) >= 50
    assert len({c["id"] for c in CASES}) == len(CASES)
    ids = " ".join(c["id"] for c in CASES)
    for kind in ("laughs", "python-tag", "grid-huge", "climbs-out", "tracking-uri", "not-installed", "override-", "unknown-",
                 "misspelt", "does-not-fit", "empty-file", "top-level-list"):
        assert kind in ids, kind
    assert sum(bool(c.get("cli")) for c in CASES) == 5


CLI_CASES = [c for c in CASES if c.get("cli")]


def mlflow_runs(store: Path) -> int:
    if not store.exists():
        return 0
    with sqlite3.connect(store) as connection:
        return connection.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


def test_emergence_run_refuses_them_with_status_2_and_makes_nothing(tmp_path):
    """A handful of the corpus, one of each kind, through real `emergence run` processes (run side by side)."""
    started = []
    for case in CLI_CASES:
        directory = tmp_path / case["id"]
        directory.mkdir()
        path = spec_file(case, directory)
        command = [str(EMERGENCE), "run", str(path), *case.get("overrides", []), "--quiet"]
        env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri(directory)}  # the default tracker's store, were one made
        started.append((case, directory, path, subprocess.Popen(
            command, cwd=directory, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )))
    for case, directory, path, process in started:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 2, f"{case['id']}: exit {process.returncode}\n{out}\n{err}"
        assert "Traceback" not in err + out, f"{case['id']}:\n{err}"
        check_message(case, path, err)
        assert not (directory / "runs").exists(), f"{case['id']}: a run directory was made"
        assert mlflow_runs(directory / "mlflow.db") == 0, f"{case['id']}: an MLflow run was made"
