"""A third-party measure found through the ``emergence.measures`` entry point group and run inside a real run.

As for tasks, the plugin lives in a temporary directory with a real ``.dist-info``, so discovery goes
through importlib.metadata; nothing in emergence is patched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

PLUGIN = '''
from typing import ClassVar

from emergence.measures.base import Measure, MeasureContext, MeasureOptions


class WeightNormOptions(MeasureOptions):
    squared: bool = False


class WeightNorm(Measure):
    """Someone else's measure: the global parameter norm."""

    name: ClassVar[str] = "weight_norm"
    cost: ClassVar[str] = "cheap"
    default_every: ClassVar[int | None] = 20
    Options: ClassVar[type[MeasureOptions]] = WeightNormOptions

    def compute(self, context: MeasureContext) -> dict[str, float]:
        total = sum(float((p.detach() ** 2).sum()) for p in context.model.parameters())
        return {"plugin/weight_norm": total if self.options.squared else total ** 0.5}
'''


def test_a_plugin_measure_is_listed_validated_and_run(tmp_path, tiny_raw):
    site = tmp_path / "site"
    site.mkdir()
    (site / "weight_norm_measure.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    dist_info = site / "weight_norm_measure-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: weight-norm-measure\nVersion: 0.1\n", encoding="utf-8")
    (dist_info / "entry_points.txt").write_text("[emergence.measures]\nweight_norm = weight_norm_measure:WeightNorm\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200"}

    def emergence(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "emergence.cli", *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)

    listed = emergence("ls", "measures")
    assert listed.returncode == 0 and "weight_norm" in listed.stdout, listed.stderr

    tiny_raw["measures"] = [{"name": "weight_norm", "squared": "yes please"}]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tiny_raw))
    rejected = emergence("validate", str(bad))
    assert rejected.returncode == 2 and "measures.0.squared" in rejected.stderr + rejected.stdout

    tiny_raw["measures"] = [{"name": "weight_norm"}]
    tiny_raw["training"]["steps"] = 40
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(tiny_raw))
    ran = emergence("run", str(good), "--quiet")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    (journal,) = Path(tiny_raw["execution"]["output_dir"]).glob("*/*/journal.jsonl")
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    # value lines only: the verdict table names the signal too, with no step
    steps = [record["step"] for record in records if "plugin/weight_norm" in record.get("values", {})]
    assert steps == [0, 20, 40]  # the plugin's own default cadence, not the schedule's every 10
