"""What does the exact training Jacobian of the reference setting cost, next to one ordinary training run?
And how close does the sketch come to it, for what fraction of the cost?

The shipped ``specs/jacobian-digits.yaml`` (a 64-64-10 MLP, 4,810 parameters, 625 SGD steps), in one
process, in this order:

- ``ordinary``: one ordinary training run (``torch.optim.SGD``, ``loss.backward()``), the baseline; median of
  ``--repeats``;
- ``exact``: J by forward-mode passes of ``chunk_size`` tangents through the unrolled loop, then its SVD in
  float64; peak resident memory of the process after it (``ru_maxrss``: the whole process, so an upper
  bound on what J needs);
- ``sketch``: randomized SVD of rank ``--rank`` (+ 10 oversampling) with each ``--power-iterations``; the
  largest relative error of its top ``--rank`` singular values against the exact ones.

    python benchmarks/jacobian.py [--steps 625] [--repeats 3] [--chunk-size 1203] [--rank 100] [--power-iterations 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from emergence.spec import resolve
from emergence.studies.jacobian import UnrolledTraining, exact_svd, sketch_svd
from emergence.studies.jacobian_problem import build_problem, ordinary_training

SPEC = Path(__file__).resolve().parents[1] / "specs" / "jacobian-digits.yaml"


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=None, help="shrink the run (default: the spec's 625)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=None, help="default: the spec's")
    parser.add_argument("--rank", type=int, default=100)
    parser.add_argument("--oversample", type=int, default=10)
    parser.add_argument("--power-iterations", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    overrides = ["tracking=[]"] + ([f"training.steps={args.steps}"] if args.steps else [])
    spec = resolve(SPEC, overrides)[0].spec
    chunk_size = args.chunk_size or spec.jacobian.chunk_size
    problem = build_problem(spec)
    print(
        f"{problem.n_params:,} parameters, {spec.training.steps} steps, {torch.get_num_threads()} torch threads"
    )

    ordinary = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        theta_ordinary = ordinary_training(problem, spec)
        ordinary.append(time.perf_counter() - started)
    baseline = statistics.median(ordinary)

    unrolled = UnrolledTraining(problem.step_loss, problem.layout, problem.schedule)
    started = time.perf_counter()
    exact = exact_svd(unrolled, problem.theta0, chunk_size)
    exact_seconds = time.perf_counter() - started
    exact_peak = peak_gib()
    bitwise = bool(torch.equal(exact.theta_final, theta_ordinary))

    rows = [
        {"variant": "ordinary training", "seconds": baseline, "x ordinary": 1.0},
        {
            "variant": f"exact J (chunks of {chunk_size}) + SVD",
            "seconds": exact_seconds,
            "x ordinary": exact_seconds / baseline,
            "jvp seconds": exact.seconds["jvps"],
            "svd seconds": exact.seconds["svd"],
            "peak GiB": exact_peak,
            "theta_T bit for bit": bitwise,
            "sigma_max": float(exact.singular_values[0]),
        },
    ]
    top = exact.singular_values[: args.rank]
    for q in args.power_iterations:
        started = time.perf_counter()
        sketch = sketch_svd(unrolled, problem.theta0, args.rank, args.oversample, q, chunk_size, seed=0)
        seconds = time.perf_counter() - started
        error = np.abs(sketch.singular_values - top) / top
        rows.append(
            {
                "variant": f"sketch rank {args.rank}+{args.oversample}, {q} power iterations",
                "seconds": seconds,
                "x ordinary": seconds / baseline,
                "x exact": seconds / exact_seconds,
                "max rel. error top": float(error.max()),
                "top-10 max rel. error": float(error[:10].max()),
                "within 1%": int(np.sum(error <= 0.01)),
            }
        )
        del sketch
    rows.append({"variant": "peak resident memory of the process", "peak GiB": peak_gib()})

    for row in rows:
        print(" | ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in row.items()))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
