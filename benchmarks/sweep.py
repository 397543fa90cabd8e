"""How much faster does a sweep finish on the local process pool and on Ray than one run after another?

Eight runs of ``specs/tiny.yaml`` (seeds 0-7, more steps than the shipped tiny spec so that each run takes
seconds, not a fraction of one) are run three ways, each into a fresh output directory, with no tracker:

1. ``sequential``: ``executor: local``, one after another in this process, torch on every core (the default),
   and ``sequential_1_thread``, the same on one core: the work each parallel variant divides among its workers;
2. ``pool``: ``executor: local, workers: 2``: two forked worker processes, one torch thread each;
3. ``ray``: ``executor: ray`` on a new local Ray instance with 2 CPUs, one CPU (and thread) per run.

The wall time of the whole ``execute()`` call is timed, start-up of the pool's fork server and of Ray
included, since a user waits for those too. Speedup = sequential seconds / variant seconds, measured in the
same invocation (the machines are shared; only ratios carry over); "vs 1 thread" divides the one-core
sequential time instead, which shows how well the workers split the work apart from what torch's own threads
already gained the default sequential run. Every run must complete in every variant.

    python benchmarks/sweep.py [--runs 8] [--steps 1500] [--skip-ray] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from emergence.orchestrate import execute
from emergence.spec import resolve

SPEC = Path(__file__).resolve().parents[1] / "specs" / "tiny.yaml"

VARIANTS: dict[str, list[str]] = {
    "sequential": ["execution.executor=local", "execution.workers=1"],
    "sequential_1_thread": ["execution.executor=local", "execution.workers=1", "execution.threads_per_worker=1"],
    "pool": ["execution.executor=local", "execution.workers=2", "execution.threads_per_worker=1"],
    "ray": ["execution.executor=ray", "execution.workers=2", "execution.resources.cpus=1", "execution.threads_per_worker=1"],
}


def time_variant(name: str, runs: int, steps: int, root: Path) -> dict[str, Any]:
    overrides = [
        f"grid={{seed: {list(range(runs))}}}",
        f"training.steps={steps}",
        f"training.checkpoint_every={steps}",
        "tracking=[]",
        f"execution.output_dir={root / name}",
        *VARIANTS[name],
    ]
    run_specs = resolve(str(SPEC), overrides)
    started = time.perf_counter()
    outcomes = execute(run_specs)
    seconds = time.perf_counter() - started
    states = [outcome.state for outcome in outcomes]
    if states != ["completed"] * runs:
        raise RuntimeError(f"{name}: not every run completed: {states}")
    return {"variant": name, "runs": runs, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1500, help="training steps per run")
    parser.add_argument("--skip-ray", action="store_true", help="without integrations/ray installed")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # The one-thread variant runs last: it sets this process's torch threads, which the others must not inherit.
    names = [n for n in VARIANTS if n != "sequential_1_thread" and not (args.skip_ray and n == "ray")]
    names.append("sequential_1_thread")
    with tempfile.TemporaryDirectory(prefix="emergence-bench-sweep-") as scratch:
        results = [time_variant(name, args.runs, args.steps, Path(scratch)) for name in names]
    baseline = results[0]["seconds"]
    print(f"{args.runs} runs of {args.steps} steps ({SPEC.name}) on {os.cpu_count()} cores")
    one_core = next(r["seconds"] for r in results if r["variant"] == "sequential_1_thread")
    print(f"{'variant':<22}{'seconds':>10}{'speedup':>10}{'vs 1 thread':>13}")
    for result in results:
        result["speedup"] = baseline / result["seconds"]
        result["speedup_vs_1_thread"] = one_core / result["seconds"]
        print(f"{result['variant']:<22}{result['seconds']:>10.1f}{result['speedup']:>10.2f}{result['speedup_vs_1_thread']:>13.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
