"""What does `emergence` cost on top of a bare PyTorch training loop?

Three variants on the same model, task, data order and number of steps, in one process:

- ``bare``: a plain PyTorch loop written here (forward, answer loss, backward, clip, AdamW step);
- ``measures off``: ``emergence`` with ``measures: []`` and behaviour measured only at the first and
  last step (journal, checkpoints and schedule machinery all still run);
- ``default measures``: ``emergence`` with the shipped addition spec's measures and schedule.

Each variant runs ``--repeats`` times, interleaved, and we report the median of the training-phase
wall time (step 1 to the last step; task and model set-up excluded). The machines are shared and noisy,
so only ratios measured in the same run mean anything.

    python benchmarks/overhead.py [--steps 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from emergence.models import build_model
from emergence.runner import run_one
from emergence.spec import resolve
from emergence.tasks import build_task
from emergence.train.loop import BatchOrder, answer_loss

SPEC = Path(__file__).resolve().parents[1] / "specs" / "addition.yaml"


def bare_loop(steps: int, spec, attach=None) -> float:
    """The same training with nothing but PyTorch; returns seconds from step 1 to the last step.

    ``attach(model, data, optimizer)``, if given, returns what to call after each step with the step number
    (``benchmarks/monitor.py`` puts an ``emergence.Monitor`` there)."""
    t = spec.task
    data = build_task(t.name, t.level, t.params, t.train_size, t.test_size, t.diagnostic_size, spec.seed)
    cpu = torch.device("cpu")
    model = build_model(spec.model, len(data.vocab), data.seq_len, spec.seed, cpu)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=spec.training.optimizer.lr, weight_decay=spec.training.optimizer.weight_decay,
        betas=spec.training.optimizer.betas,
    )
    order = BatchOrder(len(data.train), spec.training.batch_size, spec.seed)
    tokens, mask = data.train.tokens, data.train.target_mask
    after_step = attach(model, data, optimizer) if attach is not None else None
    started = time.perf_counter()
    for step in range(steps):
        index = order.indices(step)
        loss = answer_loss(model(tokens[index]), tokens[index], mask[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec.training.grad_clip)
        optimizer.step()
        if after_step is not None:
            after_step(step + 1)
    return time.perf_counter() - started


def emergence_loop(steps: int, overrides: list[str], out: Path) -> tuple[float, float]:
    """Seconds from step 1 to the last step of a real run, and the seconds its measures reported."""
    (run_spec,) = resolve(str(SPEC), [f"training.steps={steps}", "tracking=[]", f"execution.output_dir={out}", *overrides])
    marks: dict[str, float] = {}

    def clock(result, values) -> None:  # noqa: ANN001
        marks.setdefault("first", time.perf_counter())
        marks["last"] = time.perf_counter()

    outcome = run_one(run_spec, progress=clock)
    assert outcome.state == "completed", outcome
    from emergence.record import read_journal

    measured = sum(v for _, values in read_journal(outcome.run_dir).values[1:] for k, v in values.items() if k.startswith("cost/"))
    return marks["last"] - marks["first"], measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    (base,) = resolve(str(SPEC), ["tracking=[]"])
    times: dict[str, list[float]] = {"bare": [], "measures off": [], "default measures": []}
    measuring: list[float] = []
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            times["bare"].append(bare_loop(args.steps, base.spec))
            off, _ = emergence_loop(args.steps, ["measures=[]", f"schedule.every={args.steps}", "schedule.log_spaced_until=0"], Path(scratch) / f"off{repeat}")
            times["measures off"].append(off)
            on, spent = emergence_loop(args.steps, [], Path(scratch) / f"on{repeat}")
            times["default measures"].append(on)
            measuring.append(spent)
    bare = statistics.median(times["bare"])
    print(f"{args.steps} steps, median of {args.repeats}, torch threads {torch.get_num_threads()}")
    print("| variant | seconds (median) | steps/s | throughput vs bare |")
    print("|---|---|---|---|")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"| {name} | {median:.1f} | {args.steps / median:.2f} | {bare / median:.3f} |")
    off, on = statistics.median(times["measures off"]), statistics.median(times["default measures"])
    print(f"\ndefault measures add {100 * (on - off) / off:.1f}% wall time over measures off "
          f"(measure and behaviour time logged as cost/*: {statistics.median(measuring):.1f} s per run)")


if __name__ == "__main__":
    main()
