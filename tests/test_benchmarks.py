"""The benchmark scripts still run, and the capture claim they measure still holds (bytes, not seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def probe(variant: str) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "measures.py"), "--memory-probe", variant],
        capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_capture_keeps_at_least_ten_times_less_than_run_with_cache():
    captured, cached = probe("capture"), probe("run_with_cache")
    assert captured["tensors"] == 4  # the addition spec's requests: rankme at 2 sites x 2 layers (the others share them)
    assert cached["kept_bytes"] >= 10 * captured["kept_bytes"] > 0
    assert cached["peak_kib"] > captured["peak_kib"]


def test_the_sweep_benchmark_runs_every_variant_to_completion(tmp_path):
    """A small version of benchmarks/sweep.py: it refuses to report a variant whose runs did not all complete."""
    out = tmp_path / "sweep.json"
    subprocess.run(
        [sys.executable, str(BENCHMARKS / "sweep.py"), "--runs", "2", "--steps", "5", "--skip-ray", "--json", str(out)],
        capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300, cwd=tmp_path,
    )
    results = json.loads(out.read_text())
    assert [r["variant"] for r in results] == ["sequential", "pool", "sequential_1_thread"]
    assert all(r["runs"] == 2 and r["seconds"] > 0 for r in results)
