"""The fault-injection suite (tests/faults) as a table: each fault injected, how many times, how many the run
survived (it completed on a rerun, or caught its tracker up, and matched the undisturbed reference run), values
lost and values duplicated against the reference (targets: 0 and 0), and the time to resume.

    python benchmarks/faults.py            # runs `pytest tests/faults`, prints the Markdown table

The tests write one row each to ``$EMERGENCE_FAULT_TABLE``; a test that fails writes none, and its fault then
shows as injected and not survived. The wall time of the whole suite is printed under the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="emergence-faults-") as scratch:
        table = Path(scratch) / "rows.jsonl"
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/faults", "-q", "-p", "no:cacheprovider"],
            cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1", "EMERGENCE_FAULT_TABLE": str(table)},
        )  # fmt: skip
        seconds = time.monotonic() - started
        rows = [json.loads(line) for line in table.read_text().splitlines()] if table.exists() else []
    print("| fault | injected | survived | values lost | values duplicated | time to resume (s) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        resume = "-" if row["resume_s"] is None else f"{row['resume_s']:.1f}"
        print(f"| {row['fault']} | {row['injected']} | {row['survived']} | {row['lost']} | {row['duplicated']} | {resume} |")
    total = {key: sum(row[key] for row in rows) for key in ("injected", "survived", "lost", "duplicated")}
    print(f"| **all** | {total['injected']} | {total['survived']} | {total['lost']} | {total['duplicated']} | |")
    print(f"\npytest tests/faults: exit {result.returncode}, {seconds:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "seconds": seconds, "exit": result.returncode}, indent=2))
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
