"""What does an ``emergence.Monitor`` cost in someone else's loop, next to what our own loop's measures cost?

Three variants on the same model (the shipped ``specs/addition.yaml``), data order and number of steps, in
one process, interleaved over ``--repeats``; training phase only (step 1 to the last step), medians:

- ``bare``: the plain PyTorch loop of ``benchmarks/overhead.py``, nothing measured;
- ``bare + Monitor``: the same loop with a Monitor stepped after every step: the spec's geometry measures
  (RankMe, participation ratio, stable rank) on two sites of both layers (module paths ``blocks.*.hook_in``
  and ``blocks.*.hook_out``, the residual stream before and after each block), on the same 200 diagnostic
  examples and schedule, and the same behaviour evaluation (loss, token accuracy and exact match on the test
  set and 256 training examples) as a behaviour callable;
- ``emergence run``: our own loop on the spec, default measures (resid_mid and resid_post of both layers),
  behaviour at every measurement, journal and checkpoints.

    python benchmarks/monitor.py [--steps 250] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from overhead import SPEC, bare_loop, emergence_loop

import emergence
from emergence.measures.behavior import behavior_values
from emergence.spec import resolve

TRAIN_EVAL_SIZE = 256  # as the run's own behaviour evaluation (runner.TRAIN_EVAL_SIZE)


def monitored_loop(steps: int, spec, out: Path) -> tuple[float, float]:
    """Seconds of the bare loop with a Monitor in it, and the seconds its measures logged as cost/*."""
    monitor_spec = {
        "kind": "monitor", "name": "bench-monitor", "tracking": [], "execution": {"output_dir": str(out)},
        "measures": [
            {"name": "rankme", "sites": ["blocks.*.hook_in", "blocks.*.hook_out"]},
            {"name": "participation_ratio", "sites": ["blocks.*.hook_out"]},
            {"name": "stable_rank", "sites": ["blocks.*.hook_out"]},
        ],
        "schedule": spec.schedule.model_dump(),
        "analysis": {"emergence": {"metric": "behavior/test/exact_match"}},
    }
    made: dict[str, emergence.Monitor] = {}

    def attach(model, data, optimizer):  # noqa: ANN001, ANN202 - overhead.bare_loop's hook
        train_eval = data.train.subset(torch.arange(min(len(data.train), TRAIN_EVAL_SIZE)))
        cpu = torch.device("cpu")

        def behavior() -> dict[str, float]:
            return {**behavior_values(model, data.test, "test", cpu, False), **behavior_values(model, train_eval, "train", cpu, False)}

        monitor = emergence.Monitor(
            monitor_spec, model=model, diagnostic=data.diagnostic.tokens, positions=data.diagnostic.prompt_len - 1,
            behavior=behavior, optimizer=optimizer, total_steps=steps,
        )
        monitor.step(0)
        made["monitor"] = monitor
        return monitor.step

    seconds = bare_loop(steps, spec, attach)
    result = made["monitor"].finish()
    assert result.state == "completed", result
    measured = sum(v for _, values in result.journal.iterrows() for k, v in values.items() if k.startswith("cost/") and v == v)
    return seconds, measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    (base,) = resolve(str(SPEC), ["tracking=[]"])
    times: dict[str, list[float]] = {"bare": [], "bare + Monitor": [], "emergence run": []}
    measuring: dict[str, list[float]] = {"bare + Monitor": [], "emergence run": []}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            times["bare"].append(bare_loop(args.steps, base.spec))
            seconds, spent = monitored_loop(args.steps, base.spec, Path(scratch) / f"monitor{repeat}")
            times["bare + Monitor"].append(seconds)
            measuring["bare + Monitor"].append(spent)
            seconds, spent = emergence_loop(args.steps, [], Path(scratch) / f"run{repeat}")
            times["emergence run"].append(seconds)
            measuring["emergence run"].append(spent)
    bare = statistics.median(times["bare"])
    print(f"{args.steps} steps, median of {args.repeats}, torch threads {torch.get_num_threads()}")
    print("| variant | seconds (median) | x bare | measuring logged as cost/* (s) |")
    print("|---|---|---|---|")
    for name, samples in times.items():
        spent = f"{statistics.median(measuring[name]):.1f}" if name in measuring else "-"
        print(f"| {name} | {statistics.median(samples):.1f} | {statistics.median(samples) / bare:.3f} | {spent} |")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"\n({time.perf_counter() - started:.0f} s in all)")
