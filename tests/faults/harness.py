"""What every fault case shares: a tiny spec, `emergence run` as a real subprocess, waiting for a file to
appear, and the comparison with an undisturbed reference run (journal, analysis, verdicts, final weights and
the MLflow history), timings aside.

The runs are real `emergence run` processes killed with a real SIGKILL, so each case pays for one Python start
(torch, TransformerLens: ~10 s on an idle 2-core machine) per process; the spec is as small as a run can be and
still have checkpoints, measurements on a schedule, a slow measurement to kill, an analysis and a report.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

SPEC_NAME = "faults"
STEPS = 40
CHECKPOINT_EVERY = 10
SLOW_MEASURE_EVERY = 35  # hessian_trace: due at 0, 35 and the last step; long enough to be killed inside
RUN_TIMEOUT_S = 180.0  # one `emergence run` of the spec below; ~15 s on an idle 2-core machine

# Timings are the only values two runs of one spec may differ in.
TIMING_PREFIX = "cost/"


def fault_spec(output_dir: Path, tracking: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The spec every case runs: the tiny addition model, 40 steps, a checkpoint every 10, a measurement every
    5, and one slow measurement (a Hutchinson trace) so that a kill can land inside a measurement. One torch
    thread: the run then repeats bit for bit whatever else the machine is doing."""
    return {
        "name": SPEC_NAME,
        "seed": 0,
        "task": {
            "name": "binary_addition", "level": 1, "params": {"n_bits": 4},
            "train_size": 200, "test_size": 56, "diagnostic_size": 32,
        },
        "model": {"n_layers": 2, "d_model": 32, "n_heads": 2, "d_mlp": 64},
        "training": {
            "steps": STEPS,
            "batch_size": 64,
            "optimizer": {"name": "adamw", "lr": 3.0e-3, "weight_decay": 0.1, "betas": [0.9, 0.98]},
            "lr_schedule": {"name": "constant", "warmup_steps": 5},
            "checkpoint_every": CHECKPOINT_EVERY,
        },
        "measures": [
            {"name": "rankme", "sites": ["resid_post"], "layers": "all"},
            {"name": "stable_rank"},
            {"name": "hessian_trace", "every": SLOW_MEASURE_EVERY, "n_probes": 40},
        ],
        "schedule": {"every": 5, "log_spaced_until": 4},
        "tracking": tracking or [],
        "execution": {"output_dir": str(output_dir), "threads_per_worker": 1},
    }  # fmt: skip


def mlflow_tracking(tracking_uri: str, experiment: str = SPEC_NAME) -> list[dict[str, Any]]:
    return [{"backend": "mlflow", "tracking_uri": tracking_uri, "experiment": experiment}]


def write_spec(path: Path, spec: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(spec), sort_keys=False), encoding="utf-8")
    return path


def run_key_of(spec_path: Path) -> str:
    from emergence.spec import resolve

    (run_spec,) = resolve(str(spec_path), [])
    return run_spec.run_key


def run_dir_of(spec_path: Path) -> Path:
    spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    return Path(spec["execution"]["output_dir"]) / spec["name"] / run_key_of(spec_path)


def subprocess_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "WANDB_"))}
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


def emergence_command() -> list[str]:
    found = shutil.which("emergence", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "emergence.cli"]


