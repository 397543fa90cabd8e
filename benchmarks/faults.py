"""The fault-injection suite (tests/faults) as a table: each fault injected, how many times, how many the run
survived (it completed on a rerun, or caught its tracker up, and matched the undisturbed reference run), values
lost and values duplicated against the reference (targets: 0 and 0), and the time to resume.

    python benchmarks/faults.py            # runs `pytest tests/faults`, prints the Markdown table
    python benchmarks/faults.py --threads  # specs/tiny.yaml with 1, 2 and again 2 torch threads: what differs

The tests write one row each to ``$EMERGENCE_FAULT_TABLE``. Every case the suite holds is listed in ``CASES``: a
case whose test failed (or never ran) writes no row, and shows as injected and not survived, its values unknown
(before, a failed case simply vanished from the table).
The wall time of the whole suite is printed under the table.

``--threads`` runs the shipped tiny spec three times as ``emergence run`` processes, with
``execution.threads_per_worker`` 1, 2 and 2, and compares their journals value by value: the first measured step
at which 1 and 2 threads differ, by how much (relative), how that grows, and whether the two runs on 2 threads are
the same bit for bit. docs/reliability.md quotes what it printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (the test that writes the row: its file, or file::function where a file holds several cases; what the table
# calls its fault; how many faults it injects): a case whose test failed writes no row, and still counts as injected
# and not survived.
CASES = [
    ("test_process_kill.py", "SIGKILL of `emergence run`: in training, inside a measurement, while writing a checkpoint, while writing the analysis and report; plus a torn journal line", 4),
    ("test_disk_full.py", "disk full (a 16 MB tmpfs filled by the test): at a journal append, at a checkpoint write; rerun with room", 2),
    ("test_mlflow_server_restart.py", "MLflow server (real `mlflow server`) SIGKILLed mid-run, restarted", 1),
    ("test_mlflow_http_500.py", "MLflow server answering HTTP 500 for a while mid-run (behind a proxy; half the 500s after the server did the write)", 1),
    ("test_sqlite_concurrent.py", "4 runs started at once into one fresh MLflow SQLite store", 4),
    ("test_wandb_deleted.py", "W&B offline run directory deleted mid-run", 1),
    ("test_ray_sweep.py", "Ray sweep of 2 runs on a local cluster: a worker SIGKILLed mid-run, then the driver (`emergence run`) SIGKILLed; rerun", 2),
    ("test_mlflow_server_sweep.py::test_mlflow_server_killed_mid_sweep_and_restarted_before_its_end",
     "MLflow server SIGKILLed mid-sweep (2 runs on the process pool, the parent run open), restarted before the sweep's end", 1),
    ("test_mlflow_server_sweep.py::test_mlflow_server_away_at_the_sweeps_end_then_emergence_sync",
     "MLflow server SIGKILLed mid-sweep and still away at its end (parent run unfinished); `emergence sync` of the sweep directory once it is back", 1),
]  # fmt: skip


def fault_table(rows: list[dict], seconds: float, exit_code: int) -> str:
    left = list(rows)
    lines = [
        "| fault | injected | survived | values lost | values duplicated | time to resume (s) |",
        "|---|---|---|---|---|---|",
    ]
    totals = {"injected": 0, "survived": 0, "lost": 0, "duplicated": 0}
    for test, fault, injected in CASES:
        # A row names its test as file::function; CASES names the file alone where the file is one case.
        row = next((r for r in left if test in (r.get("test"), str(r.get("test")).split("::")[0])), None)
        if row is None:  # the test failed before it could count: nothing survived as far as we know
            lines.append(f"| {fault} (tests/faults/{test} failed) | {injected} | 0 | ? | ? | - |")
            totals["injected"] += injected
            continue
        left.remove(row)
        resume = "-" if row["resume_s"] is None else f"{row['resume_s']:.1f}"
        lines.append(f"| {fault} | {row['injected']} | {row['survived']} | {row['lost']} | {row['duplicated']} | {resume} |")
        for key in totals:
            totals[key] += row[key]
    for row in left:  # a case not (yet) listed in CASES
        lines.append(f"| {row['fault']} (not in CASES) | {row['injected']} | {row['survived']} | {row['lost']} | {row['duplicated']} | - |")
    lines.append(f"| **all** | **{totals['injected']}** | **{totals['survived']}** | **{totals['lost']}** | **{totals['duplicated']}** | |")
    lines.append(f"\npytest tests/faults: exit {exit_code}, {seconds:.0f} s")
    return "\n".join(lines)


def run_suite(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="emergence-faults-") as scratch:
        table = Path(scratch) / "rows.jsonl"
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/faults", "-q", "-p", "no:cacheprovider", "--durations=0"],
            cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1", "EMERGENCE_FAULT_TABLE": str(table)},
        )  # fmt: skip
        seconds = time.monotonic() - started
        rows = [json.loads(line) for line in table.read_text().splitlines()] if table.exists() else []
    print(fault_table(rows, seconds, result.returncode))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "seconds": seconds, "exit": result.returncode}, indent=2))
    sys.exit(result.returncode)


# -- --threads: what a different torch thread count changes ---------------------------------------------------


def journal_values(run_dir: Path) -> list[tuple[int, dict[str, float]]]:
    lines = (run_dir / "journal.jsonl").read_text(encoding="utf-8").splitlines()
    return [(r["step"], r["values"]) for r in map(json.loads, lines) if "values" in r]


def relative(a: float, b: float) -> float:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def compare_runs(one: Path, two: Path) -> list[dict]:
    """Per journaled step: how many values (timings left out) differ, and the largest relative difference."""
    rows = []
    for (step, a), (step_b, b) in zip(journal_values(one), journal_values(two), strict=True):
        assert step == step_b, (step, step_b)
        keys = [k for k in a if not k.startswith("cost/")]
        differences = {k: relative(a[k], b[k]) for k in keys}
        worst = max(differences, key=differences.get)
        rows.append({"step": step, "values": len(keys), "differ": sum(d > 0 for d in differences.values()),
                     "max_rel": differences[worst], "worst": worst})  # fmt: skip
    return rows


def run_tiny(output_dir: Path, threads: int) -> Path:
    command = [
        sys.executable, "-m", "emergence.cli", "run", str(REPO / "specs" / "tiny.yaml"), "--quiet",
        f"execution.output_dir={output_dir}", f"execution.threads_per_worker={threads}",
    ]  # fmt: skip
    subprocess.run(command, cwd=output_dir.parent, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True, capture_output=True)
    (run_dir,) = [p.parent for p in output_dir.glob("*/*/journal.jsonl")]
    return run_dir


def threads(args: argparse.Namespace) -> None:
    import torch

    with tempfile.TemporaryDirectory(prefix="emergence-threads-") as scratch:
        runs = {name: run_tiny(Path(scratch) / name, n) for name, n in (("t1", 1), ("t2", 2), ("t2again", 2))}
        assert len({run.name for run in runs.values()}) == 1, "the thread count must not change the run key"
        same = compare_runs(runs["t2"], runs["t2again"])
        differ = compare_runs(runs["t1"], runs["t2"])
        weights = {name: torch.load(max(run.glob("checkpoints/step_*.pt")), weights_only=True)["model"] for name, run in runs.items()}
        verdicts = {name: json.loads((run / "verdicts.json").read_text()) for name, run in runs.items()}
    # Per tensor: its largest difference as a share of its largest entry.
    per_tensor = {k: ((weights["t1"][k] - weights["t2"][k]).abs().max() / weights["t2"][k].abs().max()).item() for k in weights["t2"]}
    ordered = sorted(per_tensor.values())
    far = {k: v for k, v in per_tensor.items() if v > 1e-3}
    same_weights = all(torch.equal(weights["t2"][k], weights["t2again"][k]) for k in weights["t2"])
    changed = [
        (a.get("signal") or a.get("feature"), {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)})
        for a, b in zip(verdicts["t1"], verdicts["t2"], strict=True) if a != b
    ]  # fmt: skip
    print(f"specs/tiny.yaml, run key {runs['t1'].name}, torch {torch.__version__}, {os.cpu_count()} CPUs\n")
    print(f"2 threads, twice: {sum(r['differ'] for r in same)} values differ; final weights equal: {same_weights}; "
          f"verdicts equal: {verdicts['t2'] == verdicts['t2again']}\n")  # fmt: skip
    print("1 thread against 2 threads, per measured step (timings left out):\n")
    print("| step | values | differ | largest relative difference | in |")
    print("|---|---|---|---|---|")
    for row in differ:
        print(f"| {row['step']} | {row['values']} | {row['differ']} | {row['max_rel']:.1e} | `{row['worst']}` |")
    print(f"\nfinal weights, per tensor (largest difference / largest entry): median {ordered[len(ordered) // 2]:.1e}, "
          f"{len(far)} of {len(per_tensor)} above 1e-3: " + ", ".join(f"{k} {v:.2f}" for k, v in far.items()))  # fmt: skip
    print(f"verdicts: {len(changed)} of {len(verdicts['t1'])} differ" + "".join(f"\n  {name}: {fields}" for name, fields in changed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--threads", action="store_true", help="measure what 1 and 2 torch threads change instead")
    args = parser.parse_args()
    threads(args) if args.threads else run_suite(args)


if __name__ == "__main__":
    main()
