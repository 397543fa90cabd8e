"""A third-party tracker, installed through a real ``.dist-info``, logs a run and then takes part in
``emergence compare`` and ``emergence run --from-run`` with no change to the core: the core asks what a
tracker can do (``RunReader``), never which one it is.

The plugin keeps each run as one JSON file in a folder. Nothing in emergence is patched.
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
import json
from pathlib import Path

from emergence.plugins import RUN_RECORD_FIELDS

SUFFIX = ".jsonstore.json"


class JsonStoreTracker:
    """Someone else's tracker: each run one JSON file in the folder named by tracking_uri."""

    def __init__(self, options, run_dir):
        self.folder = Path(options["tracking_uri"])
        self.record = None

    def _save(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / (self.record["run_key"] + SUFFIX)).write_text(json.dumps(self.record))

    def start(self, run_key, name, group, tags, config):
        path = self.folder / (run_key + SUFFIX)
        self.record = json.loads(path.read_text()) if path.exists() else {
            "run_key": run_key, "config": config, "tags": dict(tags), "params": {}, "metrics": {},
            "tables": {}, "summary": {}, "state": "running",
        }
        self._save()

    def log_params(self, flat):
        self.record["params"].update({k: v for k, v in flat.items()})
        self._save()

    def log_metrics(self, values, step):
        self.record["metrics"].setdefault(str(step), {}).update(values)
        self._save()

    def log_table(self, name, columns, rows, step=None):
        self.record["tables"][name] = {"columns": list(columns), "rows": [list(r) for r in rows]}
        self._save()

    def log_artifact(self, path, name=None):
        pass

    def set_summary(self, summary):
        self.record["summary"].update(summary)
        self._save()

    def finish(self, status):
        self.record["state"] = status
        self._save()

    # -- the RunReader capability ------------------------------------------------------------------

    @classmethod
    def claims(cls, source):
        path = Path(source)
        return path.with_name(path.name + SUFFIX).is_file() or (path.is_dir() and any(path.glob("*" + SUFFIX)))

    @classmethod
    def read_runs(cls, source, experiment=None):
        files = sorted(Path(source).glob("*" + SUFFIX))
        if not files:
            raise LookupError(f"{source}: no runs in this store")
        return [cls._as_record(json.loads(f.read_text())) for f in files]

    @classmethod
    def fetch_resolved_spec(cls, ref, store=None):
        path = Path(ref)
        path = path.with_name(path.name + SUFFIX)
        if not path.is_file():
            raise LookupError(f"{ref}: no such run in the store")
        return json.loads(path.read_text())["config"]

    @staticmethod
    def _as_record(run):
        config, summary = run["config"], run["summary"]
        steps = [v for k, v in summary.items() if k.startswith("emergence_step/")]
        verdicts = []
        for name in ("verdicts", "feature_verdicts"):
            table = run["tables"].get(name)
            if table:
                verdicts += [dict(zip(table["columns"], row)) for row in table["rows"]]
        record = {
            "run_key": run["run_key"], "spec": config["name"], "task": config["task"]["name"],
            "level": config["task"]["level"], "n_layers": config["model"]["n_layers"],
            "d_model": config["model"]["d_model"], "n_params": run["params"].get("run.n_params"),
            "seed": config["seed"], "state": run["state"],
            "emergence_step": steps[0] if steps and steps[0] >= 0 else None,
            "tags": run["tags"], "verdicts": verdicts,
        }
        assert set(record) == set(RUN_RECORD_FIELDS)
        return record
'''


def test_a_third_party_tracker_logs_and_then_joins_compare_and_from_run(tmp_path, tiny_raw):
    site = tmp_path / "site"
    site.mkdir()
    (site / "jsonstore_tracker.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    dist_info = site / "jsonstore_tracker-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: jsonstore-tracker\nVersion: 0.1\n", encoding="utf-8")
    (dist_info / "entry_points.txt").write_text("[emergence.trackers]\njsonstore = jsonstore_tracker:JsonStoreTracker\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200"}

    def emergence(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "emergence.cli", *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)

    store = tmp_path / "store"
    tiny_raw["tracking"] = [{"backend": "jsonstore", "tracking_uri": str(store), "tags": {"team": "plugins"}}]
    tiny_raw["training"]["steps"] = 40
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_raw))
    ran = emergence("run", str(spec), "--quiet")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    (run_file,) = store.glob("*.jsonstore.json")
    run_key = run_file.name.removesuffix(".jsonstore.json")
    assert json.loads(run_file.read_text())["state"] == "completed"

    runs_dir = Path(tiny_raw["execution"]["output_dir"])
    from_dir = emergence("compare", str(runs_dir), "--format", "json")
    from_store = emergence("compare", str(store), "--format", "json")  # claimed by the plugin
    named = emergence("compare", f"jsonstore:{store}", "--format", "json", "--tag", "team=plugins")  # named by the user
    assert from_store.returncode == 0 and named.returncode == 0, from_store.stderr + named.stderr
    (dir_row,), (store_row,) = json.loads(from_dir.stdout), json.loads(from_store.stdout)
    assert json.loads(named.stdout) == [store_row]
    assert store_row["run_key"] == run_key == dir_row["run_key"]
    verdict_columns = [c for c in dir_row if "/" in c]
    assert verdict_columns and {c: store_row[c] for c in verdict_columns} == {c: dir_row[c] for c in verdict_columns}
    assert {k: store_row[k] for k in ("spec", "task", "seed", "n_params", "emergence_step")} == {
        k: dir_row[k] for k in ("spec", "task", "seed", "n_params", "emergence_step")
    }

    again = emergence("run", "--from-run", f"jsonstore:{store / run_key}", "--quiet")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "skipped" in again.stdout and run_key in again.stdout  # the same run: completed, read back

    unknown = emergence("compare", str(tmp_path / "nowhere"))
    assert unknown.returncode == 2 and "jsonstore" in unknown.stderr  # the error names the readers installed
