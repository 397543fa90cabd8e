"""How long do the commands that should answer at once take to start: ``emergence --help``, ``validate`` and ``ls``?

Each command runs as a fresh process (``python -m emergence.cli ...``), ``--repeats`` times, the commands
interleaved so that drift on a shared machine hits all of them alike; the table gives the median. The
baseline, timed in the same run, is a bare typer app with one command (written to a temporary file by this
script): the least a typer command line costs with this Python and these packages. Each ``emergence`` row
is compared with the bare app doing the same kind of thing: ``--help`` with its ``--help`` (typer imports
its rich help formatter), a command with its command run (typer imports its pydantic-based parameter
conversion instead). The target is every command within 1.5x of its baseline. ``python -c pass`` is timed
too, for the interpreter's own share. One more run of each command under ``-X importtime`` tells whether
it imported torch.

``--tree DIR`` times the ``emergence`` in another checkout (it runs the commands with DIR as the working
directory, which ``python -m`` puts first on the path), e.g. the last commit, for a before/after figure:

    git archive HEAD | tar -x -C /tmp/before
    python benchmarks/startup.py --tree /tmp/before --markdown
    python benchmarks/startup.py --markdown

    python benchmarks/startup.py [--repeats 7] [--tree DIR] [--markdown] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 1.5
ROOT = Path(__file__).resolve().parents[1]

BARE_APP = '''
import typer

app = typer.Typer(add_completion=False)


@app.command()
def hello(name: str = "world") -> None:
    """Say hello."""
    print(f"hello {name}")


if __name__ == "__main__":
    app()
'''


HELP_BASELINE = "bare typer app --help"
COMMAND_BASELINE = "bare typer app, its command"


def commands(bare_app: Path) -> dict[str, tuple[list[str], str | None]]:
    """name -> (command line, the baseline it is compared with)."""
    python = sys.executable
    emergence = [python, "-m", "emergence.cli"]
    return {
        "python -c pass": ([python, "-c", "pass"], None),
        HELP_BASELINE: ([python, str(bare_app), "--help"], None),
        COMMAND_BASELINE: ([python, str(bare_app), "--name", "emergence"], None),
        "emergence --help": ([*emergence, "--help"], HELP_BASELINE),
        "emergence validate specs/addition.yaml": ([*emergence, "validate", "specs/addition.yaml"], COMMAND_BASELINE),
        "emergence ls measures": ([*emergence, "ls", "measures"], COMMAND_BASELINE),
    }


def time_once(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_environment())
    return time.perf_counter() - start


def imports_torch(command: list[str], cwd: Path) -> bool:
    done = subprocess.run([command[0], "-X", "importtime", *command[1:]], cwd=cwd, capture_output=True, text=True, env=_environment())
    # -X importtime writes "import time: <self us> | <cumulative us> | <indent><module>" for every import.
    return any(line.startswith("import time:") and line.rsplit("|", 1)[-1].strip() == "torch" for line in done.stderr.splitlines())


def _environment() -> dict[str, str]:
    import os

    return {**os.environ, "COLUMNS": "120", "HF_HUB_OFFLINE": "1"}


def measure(repeats: int, tree: Path) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory() as scratch:
        bare_app = Path(scratch) / "bare_app.py"
        bare_app.write_text(BARE_APP, encoding="utf-8")
        chosen = commands(bare_app)
        for command, _ in chosen.values():
            time_once(command, tree)  # warm the file cache: the first start of anything is slower
        seconds: dict[str, list[float]] = {name: [] for name in chosen}
        for _ in range(repeats):
            for name, (command, _) in chosen.items():
                seconds[name].append(time_once(command, tree))
        torch_imported = {name: imports_torch(command, tree) for name, (command, _) in chosen.items()}
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    rows = []
    for name, values in seconds.items():
        baseline = chosen[name][1]
        rows.append({
            "command": name,
            "median_ms": round(medians[name] * 1000, 1),
            "min_ms": round(min(values) * 1000, 1),
            "baseline": baseline,
            "ratio": round(medians[name] / medians[baseline], 2) if baseline else None,
            "imports_torch": torch_imported[name],
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="runs of each command (default 7); the median is reported")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose emergence is timed (default: this one)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()

    rows = measure(args.repeats, args.tree.resolve())
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        print(f"| command | median ms | min ms | x its baseline | imports torch | within {TARGET_RATIO}x |")
        print("|---|---|---|---|---|---|")
    for row in rows:
        ratio = row["ratio"]
        verdict = ("yes" if ratio <= TARGET_RATIO else "**no**") if ratio is not None else ""  # type: ignore[operator]
        ratio_text = f"{ratio:.2f}" if ratio is not None else "-"
        torch = "yes" if row["imports_torch"] else "no"
        if args.markdown:
            print(f"| {row['command']} | {row['median_ms']:.0f} | {row['min_ms']:.0f} | {ratio_text} | {torch} | {verdict} |")
        else:
            print(f"{row['command']:<40} {row['median_ms']:7.0f} ms (min {row['min_ms']:.0f})  x{ratio_text:<5} torch: {torch}  {verdict}")


if __name__ == "__main__":
    main()
