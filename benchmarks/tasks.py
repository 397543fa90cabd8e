"""How fast does every task build its data, at every level?

For each registered built-in task and level, time ``build_task`` (sampling distinct inputs, making the
examples with their feature labels, tokenizing) for ``--n`` examples (90% train, 10% test), or for the
whole input space when it is smaller; once with labels on every example (the target's condition) and
once as a run builds its data (no labels on the training split, which training never reads). The process is pinned to one core and torch to one thread, as the
target is stated per core: 100,000 examples in under 10 s for every task at its hardest level.

Wall times on shared machines drift, so each row also gives its time relative to a baseline measured
in the same run: ``binary_addition`` at level 1, the simplest built-in, timed before and after the
others (the mean of the two).

    python benchmarks/tasks.py [--n 100000] [--tasks bfs,dfs] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from emergence import registry
from emergence.tasks import build_task

TARGET_SECONDS_PER_100K = 10.0
BASELINE = ("binary_addition", 1)


def time_build(name: str, level: int, n: int, train_features: bool = True) -> tuple[int, float]:
    """Seconds to build ``n`` examples (or the whole input space, if smaller); returns (examples, seconds)."""
    task = registry.tasks.get(name)()
    params = task.default_params(level)
    space = task.input_space_size(params)
    n = min(n, space)
    n_test = max(1, n // 10)
    start = time.perf_counter()
    build_task(name, level, {}, n - n_test, n_test, 1, seed=0, train_features=train_features)
    return n, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="examples per build (default 100,000)")
    parser.add_argument("--tasks", default="", help="comma-separated task names (default: every registered task)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)
    names = [n for n in args.tasks.split(",") if n] or registry.tasks.names()

    baseline_runs = [time_build(*BASELINE, args.n)]
    rows = []
    for name in names:
        task = registry.tasks.get(name)()
        for level in sorted(task.levels):
            examples, seconds = time_build(name, level, args.n)
            _, as_run = time_build(name, level, args.n, train_features=False)
            rows.append((name, level, examples, seconds, as_run))
            print(f"{name} L{level}: {examples} examples in {seconds:.2f} s ({as_run:.2f} s without train labels)", flush=True)
    baseline_runs.append(time_build(*BASELINE, args.n))
    baseline = sum(s / e for e, s in baseline_runs) / len(baseline_runs)  # seconds per example

    hardest = {name: max(registry.tasks.get(name)().levels) for name in names}
    print()
    if args.markdown:
        print("| task | level | examples | seconds | examples/s | s per 100k | vs baseline | s per 100k as a run builds | hardest level under 10 s / 100k |")
        print("|---|---|---|---|---|---|---|---|---|")
    for name, level, examples, seconds, as_run in rows:
        per_100k = seconds / examples * 100_000
        relative = seconds / examples / baseline
        verdict = ("yes" if per_100k < TARGET_SECONDS_PER_100K else "**no**") if level == hardest[name] else ""
        if args.markdown:
            run_per_100k = as_run / examples * 100_000
            print(f"| {name} | {level} | {examples:,} | {seconds:.2f} | {examples / seconds:,.0f} | {per_100k:.2f} | {relative:.2f} | {run_per_100k:.2f} | {verdict} |")
        else:
            print(f"{name:<24} L{level} {examples:>8} ex {seconds:7.2f} s {examples / seconds:>10,.0f}/s {per_100k:6.2f} s/100k  x{relative:.2f} {verdict}")
    print(f"\nbaseline {BASELINE[0]} L{BASELINE[1]}: {1 / baseline:,.0f} examples/s (mean of a run before and after)")


if __name__ == "__main__":
    main()
