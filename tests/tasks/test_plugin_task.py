"""A third-party task found through the ``emergence.tasks`` entry point group, as an installed package would be.

The plugin lives in a temporary directory with a real ``.dist-info`` (what pip writes), so discovery goes
through importlib.metadata exactly as for a published distribution; nothing in emergence is patched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

PLUGIN = '''
from typing import Any, ClassVar

import numpy as np

from emergence.tasks.base import EOS, PAD, Example, Vocab


class CountOnes:
    """Our stand-in for someone else's task: how many ones in a bit string."""

    name: ClassVar[str] = "count_ones"
    description: ClassVar[str] = "bits = number of ones"
    levels: ClassVar[dict[int, dict[str, Any]]] = {1: {"n_bits": 4}, 2: {"n_bits": 6}, 3: {"n_bits": 8}}
    level_notes: ClassVar[dict[int, str]] = {1: "4 bits", 2: "6 bits", 3: "8 bits"}
    feature_names: ClassVar[tuple[str, ...]] = ("first_bit",)
    feature_notes: ClassVar[dict[str, str]] = {"first_bit": "the first bit, at the answer"}

    def default_params(self, level: int) -> dict[str, Any]:
        return dict(self.levels[level])

    def vocab(self, params: dict[str, Any]) -> Vocab:
        return Vocab(("0", "1", "2", "3", "4", "5", "6", "7", "8", "=", EOS, PAD))

    def input_space_size(self, params: dict[str, Any]) -> int:
        return 2 ** params["n_bits"]

    def chance_exact_match(self, params: dict[str, Any]) -> float:
        return 1 / (params["n_bits"] + 1)

    def enumerate_inputs(self, params: dict[str, Any]) -> list[int]:
        return list(range(2 ** params["n_bits"]))

    def random_inputs(self, params: dict[str, Any], rng: np.random.Generator, n: int) -> list[int]:
        return rng.integers(0, 2 ** params["n_bits"], size=n).tolist()

    def example(self, raw: int, params: dict[str, Any]) -> Example:
        bits = [(raw >> i) & 1 for i in range(params["n_bits"])]
        return Example([str(b) for b in bits] + ["="], [str(sum(bits)), EOS], {"first_bit": [bits[0], None]})
'''


def install_plugin(site: Path) -> None:
    (site / "count_ones_task.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    dist_info = site / "count_ones_task-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: count-ones-task\nVersion: 0.1\n", encoding="utf-8")
    (dist_info / "entry_points.txt").write_text("[emergence.tasks]\ncount_ones = count_ones_task:CountOnes\n", encoding="utf-8")


def emergence(args: list[str], site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "emergence.cli", *args], capture_output=True, text=True, env=env, timeout=120)


def test_a_plugin_task_is_listed_sampled_and_built(tmp_path):
    install_plugin(tmp_path)
    listed = emergence(["ls", "tasks"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "count_ones" in listed.stdout and "bits = number of ones" in listed.stdout

    sampled = emergence(["sample", "count_ones", "--level", "2", "--n", "5", "--json"], tmp_path)
    assert sampled.returncode == 0, sampled.stderr
    for line in sampled.stdout.splitlines():
        example = json.loads(line)
        bits = [int(b) for b in example["prompt"][:-1]]
        assert len(bits) == 6 and example["answer"] == [str(sum(bits)), "<EOS>"]
        assert example["features"]["first_bit"] == [bits[0], None]

    built = subprocess.run(
        [sys.executable, "-c", "from emergence.tasks import build_task; d = build_task('count_ones', 3, {}, 200, 56, 10, 0); "
         "print(d.input_space_size, len(d.train), d.vocab.decode(d.test.tokens[0]))"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=120,
    )
    assert built.returncode == 0, built.stderr
    assert built.stdout.startswith("256 200 ")
