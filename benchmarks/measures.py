"""What does each measure cost, what share of a run goes to measuring, and how much memory does capture save?

Three parts, all on the shipped ``specs/addition.yaml`` (2 layers, d_model 64, 16-bit binary addition):

1. **Seconds per call** of every registered measure with its default options, on the model after a short
   stretch of training, timed in the same process as the baseline: the median seconds of one training
   step (full batch of 256). ``x step`` is the ratio, the number that carries over between machines.
   Behaviour evaluation and the shared capture pass are timed the same way. The table also projects each
   measure's share of a 1,000-step addition run if it ran at its default cadence.
2. **Share of wall time spent measuring** in a real run of the shipped spec as it is (its measures, its
   schedule): the seconds the run itself logged as ``cost/*`` over the training-phase wall time.
3. **Peak memory of our capture** against TransformerLens ``run_with_cache`` with no filter (every hook,
   every position) on the same diagnostic inputs. Each variant runs in a fresh subprocess, which resets
   its peak resident set after setup (Linux ``/proc/self/clear_refs``) and reports the peak during the pass; the extra peak over a plain forward pass on the same inputs is what the variant
   costs. The bytes each variant keeps after the pass (unique tensor storage) are counted exactly too.

    python benchmarks/measures.py [--calls 2] [--run-steps 1000] [--skip-run]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from emergence import registry
from emergence.capture import capture
from emergence.measures.base import MeasureContext
from emergence.measures.behavior import behavior_values
from emergence.models import build_model
from emergence.runner import TRAIN_EVAL_SIZE, build_measures, measure_setup, run_one
from emergence.schedule import MeasurementSchedule
from emergence.spec import resolve
from emergence.spec.grid import RunSpec
from emergence.tasks import build_task
from emergence.train.loop import Trainer

SPEC = Path(__file__).resolve().parents[1] / "specs" / "addition.yaml"
WARMUP_STEPS = 150  # off the initialisation, so iterative measures (Lanczos) see a trained-ish model
# Every allocation of 64 KiB or more is its own mapping, returned to the system when freed, so the peak RSS
# of a pass is the pass's own and not an accident of where glibc's heap happened to stand.
PROBE_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
INTERVAL = 25  # training steps between timed calls: the shipped schedule's `every`


def addition_run_spec(overrides: list[str]) -> RunSpec:
    (run_spec,) = resolve(str(SPEC), ["tracking=[]", *overrides])
    return run_spec


# Options a measure cannot go without, and the ablation at every call rather than only at the last step.
REQUIRED_OPTIONS = {"ablation": "features: [carry_in], at: schedule"}


def every_measure(only: list[str] | None = None) -> str:
    """A ``measures=`` override that turns on every registered measure (or ``only`` these) with its defaults."""
    names = [name for name in sorted(registry.measures.names()) if only is None or name in only]
    entries = [f"{{name: {name}, {REQUIRED_OPTIONS[name]}}}" if name in REQUIRED_OPTIONS else f"{{name: {name}}}" for name in names]
    return "measures=[" + ",".join(entries) + "]"


def time_measures(calls: int, only: list[str] | None) -> tuple[float, dict[str, dict[str, Any]], RunSpec]:
    """Median seconds of a training step, and per measure (plus behaviour and capture) the median seconds per call."""
    run_spec = addition_run_spec([every_measure(only)])
    spec = run_spec.spec
    torch.manual_seed(spec.seed)
    device = torch.device("cpu")
    t = spec.task
    task = build_task(t.name, t.level, t.params, t.train_size, t.test_size, t.diagnostic_size, spec.seed, train_features=False)
    model = build_model(spec.model, len(task.vocab), task.seq_len, spec.seed, device)
    trainer = Trainer(model, task.train, spec.training, spec.seed, device)
    train_eval = task.train.subset(torch.arange(min(len(task.train), TRAIN_EVAL_SIZE)))
    setup = measure_setup(spec, task, device)
    measures = build_measures(run_spec, setup)

    step_seconds = []
    for _ in range(WARMUP_STEPS):
        started = time.perf_counter()
        trainer.train_step()
        step_seconds.append(time.perf_counter() - started)
    requests = [r for measure, _ in measures for r in measure.needs()]
    # The spectral edge compares consecutive calls: fill its window first so the timed calls are full ones.
    spectral = [m for m, _ in measures if m.name == "spectral_edge"]
    for _ in range(getattr(spectral[0].options, "window", 10) + 1 if spectral else 0):
        trainer.train_step()
        spectral[0].compute(MeasureContext(step=trainer.step, model=model, activations={}, lr=trainer.lr))

    seconds: dict[str, list[float]] = {"behaviour": [], "capture": [], **{m.name: [] for m, _ in measures}}
    for call in range(calls):
        for _ in range(INTERVAL):
            trainer.train_step()
        print(f"call {call + 1}/{calls} at step {trainer.step}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        behavior_values(model, task.test, "test", device)
        behavior_values(model, train_eval, "train", device)
        seconds["behaviour"].append(time.perf_counter() - started)
        started = time.perf_counter()
        _, activations = capture(model, task.diagnostic, requests, device)
        seconds["capture"].append(time.perf_counter() - started)
        context = MeasureContext(step=trainer.step, model=model, activations=activations, lr=trainer.lr)
        for measure, _ in measures:
            started = time.perf_counter()
            measure.compute(context)
            seconds[measure.name].append(time.perf_counter() - started)
            print(f"  {measure.name}: {seconds[measure.name][-1]:.2f} s", file=sys.stderr, flush=True)
    cadence = {m.name: (every, type(m).cost) for m, every in measures}
    rows = {
        name: {"seconds": statistics.median(samples), "every": cadence.get(name, (None, "cheap"))[0], "cost": cadence.get(name, (None, "-"))[1]}
        for name, samples in seconds.items()
    }
    return statistics.median(step_seconds), rows, run_spec


def print_per_call_table(step_seconds: float, rows: dict[str, dict[str, Any]], run_spec: RunSpec) -> None:
    spec = run_spec.spec
    schedule = MeasurementSchedule(spec.schedule.every, spec.schedule.log_spaced_until, spec.training.steps)
    on_schedule = len(schedule.steps())
    training = spec.training.steps * step_seconds
    print(f"\nbaseline: one training step (batch {spec.training.batch_size}) = {step_seconds * 1000:.0f} ms, median of {WARMUP_STEPS}")
    print(f"projection: a {spec.training.steps}-step run, {on_schedule} schedule steps (every {spec.schedule.every} + log-spaced),"
          f" training alone {training:.0f} s\n")
    print("| measure | cost class | default cadence | seconds per call | x training step | calls per run | seconds per run | share of run if alone |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        calls = len(schedule.steps(row["every"])) if row["every"] else on_schedule
        per_run = calls * row["seconds"]
        cadence = f"every {row['every']}" if row["every"] else "schedule"
        print(f"| {name} | {row['cost']} | {cadence} | {row['seconds']:.3f} | {row['seconds'] / step_seconds:.1f} | {calls} | {per_run:.1f} |"
              f" {100 * per_run / (training + per_run):.1f}% |")


def measuring_share(steps: int) -> None:
    """Run the shipped spec as it is; print the share of training-phase wall time logged as ``cost/*``."""
    from emergence.record import read_journal

    with tempfile.TemporaryDirectory() as scratch:
        run_spec = addition_run_spec([f"training.steps={steps}", f"execution.output_dir={scratch}"])
        marks: dict[str, float] = {}

        def clock(result, values) -> None:  # noqa: ANN001 - the run's progress callback
            marks.setdefault("first", time.perf_counter())
            marks["last"] = time.perf_counter()

        started = time.perf_counter()
        outcome = run_one(run_spec, progress=clock)
        assert outcome.state == "completed", outcome
        total = time.perf_counter() - started
        costs: dict[str, float] = {}
        for _, values in read_journal(outcome.run_dir).values:
            for key, value in values.items():
                if key.startswith("cost/"):
                    costs[key] = costs.get(key, 0.0) + value
    spent = sum(costs.values())
    print(f"\nshipped addition spec, {steps} steps: {total:.0f} s in all; measuring (cost/*) {spent:.1f} s = "
          f"{100 * spent / total:.1f}% of the run (target <= 15%)")
    for key, value in sorted(costs.items(), key=lambda kv: -kv[1]):
        print(f"  {key}: {value:.1f} s")


def memory_status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())[1])


def reset_peak_memory() -> int:
    """Hand freed heap back to the system and restart the peak-RSS count (Linux); returns the RSS now, in KiB.

    Building the task peaks higher than any pass over 200 examples, so the lifetime peak would hide the pass.
    """
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return memory_status_kib("VmRSS")


def memory_probe(variant: str) -> None:
    """Child process: one pass of ``variant`` over the diagnostic set; print peak RSS and kept bytes as JSON."""
    torch.set_num_threads(1)
    run_spec = addition_run_spec([])
    spec = run_spec.spec
    t = spec.task
    task = build_task(t.name, t.level, t.params, t.train_size, t.test_size, t.diagnostic_size, spec.seed, train_features=False)
    device = torch.device("cpu")
    model = build_model(spec.model, len(task.vocab), task.seq_len, spec.seed, device)
    model.eval()
    tokens = task.diagnostic.tokens
    before = reset_peak_memory()
    kept: list[torch.Tensor] = []  # activations held after the pass; the logits, which every variant returns, excluded
    with torch.no_grad():
        if variant == "forward":
            model(tokens)
        elif variant == "capture":
            measures = build_measures(run_spec, measure_setup(spec, task, device))
            _, activations = capture(model, task.diagnostic, [r for m, _ in measures for r in m.needs()], device)
            kept = list(activations.values())
        else:
            _, cache = model.run_with_cache(tokens)
            kept = [v for v in cache.values() if isinstance(v, torch.Tensor)]
    peak = memory_status_kib("VmHWM")
    storages = {tensor.untyped_storage().data_ptr(): tensor.untyped_storage().nbytes() for tensor in kept}
    print(json.dumps({"before_kib": before, "peak_kib": peak, "kept_bytes": sum(storages.values()), "tensors": len(kept)}))


def memory_comparison(repeats: int) -> None:
    results: dict[str, list[dict[str, Any]]] = {"forward": [], "capture": [], "run_with_cache": []}
    for _ in range(repeats):
        for variant in results:
            out = subprocess.run(
                [sys.executable, __file__, "--memory-probe", variant], capture_output=True, text=True, check=True, env=PROBE_ENV
            )
            results[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))

    def extra_mib(variant: str) -> float:
        return statistics.median((r["peak_kib"] - r["before_kib"]) / 1024 for r in results[variant])

    forward = extra_mib("forward")
    print(f"\nmemory on the diagnostic set (median of {repeats} fresh processes each; peak RSS growth during the pass)\n")
    print("| variant | peak RSS growth MiB | over plain forward MiB | kept after the pass MiB | activation tensors kept |")
    print("|---|---|---|---|---|")
    for variant in results:
        kept = results[variant][0]["kept_bytes"] / 2**20
        print(f"| {variant} | {extra_mib(variant):.1f} | {extra_mib(variant) - forward:.1f} | {kept:.2f} | {results[variant][0]['tensors']} |")
    capture_over = extra_mib("capture") - forward
    cache_over = extra_mib("run_with_cache") - forward
    kept_ratio = results["run_with_cache"][0]["kept_bytes"] / results["capture"][0]["kept_bytes"]
    total_ratio = extra_mib("run_with_cache") / extra_mib("capture")
    above = f"{cache_over / capture_over:.0f}x" if capture_over >= 1 else f"{cache_over:.0f} MiB against under 1 MiB (noise)"
    print(f"\nrun_with_cache against capture, above a plain forward pass: {above}; activation bytes kept: "
          f"{kept_ratio:.0f}x; peak of the whole pass, forward included: {total_ratio:.1f}x (target >= 10x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2, help="timed calls per measure")
    parser.add_argument("--run-steps", type=int, default=1000, help="steps of the real run for the measuring share")
    parser.add_argument("--skip-run", action="store_true", help="skip the real run (part 2)")
    parser.add_argument("--only", help="comma-separated measures to time (default: every registered one)")
    parser.add_argument("--skip-memory", action="store_true", help="skip the capture-memory comparison (part 3)")
    parser.add_argument("--memory-repeats", type=int, default=3)
    parser.add_argument("--memory-probe", choices=["forward", "capture", "run_with_cache"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args.memory_probe)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.skip_memory:
        memory_comparison(args.memory_repeats)
    step_seconds, rows, run_spec = time_measures(args.calls, args.only.split(",") if args.only else None)
    print_per_call_table(step_seconds, rows, run_spec)
    if not args.skip_run:
        measuring_share(args.run_steps)


if __name__ == "__main__":
    main()
