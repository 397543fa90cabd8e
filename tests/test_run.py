"""Whole runs of the tiny spec without a tracker: run directory, resume, divergence, determinism."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from emergence.record import read_journal
from emergence.rundir import read_status, run_directory
from emergence.runner import run_one
from emergence.spec import resolve
from emergence.train import latest_checkpoint, load_checkpoint


def tiny_run(write_spec, raw, overrides=()):
    (run_spec,) = resolve(str(write_spec(raw)), list(overrides))
    return run_spec


def test_run_directory_holds_everything(tiny_raw, write_spec):
    run_spec = tiny_run(write_spec, tiny_raw)
    outcome = run_one(run_spec)
    run_dir = run_directory(run_spec)
    assert outcome.state == "completed" and run_dir.name == run_spec.run_key
    for name in ("spec.resolved.yaml", "journal.jsonl", "verdicts.json", "analysis.json", "report.html", "status.json", "behavior.png"):
        assert (run_dir / name).exists(), name
    assert read_status(run_dir)["state"] == "completed"
    assert yaml.safe_load((run_dir / "spec.resolved.yaml").read_text())["run_key"] == run_spec.run_key
    journal = read_journal(run_dir)
    steps = [s for s, _ in journal.values]
    assert steps == [0, 1, 2, 4, 8, 10, 20, 30, 40, 50, 60]
    assert "geometry/rankme/resid_pre/L1" in journal.values[-1][1]
    assert "behavior/test/exact_match" in journal.values[0][1]
    verdicts = json.loads((run_dir / "verdicts.json").read_text())
    assert {v["signal"] for v in verdicts} >= {"geometry/rankme/resid_post/L0", "geometry/stable_rank/resid_post/L1"}
    assert latest_checkpoint(run_dir / "checkpoints")[0] == 60
    # a second run of the same spec is recognised as done, not repeated
    again = run_one(run_spec)
    assert again.state == "skipped"
    assert [s for s, _ in read_journal(run_dir).values] == steps


def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(tiny_raw, write_spec, tmp_path):
    # The spectral edge remembers its last updates: its state must travel in the checkpoint.
    tiny_raw["measures"].append({"name": "spectral_edge", "window": 3})
    straight = tiny_run(write_spec, tiny_raw, ["execution.output_dir=" + str(tmp_path / "straight")])
    run_one(straight)

    interrupted = tiny_run(write_spec, tiny_raw, ["execution.output_dir=" + str(tmp_path / "interrupted")])

    def stop_at_35(result, values):
        if result.step == 35:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_one(interrupted, progress=stop_at_35)
    run_dir = run_directory(interrupted)
    assert read_status(run_dir)["state"] == "failed"
    assert "interrupted at step 35" in read_status(run_dir)["reason"]
    outcome = run_one(interrupted)
    assert outcome.state == "completed"
    resumed_values = read_journal(run_dir).values
    straight_values = read_journal(run_directory(straight)).values
    assert [s for s, _ in resumed_values] == [s for s, _ in straight_values]
    assert "spectral/gap_ratio" in straight_values[-1][1]
    for (_, a), (_, b) in zip(resumed_values, straight_values, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if not key.startswith("cost/"):
                assert a[key] == b[key], key  # bit for bit on CPU
    assert any(e["event"] == "resume" and e["step"] == 20 for e in read_journal(run_dir).events)
    final_a = load_checkpoint(latest_checkpoint(run_dir / "checkpoints")[1], torch.device("cpu"))["model"]
    final_b = load_checkpoint(latest_checkpoint(run_directory(straight) / "checkpoints")[1], torch.device("cpu"))["model"]
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


def test_diverging_loss_fails_the_run_with_reason_and_keeps_checkpoints(tiny_raw, write_spec):
    run_spec = tiny_run(
        write_spec,
        tiny_raw,
        ["training.optimizer={name: sgd, lr: 1.0e+12}", "training.grad_clip=null", "training.checkpoint_every=1"],
    )
    outcome = run_one(run_spec)
    run_dir = run_directory(run_spec)
    status = read_status(run_dir)
    assert outcome.state == "failed" and status["state"] == "failed"
    assert "non-finite training loss" in status["reason"] and "at step" in status["reason"]
    assert latest_checkpoint(run_dir / "checkpoints") is not None
    assert (run_dir / "report.html").exists()


def test_a_mixture_of_levels_is_measured_and_judged_per_level(tiny_raw, write_spec):
    tiny_raw["task"] = {"name": "modular_arithmetic", "level": [1, 2], "train_size": 300, "test_size": 120, "diagnostic_size": 40}
    tiny_raw["training"]["steps"] = 20
    run_spec = tiny_run(write_spec, tiny_raw)
    outcome = run_one(run_spec)
    assert outcome.state == "completed", outcome.reason
    journal = read_journal(run_directory(run_spec))
    last = journal.values[-1][1]
    for level in (1, 2):
        assert 0.0 <= last[f"behavior/test/exact_match/level_{level}"] <= 1.0
        assert f"behavior/test/loss/level_{level}" in last
    # the overall exact match is the mean over the test set, whose two halves are the two levels
    halves = (last["behavior/test/exact_match/level_1"] + last["behavior/test/exact_match/level_2"]) / 2
    assert last["behavior/test/exact_match"] == pytest.approx(halves)
    analysis = json.loads((run_directory(run_spec) / "analysis.json").read_text())
    chances = {e["metric"]: e["chance"] for e in analysis["events"]}
    assert chances["behavior/test/exact_match/level_1"] == pytest.approx(1 / 23)
    assert chances["behavior/test/exact_match/level_2"] == pytest.approx(1 / 59)


def test_llc_in_a_run_logs_its_numbers_and_its_sgld_trace(tiny_raw, write_spec):
    tiny_raw["training"]["steps"] = 20
    tiny_raw["measures"] = [{"name": "llc", "every": 10, "n_examples": 64, "batch_size": 32, "num_chains": 2,
                             "num_draws": 8, "num_burnin_steps": 4}]
    run_spec = tiny_run(write_spec, tiny_raw)
    assert run_one(run_spec).state == "completed"
    journal = read_journal(run_directory(run_spec))
    llc_steps = [step for step, values in journal.values if "llc/mean" in values]
    assert llc_steps == [0, 10, 20]
    traces = [t for t in journal.tables if t["table"] == "llc_trace"]
    assert [t["step"] for t in traces] == llc_steps
    assert traces[0]["columns"] == ["chain", "sgld_step", "loss", "baseline", "burnin"]
    assert len(traces[0]["rows"]) == 2 * (8 + 4)
    assert sum(row[4] for row in traces[0]["rows"]) == 2 * 4  # the burn-in rows are marked


def test_a_run_directory_held_by_another_process_is_not_run_twice(tiny_raw, write_spec, monkeypatch):
    """A second sweep over a run that another process is still writing waits, then reports it unfinished."""
    import fcntl

    import emergence.rundir

    monkeypatch.setattr(emergence.rundir, "LOCK_WAIT_SECONDS", 0.5)
    (run_spec,) = resolve(str(write_spec(tiny_raw)))
    run_dir = run_directory(run_spec)
    run_dir.mkdir(parents=True)
    with (run_dir / ".lock").open("w") as other:
        fcntl.flock(other, fcntl.LOCK_EX)  # an flock on its own open file conflicts even within one process
        held = run_one(run_spec)
    assert held.state == "failed" and "running in another process" in (held.reason or "")
    assert not (run_dir / "journal.jsonl").exists()  # nothing was written into the other process's run
    assert run_one(run_spec).state == "completed"  # once it lets go, the run goes ahead
