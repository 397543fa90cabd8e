"""What does walking a checkpoint series cost per checkpoint, and does it hold one model at a time?

A series of ``--checkpoints`` GPT-NeoX checkpoints (``--hidden`` wide, ``--layers`` deep, different random
weights at every step) is saved in Hugging Face format, then walked by ``emergence run`` with the shipped local
series' measures (RankMe, participation ratio, spectral edge with its projection, probes) on ``sort`` as text,
and again with behaviour only. From the journal:
seconds per checkpoint split into loading, behaviour (scoring the test set) and measures (capture and every
measure). Memory: the walk's peak resident memory, and, as its baseline measured the same way in another fresh
process, the peak of loading one checkpoint and scoring it once; their difference against the size of one
model's weights says how many models the walk held at once.

    python benchmarks/series.py [--checkpoints 6] [--hidden 512] [--layers 6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WALK = """
import json, resource, sys
import emergence
from emergence.record import read_journal
spec = json.loads(sys.argv[1])
(result,) = emergence.run(spec, progress=False)
journal = read_journal(result.directory)
rows = [(s, v) for s, v in journal.values]
print(json.dumps({"state": result.state, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "rows": rows}))
"""

ONE = """
import json, resource, sys, torch
from emergence.models.checkpoints import Checkpoint, load_model, load_tokenizer
from pathlib import Path
from emergence.measures.behavior import behavior_values
from emergence.tasks.text import build_text_task
folder = Path(sys.argv[1])
checkpoint = Checkpoint(0, "step0", folder, None)
tokenizer = load_tokenizer(checkpoint)
text = build_text_task("sort", 1, {}, 64, 256, 128, 0, tokenizer)
model = load_model(checkpoint, torch.device("cpu"), "float32")
behavior_values(model, text.data.test, "test", torch.device("cpu"))
print(json.dumps({"peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "model_bytes": sum(p.numel() * p.element_size() for p in model.parameters())}))
"""


def make_series(folder: Path, checkpoints: int, hidden: int, layers: int) -> None:
    """Random GPT-NeoX weights per step (a new seed each: every checkpoint distinct), one tokenizer for all."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import numpy as np
    import torch
    from checkpoint_series import word_tokenizer  # type: ignore[import-not-found]
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from emergence import registry
    from emergence.tasks.build import resolve_params
    from emergence.tasks.text import render

    task = registry.tasks.get("sort")()
    params = resolve_params(task, 1, {})
    tokenizer = word_tokenizer(["".join(render(task, raw, params)) for raw in task.random_inputs(params, np.random.default_rng(0), 2000)])
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=8,
        intermediate_size=4 * hidden, max_position_embeddings=64, rotary_pct=0.25, use_parallel_residual=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    for index in range(checkpoints):
        torch.manual_seed(index)
        step = 0 if index == 0 else 2 ** (index - 1)
        GPTNeoXForCausalLM(config).save_pretrained(folder / f"step{step}")
        tokenizer.save_pretrained(folder / f"step{step}")


def run_json(code: str, argument: str) -> dict:
    """Run ``code`` in a fresh Python (its own peak memory) and read the JSON line it prints last."""
    done = subprocess.run([sys.executable, "-c", code, argument], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def main(checkpoints: int, hidden: int, layers: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        make_series(root / "series", checkpoints, hidden, layers)
        spec = {
            "name": "bench-series", "tracking": [], "execution": {"output_dir": str(root / "runs")},
            "task": {"name": "sort", "level": 1, "format": "text", "train_size": 64, "test_size": 256, "diagnostic_size": 128},
            "model": {"source": "checkpoints", "path": str(root / "series")},
            "measures": [{"name": "rankme"}, {"name": "participation_ratio"},
                         {"name": "spectral_edge", "window": 4, "projection_dim": "auto"},
                         {"name": "probe", "fit_size": 400, "held_out_size": 200}],
        }  # fmt: skip
        walk = run_json(WALK, json.dumps(spec))
        bare = run_json(WALK, json.dumps({**spec, "name": "bench-bare", "measures": []}))
        one = run_json(ONE, str(root / "series" / "step0"))
    assert walk["state"] == bare["state"] == "completed"
    rows = [values for _, values in walk["rows"]]
    load = [v["cost/load"] for v in rows]
    behaviour = [v["cost/behavior"] for v in rows]
    measures = [sum(x for k, x in v.items() if k.startswith("cost/") and k not in ("cost/load", "cost/behavior")) for v in rows]
    model_mib = one["model_bytes"] / 2**20
    walk_mib, one_mib = walk["peak_kib"] / 1024, one["peak_kib"] / 1024
    print(f"{checkpoints} checkpoints of {model_mib:.0f} MiB ({hidden} wide, {layers} layers)")
    print("| per checkpoint | median s | first s |")
    print("|---|---|---|")
    for name, series in (("load + hash", load), ("behaviour", behaviour), ("measures (capture + all)", measures)):
        print(f"| {name} | {statistics.median(series):.2f} | {series[0]:.2f} |")
    for key in sorted({k for v in rows for k in v if k.startswith("cost/") and k not in ("cost/load", "cost/behavior")}):
        print(f"| - {key.removeprefix('cost/')} | {statistics.median(v[key] for v in rows if key in v):.2f} | {rows[0].get(key, 0.0):.2f} |")
    bare_mib = bare["peak_kib"] / 1024
    print(f"peak RSS, baseline: one checkpoint loaded and scored in a fresh process: {one_mib:.0f} MiB")
    for name, peak in (("the walk, behaviour only", bare_mib), ("the walk with the measures", walk_mib)):
        print(f"peak RSS, {name}: {peak:.0f} MiB = baseline + {(peak - one_mib) / model_mib:.2f} x one model's weights")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    options = parser.parse_args()
    main(options.checkpoints, options.hidden, options.layers)