def start_run(
    spec_path: Path, log_path: Path, *overrides: str, env: Mapping[str, str] | None = None, new_session: bool = False
) -> subprocess.Popen[bytes]:
    """`emergence run SPEC` in a process of its own (with ``new_session``, in a process group of its own, which
    its pool workers join: the case can signal them all); its output goes to ``log_path`` (appended)."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [*emergence_command(), "run", str(spec_path), "--quiet", *overrides],
            cwd=spec_path.parent,
            env=subprocess_env(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )


def run_to_end(spec_path: Path, log_path: Path, *overrides: str, env: Mapping[str, str] | None = None) -> int:
    process = start_run(spec_path, log_path, *overrides, env=env)
    try:
        return process.wait(timeout=RUN_TIMEOUT_S)
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL, as the OS's out-of-memory killer or a node going away would: no handler runs."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[bytes] | None, what: str, timeout: float = RUN_TIMEOUT_S, poll: float = 0.005) -> None:
    """Poll ``condition`` until it holds; fail if ``process`` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the run ended (exit {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


def run_here(run_spec: Any, progress: Callable[[Any, Mapping[str, float]], None] | None = None) -> Any:
    """``run_one`` in this process, on the spec's torch threads as ``emergence run`` would set them (so that it is
    the reference run bit for bit), and this process's own thread count back afterwards. For cases whose fault is
    injected between two steps (``progress`` is called after each): no Python start to pay."""
    import torch

    from emergence.runner import run_one

    threads = torch.get_num_threads()
    torch.set_num_threads(run_spec.spec.execution.threads_per_worker or threads)
    try:
        return run_one(run_spec, progress)
    finally:
        torch.set_num_threads(threads)


# -- reading what a run left ------------------------------------------------------------------------------


def records(run_dir: Path) -> list[dict[str, Any]]:
    """Every whole line of the journal (a torn last line left out, as the journal's reader does)."""
    path = run_dir / "journal.jsonl"
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")[:-1]  # the part after the last newline is torn or empty
    return [json.loads(line) for line in lines]


def value_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in records(run_dir) if "values" in r]


def last_value_step(run_dir: Path) -> int | None:
    steps = value_steps(run_dir)
    return steps[-1] if steps else None


def data_lines(run_dir: Path) -> list[tuple[Any, ...]]:
    """The journal's values and tables in order, timings left out: what must match the reference exactly."""
    lines: list[tuple[Any, ...]] = []
    for record in records(run_dir):
        if "values" in record:
            values = {k: v for k, v in record["values"].items() if not k.startswith(TIMING_PREFIX)}
            lines.append(("values", record["step"], values))
        elif "table" in record:
            lines.append(("table", record["table"], record["step"], record["columns"], record["rows"]))
    return lines


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def status_of(run_dir: Path) -> dict[str, Any]:
    return read_json(run_dir / "status.json")


def events(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    return [r for r in records(run_dir) if r.get("event") == kind]


def count_lost_and_duplicated(run_dir: Path, reference_dir: Path) -> tuple[int, int]:
    """Values (one metric at one step) the reference has and this run has not, and values this run holds more
    than once: the two figures of the benchmark table."""
    def counted(directory: Path) -> dict[tuple[int, str], int]:
        seen: dict[tuple[int, str], int] = {}
        for record in records(directory):
            for key in record.get("values", {}):
                seen[(record["step"], key)] = seen.get((record["step"], key), 0) + 1
        return seen

    got, expected = counted(run_dir), counted(reference_dir)
    lost = sum(1 for key in expected if key not in got)
    duplicated = sum(n - 1 for n in got.values() if n > 1)
    return lost, duplicated


def comparable(value: Any) -> Any:
    """A value as the journal, MLflow or W&B holds it, in a form that compares equal when it is the same
    number: the journal writes a non-finite float as text, and a NaN equals nothing, itself included."""
    if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
        value = float(value)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def journal_history(run_dir: Path) -> dict[str, list[tuple[int, Any]]]:
    """Every metric of the journal as (step, value) in step order: what a tracker's history must hold."""
    history: dict[str, list[tuple[int, Any]]] = {}
    for record in records(run_dir):
        for key, value in record.get("values", {}).items():
            history.setdefault(key, []).append((record["step"], comparable(value)))
    return {key: sorted(entries, key=lambda entry: entry[0]) for key, entries in history.items()}


def assert_history_is_the_journals(history: Mapping[str, list[tuple[int, Any]]], reference_dir: Path) -> tuple[int, int]:
    """A tracker's history holds every value the reference journaled, once, and the same (timings: only their
    steps). Returns (values lost, values duplicated) for the benchmark table, before asserting both are 0."""
    expected = journal_history(reference_dir)
    got = {key: entries for key, entries in history.items() if key in expected}
    lost = sum(len({step for step, _ in entries} - {step for step, _ in got.get(key, [])}) for key, entries in expected.items())
    duplicated = sum(len(entries) - len({step for step, _ in entries}) for entries in got.values())
    assert (lost, duplicated) == (0, 0), f"{lost} values lost, {duplicated} duplicated"
    for key, entries in expected.items():
        if key.startswith(TIMING_PREFIX):
            assert [step for step, _ in got[key]] == [step for step, _ in entries], key
        else:
            assert sorted(((step, comparable(value)) for step, value in got[key]), key=lambda entry: entry[0]) == entries, key
    return lost, duplicated


def assert_matches_reference(run_dir: Path, reference_dir: Path) -> None:
    """Completed, with the reference's journal values and tables (same lines in the same order: no step
    missing, none twice), analysis, verdicts and final weights, timings aside."""
    import torch

    assert status_of(run_dir)["state"] == "completed", status_of(run_dir)
    got, expected = data_lines(run_dir), data_lines(reference_dir)
    assert [line[:2] for line in got] == [line[:2] for line in expected], "journal lines differ (missing or duplicated)"
    for a, b in zip(got, expected, strict=True):
        assert a == b, f"journal line differs: {a[:2]}"
    steps = value_steps(run_dir)
    assert len(steps) == len(set(steps)), f"a step journaled twice: {steps}"
    assert read_json(run_dir / "analysis.json") == read_json(reference_dir / "analysis.json")
    assert read_json(run_dir / "verdicts.json") == read_json(reference_dir / "verdicts.json")
    assert (run_dir / "report.html").exists()
    final = f"checkpoints/step_{STEPS:08d}.pt"
    weights = torch.load(run_dir / final, weights_only=True)["model"]
    reference = torch.load(reference_dir / final, weights_only=True)["model"]
    assert weights.keys() == reference.keys()
    assert all(torch.equal(weights[k], reference[k]) for k in weights)
    assert count_lost_and_duplicated(run_dir, reference_dir) == (0, 0)


# -- MLflow ------------------------------------------------------------------------------------------------


def mlflow_run(tracking_uri: str, run_key: str, experiment: str = SPEC_NAME) -> Any:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment} at {tracking_uri}"
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.`emergence.run_key` = '{run_key}'")
    assert len(runs) == 1, f"{len(runs)} MLflow runs of {run_key} at {tracking_uri}"
    return runs[0]


def mlflow_history(tracking_uri: str, run_key: str, experiment: str = SPEC_NAME) -> dict[str, list[tuple[int, float]]]:
    """Every metric of the run as (step, value) in step order, each entry as often as MLflow holds it."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    run = mlflow_run(tracking_uri, run_key, experiment)
    return {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        for key in run.data.metrics
    }


def assert_same_mlflow_history(
    tracking_uri: str,
    reference_uri: str,
    run_key: str,
    experiment: str = SPEC_NAME,
    reference_experiment: str | None = None,
    unlike_params: tuple[str, ...] = (),
) -> None:
    """The same metrics at the same steps, each once, with the same values (timings: only the steps); the same
    params (but ``unlike_params``: a grid run's ``grid_point.*`` and ``sweep_key`` against a lone reference run);
    FINISHED."""
    reference_experiment = reference_experiment or experiment
    got = mlflow_history(tracking_uri, run_key, experiment)
    expected = mlflow_history(reference_uri, run_key, reference_experiment)
    assert got.keys() == expected.keys()
    for key, history in got.items():
        steps = [step for step, _ in history]
        assert len(steps) == len(set(steps)), f"{key}: a step logged twice to MLflow: {steps}"
        if key.startswith(TIMING_PREFIX):
            assert steps == [step for step, _ in expected[key]], key
        else:
            assert history == expected[key], key
    run, reference = mlflow_run(tracking_uri, run_key, experiment), mlflow_run(reference_uri, run_key, reference_experiment)
    assert run.info.status == "FINISHED"

    def params(found: Any) -> dict[str, str]:
        return {key: value for key, value in found.data.params.items() if not key.startswith(unlike_params)}

    assert params(run) == params(reference)


def finished_sweep_parent(tracking_uri: str, experiment: str, runs: Sequence[Any]) -> Any:
    """The sweep's one parent run in MLflow, asserted FINISHED with exactly ``runs`` (their run keys) nested under it."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    sweep = f"tags.`emergence.sweep` = '{runs[0].sweep_key}'"
    (parent,) = client.search_runs([experiment_id], filter_string=f"{sweep} and tags.`emergence.sweep_parent` = 'true'")
    assert parent.info.status == "FINISHED"
    children = client.search_runs([experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(child.data.tags["emergence.run_key"] for child in children) == sorted(run.run_key for run in runs)
    return parent


def mlflow_lost_and_duplicated(tracking_uri: str, run_key: str, run_dir: Path, experiment: str = SPEC_NAME) -> tuple[int, int]:
    """Values the run journaled that its MLflow run does not hold, and values it holds more than once."""
    history = mlflow_history(tracking_uri, run_key, experiment)
    expected = {(r["step"], key) for r in records(run_dir) for key in r.get("values", {})}
    logged = [(step, key) for key, entries in history.items() for step, _ in entries if not key.startswith("summary/")]
    return len(expected - set(logged)), len(logged) - len(set(logged))


def files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        if root.is_file():
            yield root
        elif root.is_dir():
            yield from (path for path in root.rglob("*") if path.is_file())


# -- the benchmark table ------------------------------------------------------------------------------------

FAULT_TABLE_ENV = "EMERGENCE_FAULT_TABLE"  # benchmarks/faults.py sets it to collect the table's rows


def record_fault(fault: str, injected: int, survived: int, lost: int, duplicated: int, resume_s: float | None) -> None:
    """One row of benchmarks/README.md's fault table, appended to ``$EMERGENCE_FAULT_TABLE`` when it is set."""
    path = os.environ.get(FAULT_TABLE_ENV)
    if not path:
        return
    # Which case, as file::function: a failed one writes no row.
    file, _, function = os.environ.get("PYTEST_CURRENT_TEST", "").partition("::")
    test = f"{Path(file).name}::{function.split(' ')[0]}"
    row = {"test": test, "fault": fault, "injected": injected, "survived": survived, "lost": lost, "duplicated": duplicated, "resume_s": resume_s}
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


def seconds_until_resumed(run_dir: Path, process: subprocess.Popen[bytes], started: float, resumes_before: int) -> float:
    """From ``started`` (the rerun's launch) until its ``resume`` event is journaled: a Python start, the
    checkpoint loaded and the journal cut back."""
    wait_for(lambda: len(events(run_dir, "resume")) > resumes_before, process, "the rerun's resume event")
    return time.monotonic() - started


def assert_mlflow_caught_up(run_dir: Path, reference: Any, server_uri: str, experiment: str) -> tuple[int, int]:
    """After a tracker fault: nothing left behind, one catch-up, the run and its MLflow history equal to the
    reference's; returns (values lost, values duplicated) in the server's history."""
    status = status_of(run_dir)
    assert "trackers_behind" not in status, status
    assert [e["tracker"] for e in events(run_dir, "tracker_caught_up")] == ["mlflow"]
    assert_matches_reference(run_dir, reference.run_dir)
    assert_same_mlflow_history(server_uri, reference.tracking_uri, reference.run_key, experiment, "faults")
    return mlflow_lost_and_duplicated(server_uri, reference.run_key, run_dir, experiment)
