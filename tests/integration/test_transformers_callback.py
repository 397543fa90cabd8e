"""EmergenceCallback in a real transformers.Trainer: a tiny GPT-NeoX trains with the callback into a real
MLflow SQLite store. With report_to=["mlflow"] the Trainer's own run holds its metrics and ours (one run,
not two); without it the Monitor opens its own run; a train() that raises ends the run as failed and a
rerun reattaches; the shipped example runs in a reduced form."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in these tests may come from the Hub

import mlflow
from emergence_transformers import EmergenceCallback, log_keys, trainer_run_overrides
from mlflow import MlflowClient
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, Trainer, TrainerCallback, TrainingArguments

from emergence.record import read_journal

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "hf_trainer.py"
VOCAB, LENGTH, STEPS = 12, 10, 30
RANKME_L1 = "geometry/rankme/gpt_neox.layers/L1"


@pytest.fixture
def mlflow_store(tmp_path: Path, sqlite_tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This test's own SQLite store as MLflow's tracking URI, its own experiment as the active one, and
    MLflow's process-wide state (the fluent API keeps the URI, the experiment and the active run in module
    globals and environment variables) put back afterwards."""
    from mlflow.tracking import _tracking_service, fluent

    monkeypatch.chdir(tmp_path)  # the MLflowCallback's experiment keeps its artifacts in ./mlruns
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_tracking_uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "hf-trainer")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setattr(_tracking_service.utils, "_tracking_uri", None)
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    yield sqlite_tracking_uri
    while mlflow.active_run() is not None:
        mlflow.end_run()


def counting_rows(n: int, seed: int) -> list[dict[str, list[int]]]:
    """Sequences that count up from a random start (mod VOCAB): something a tiny model learns in 30 steps."""
    starts = torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed))
    rows = []
    for start in starts.tolist():
        ids = [(start + i) % VOCAB for i in range(LENGTH)]
        rows.append({"input_ids": ids, "attention_mask": [1] * LENGTH, "labels": ids})
    return rows


def tiny_gpt_neox() -> GPTNeoXForCausalLM:
    torch.manual_seed(0)
    config = GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=16,
    )  # fmt: skip
    return GPTNeoXForCausalLM(config)


def next_token_accuracy(model: GPTNeoXForCausalLM, rows: list[dict[str, list[int]]]) -> dict[str, float]:
    ids = torch.tensor([row["input_ids"] for row in rows])
    was_training = model.training
    model.eval()
    with torch.no_grad():
        guesses = model(input_ids=ids).logits[:, :-1].argmax(-1)
    model.train(was_training)
    return {"next_token_accuracy": float((guesses == ids[:, 1:]).float().mean())}


def monitor_spec(tmp_path: Path, **changes: object) -> dict:
    spec = {
        "kind": "monitor", "name": "hf-callback", "execution": {"output_dir": str(tmp_path / "runs")},
        "measures": [{"name": "rankme", "sites": ["gpt_neox.layers.*"]}, {"name": "spectral_edge"}],
        "schedule": {"every": 5},
        "analysis": {"emergence": {"metric": "behavior/next_token_accuracy", "chance": 1 / VOCAB}},
    }  # fmt: skip
    return {**spec, **changes}


def callback_for(spec: dict, **options: object) -> tuple[EmergenceCallback, GPTNeoXForCausalLM]:
    model = tiny_gpt_neox()
    held_out = counting_rows(32, 1)
    return EmergenceCallback(spec, behavior=lambda: next_token_accuracy(model, held_out), **options), model


def run_trainer(tmp_path: Path, spec: dict, report_to: list[str], **options: object) -> EmergenceCallback:
    callback, model = callback_for(spec, **options)
    train(tmp_path, callback, model, report_to)
    return callback


def train(tmp_path: Path, callback: EmergenceCallback, model: GPTNeoXForCausalLM, report_to: list[str]) -> None:
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"), max_steps=STEPS, per_device_train_batch_size=16, learning_rate=3e-3,
        logging_steps=5, eval_strategy="steps", eval_steps=10, save_strategy="no", report_to=report_to,
        run_name="tiny-neox", use_cpu=True, disable_tqdm=True, seed=0,
    )  # fmt: skip
    Trainer(model=model, args=args, train_dataset=counting_rows(256, 0), eval_dataset=counting_rows(32, 1), callbacks=[callback]).train()


def assert_journal_in_mlflow(client: MlflowClient, run_id: str, run_dir: Path, keys: list[str]) -> None:
    journal = read_journal(run_dir)
    for key in keys:
        steps, values = journal.series(key)
        assert len(steps), key
        history = {(m.step, m.value) for m in client.get_metric_history(run_id, key)}
        assert set(zip(steps.tolist(), values.tolist(), strict=True)) <= history, key


def assert_verdicts_in_mlflow(client: MlflowClient, run_id: str, run_dir: Path) -> None:
    local = client.download_artifacts(run_id, "tables/verdicts.json", str(run_dir / "downloaded"))
    table = json.loads(Path(local).read_text())
    verdicts = [v for v in json.loads((run_dir / "verdicts.json").read_text()) if v["kind"] == "signal"]
    assert verdicts and [row[table["columns"].index("signal")] for row in table["data"]] == [v["signal"] for v in verdicts]
    assert [row[table["columns"].index("verdict")] for row in table["data"]] == [v["verdict"] for v in verdicts]


def test_the_trainers_mlflow_run_holds_its_metrics_and_ours(tmp_path: Path, mlflow_store: str) -> None:
    callback = run_trainer(tmp_path, monitor_spec(tmp_path), ["mlflow"])  # the spec's default tracking: mlflow
    result = callback.result
    assert result is not None and result.state == "completed"
    run_dir = Path(result.directory)

    client = MlflowClient(mlflow_store)
    (run,) = client.search_runs([client.get_experiment_by_name("hf-trainer").experiment_id])  # one run, not two
    assert (run.info.run_name, run.info.status) == ("tiny-neox", "FINISHED")  # the Trainer's, ended by its owner
    assert result.resolved_spec["tracking"][0]["run_id"] == run.info.run_id
    assert run.data.tags["emergence.run_key"] == result.run_key and run.data.tags["emergence.kind"] == "monitor"
    params = run.data.params
    assert (params["learning_rate"], params["seed"], params["num_hidden_layers"]) == ("0.003", "0", "2")  # the Trainer's
    assert params["emergence.seed"] == "0" and params["emergence.measures.0.name"] == "rankme"  # ours, out of its way
    assert params["emergence.run.n_params"] == str(result.n_params)
    assert not {"measures.0.name", "schedule.every", "run.n_params"} & set(params)

    assert {"loss", "eval_loss", "learning_rate"} <= set(run.data.metrics)  # the Trainer's own
    history = {key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)) for key in ("loss", "train/loss")}
    assert history["loss"] == history["train/loss"] and len(history["loss"]) == STEPS // 5
    assert_journal_in_mlflow(
        client, run.info.run_id, run_dir, [RANKME_L1, "behavior/next_token_accuracy", "train/loss", "eval/loss", "train/lr"]
    )
    steps, _ = read_journal(run_dir).series(RANKME_L1)
    assert steps.tolist() == list(range(0, STEPS + 1, 5))  # step 0 is the untrained model
    assert_verdicts_in_mlflow(client, run.info.run_id, run_dir)
    assert "summary/verdicts/" in " ".join(run.data.metrics)


def test_without_report_to_the_monitor_opens_its_own_run(tmp_path: Path, mlflow_store: str) -> None:
    spec = monitor_spec(tmp_path, tracking=[{"backend": "mlflow", "tracking_uri": mlflow_store, "experiment": "monitor-own"}])
    # A tokenizer's output, right-padded: each example is captured at its last real token.
    padded = {"input_ids": torch.tensor([[1, 2, 3, 0, 0], [4, 5, 6, 7, 8]]), "attention_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])}
    callback = run_trainer(tmp_path, spec, [], diagnostic=padded)
    assert callback.result is not None and callback.result.state == "completed"

    client = MlflowClient(mlflow_store)
    assert client.get_experiment_by_name("hf-trainer") is None  # the Trainer logged nowhere
    (run,) = client.search_runs([client.get_experiment_by_name("monitor-own").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["emergence.run_key"] == callback.result.run_key
    assert run.data.params["measures.0.name"] == "rankme" and "learning_rate" not in run.data.params
    assert_journal_in_mlflow(client, run.info.run_id, Path(callback.result.directory), [RANKME_L1, "train/loss", "eval/loss"])
    assert_verdicts_in_mlflow(client, run.info.run_id, Path(callback.result.directory))


def test_the_trainers_wandb_run_holds_its_metrics_and_ours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb
    from emergence_wandb.records import read_run_folder, run_folders

    for name in ("WANDB_API_KEY", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_LOG_MODEL", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))  # absent
    (tmp_path / "wandb-home").mkdir()
    callback = run_trainer(tmp_path, monitor_spec(tmp_path, tracking=[]), ["wandb"])
    host = wandb.run
    assert host is not None and callback.result is not None and callback.result.state == "completed"
    assert [(e["backend"], e["run_id"]) for e in callback.result.resolved_spec["tracking"]] == [("wandb", host.id)]
    wandb.finish()  # the Trainer leaves its run open; its owner (here, the test) ends it
    wandb.teardown()

    (folder,) = (tmp_path / "wandb-home" / "wandb").glob("*run-*")  # one W&B run, the Trainer's
    assert not (Path(callback.result.directory) / "wandb").exists()
    offline = read_run_folder(folder)
    assert offline.exit_code == 0 and run_folders(folder.parent, host.id) == [folder]
    keys = {key for row in offline.history for key in row}
    assert {"train/loss", "eval/loss", "train/global_step"} <= keys  # the Trainer's own
    assert {f"emergence/{RANKME_L1}", "emergence/behavior/next_token_accuracy", "tables/verdicts"} <= keys  # ours
    assert offline.config["emergence"]["name"] == "hf-callback" and offline.config["learning_rate"] == 3e-3


class RaiseAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201 - the Trainer's signature
        if state.global_step == self.step:
            raise RuntimeError(f"boom at step {state.global_step}")


def test_a_train_that_raises_ends_failed_and_a_rerun_reattaches(tmp_path: Path) -> None:
    spec = monitor_spec(tmp_path, tracking=[])
    first, model = callback_for(spec)
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"), max_steps=12, per_device_train_batch_size=16, save_strategy="no",
        report_to=[], use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    crashing = Trainer(model=model, args=args, train_dataset=counting_rows(64, 0), callbacks=[first, RaiseAt(7)])
    with pytest.raises(RuntimeError, match="boom at step 7"):
        crashing.train()
    run_dir = first.monitor.run_dir
    assert json.loads((run_dir / "status.json").read_text())["state"] == "running"  # no event tells the callback

    # The notebook's next cell: the same spec and run name in a new Trainer take the run over.
    second, model = callback_for(spec)
    Trainer(model=model, args=args, train_dataset=counting_rows(64, 0), callbacks=[second]).train()
    assert first.result is not None and first.result.state == "failed" and "took over the run" in first.result.reason
    assert second.result is not None and second.result.state == "completed"
    assert Path(second.result.directory) == run_dir  # reattached, not a new run
    journal = read_journal(run_dir)
    assert [e["event"] for e in journal.events if e["event"] in ("failed", "resume")] == ["failed", "resume"]
    assert journal.series(RANKME_L1)[0].tolist() == [0, 5, 10, 12]  # the second train() superseded the first


def test_an_uncaught_exception_ends_the_run_and_the_trainers_mlflow_run_as_failed(
    tmp_path: Path, sqlite_tracking_uri: str
) -> None:
    script = tmp_path / "crash.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from pathlib import Path\n"
        "from test_transformers_callback import RaiseAt, callback_for, counting_rows, monitor_spec\n"
        "from transformers import Trainer, TrainingArguments\n"
        f"tmp = Path({str(tmp_path)!r})\n"
        "callback, model = callback_for(monitor_spec(tmp))\n"
        "args = TrainingArguments(output_dir=str(tmp / 'trainer'), max_steps=12, per_device_train_batch_size=16,\n"
        "                         logging_steps=5, save_strategy='no', report_to=['mlflow'], use_cpu=True, disable_tqdm=True)\n"
        "Trainer(model=model, args=args, train_dataset=counting_rows(64, 0), callbacks=[callback, RaiseAt(7)]).train()\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": sqlite_tracking_uri, "MLFLOW_EXPERIMENT_NAME": "crash"}
    crashed = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert crashed.returncode == 1 and "boom at step 7" in crashed.stderr
    (run_dir,) = (tmp_path / "runs" / "hf-callback").iterdir()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "RuntimeError: boom at step 7" in status["reason"]
    client = MlflowClient(sqlite_tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("crash").experiment_id])
    assert run.info.status == "FAILED" and run.data.tags["emergence.run_key"] == run_dir.name
    assert "geometry/rankme/gpt_neox.layers/L1" in run.data.metrics and "loss" in run.data.metrics


def test_the_example_runs_as_shipped(tmp_path: Path, sqlite_tracking_uri: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--steps", "20", "--output-dir", str(tmp_path / "runs"), "--tracking-uri", sqlite_tracking_uri],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout.splitlines()  # the Trainer's own log lines, then the example's summary
    summary = printed[next(i for i, line in enumerate(printed) if line.startswith("completed: ")) :]
    assert "the Trainer's run" in summary[1] and summary[2].lstrip().startswith("geometry/rankme/gpt_neox.layers/L0")
    (run_dir,) = (tmp_path / "runs" / "hf-trainer").iterdir()
    assert (run_dir / "report.html").exists() and (run_dir / "verdicts.json").exists()
    client = MlflowClient(sqlite_tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("hf-trainer").experiment_id])
    assert {"loss", "geometry/rankme/gpt_neox.layers/L1", "behavior/test_exact_match"} <= set(run.data.metrics)
    assert "tables/verdicts.json" in {a.path for a in client.list_artifacts(run.info.run_id, "tables")}


def test_trainer_logs_become_legal_keys() -> None:
    logs = {"loss": 1.5, "grad_norm": torch.tensor(0.5), "learning_rate": 1e-3, "epoch": 2, "eval_loss": 1.0,
            "eval_rouge(1)": 0.25, "test_accuracy": 0.75, "train_runtime": 3.0, "note": "text", "flag": True}  # fmt: skip
    assert log_keys(logs) == {
        "train/loss": 1.5, "train/grad_norm": 0.5, "train/learning_rate": 1e-3, "train/epoch": 2.0, "eval/loss": 1.0,
        "eval/rouge_1_": 0.25, "test/accuracy": 0.75, "train/train_runtime": 3.0,
    }  # fmt: skip


def test_the_mlflow_entry_is_pointed_at_the_trainers_run(tmp_path: Path, mlflow_store: str) -> None:
    args = TrainingArguments(output_dir=str(tmp_path), report_to=["mlflow"], use_cpu=True)
    with mlflow.start_run() as active:
        run_id = active.info.run_id
        wandb_only = monitor_spec(tmp_path, tracking=[{"backend": "wandb", "mode": "disabled"}])
        (override,) = trainer_run_overrides(args, wandb_only, [])
        assert json.loads(override.removeprefix("tracking=")) == [
            {"backend": "wandb", "mode": "disabled"}, {"backend": "mlflow", "run_id": run_id, "tracking_uri": mlflow_store},
        ]  # fmt: skip
        two = [{"backend": "mlflow", "experiment": "a"}, {"backend": "mlflow", "experiment": "b"}]
        (override,) = trainer_run_overrides(args, monitor_spec(tmp_path, tracking=two), [])
        assert [e.get("run_id") for e in json.loads(override.removeprefix("tracking="))] == [run_id, None]
        assert trainer_run_overrides(TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True), wandb_only, []) == []


def test_gradient_measures_and_probes_run_on_the_trainers_model(tmp_path: Path) -> None:
    """With ``loss_fn=causal_lm_loss`` the Fisher rank, the top Hessian eigenvalue and the LLC run inside the
    Trainer, and probes read the labels given as ``features``; the last Fisher rank equals one computed here,
    from one backward pass per example on the trained model."""
    from emergence_transformers import causal_lm_loss
    from transformers import default_data_collator

    from emergence.measures.geometry import rankme

    rows = counting_rows(24, 2)
    diagnostic = default_data_collator(rows)
    measures = [
        {"name": "fisher_rank", "every": 10},
        {"name": "hessian_top", "every": 15, "batch_size": 16, "max_iterations": 6},
        {"name": "llc", "every": 30, "n_examples": 24, "batch_size": 8, "num_chains": 2, "num_draws": 6, "num_burnin_steps": 2},
        {"name": "probe", "every": 10, "sites": ["gpt_neox.layers.*"]},
    ]
    spec = monitor_spec(tmp_path, tracking=[], measures=measures)
    starts = diagnostic["input_ids"][:, 0]
    callback, model = callback_for(spec, diagnostic=diagnostic, loss_fn=causal_lm_loss, features={"start_parity": starts % 2})
    train(tmp_path, callback, model, [])
    assert callback.result is not None and callback.result.state == "completed"
    journal = read_journal(Path(callback.result.directory))
    assert journal.series("gradient/fisher_rank")[0].tolist() == [0, 10, 20, 30]
    assert journal.series("curvature/hessian_top")[0].tolist() == [0, 15, 30]
    assert journal.series("llc/mean")[0].tolist() == [0, 30]
    assert journal.series("probe/start_parity/accuracy")[0].tolist() == [0, 10, 20, 30]
    assert journal.series("curvature/hessian_top")[1][-1] > 0

    model.eval()
    gradients = []
    for i in range(len(rows)):
        model.zero_grad()
        causal_lm_loss(model, {key: value[i : i + 1] for key, value in diagnostic.items()}).sum().backward()
        gradients.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    expected = rankme(torch.stack(gradients).double().numpy())
    assert journal.series("gradient/fisher_rank")[1][-1] == pytest.approx(expected, rel=1e-3)


def test_a_train_resumed_from_a_trainer_checkpoint_ends_with_the_uninterrupted_journal(tmp_path: Path) -> None:
    """A Trainer that stops at step 14 and is resumed from its checkpoint at step 10 (``resume_from_checkpoint``)
    ends with the journal of one that never stopped: the measures' state came back from the checkpoint folder,
    steps 11-14 were measured again and kept once."""

    from transformers import GPT2Config, GPT2LMHeadModel

    def trainer(name: str, steps: int, callbacks: list[TrainerCallback]) -> Trainer:
        # GPT-2, not GPT-NeoX: transformers 5.24 saves GPT-NeoX's output layer as embed_out.weight and, resuming,
        # looks for lm_head.weight, so a resumed GPT-NeoX trains on with a freshly initialised output layer.
        torch.manual_seed(0)  # the same initial weights every time
        config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=16)
        model = GPT2LMHeadModel(config)
        args = TrainingArguments(
            output_dir=str(tmp_path / name), max_steps=steps, per_device_train_batch_size=16, learning_rate=3e-3,
            logging_steps=5, save_strategy="steps", save_steps=10, report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
            data_seed=0,
        )  # fmt: skip
        return Trainer(model=model, args=args, train_dataset=counting_rows(256, 0), callbacks=callbacks)

    spec = monitor_spec(tmp_path, tracking=[], schedule={"every": 3}, measures=[{"name": "rankme", "sites": ["transformer.h.*"]}, {"name": "spectral_edge"}])
    straight = EmergenceCallback(spec, run_name="straight")
    trainer("straight", 20, [straight]).train()

    first = EmergenceCallback(spec, run_name="resumed")
    with pytest.raises(RuntimeError, match="boom at step 14"):
        trainer("resumed", 20, [first, RaiseAt(14)]).train()
    first._abandon("stopped at step 14")  # what the exit hook would do
    again = EmergenceCallback(spec, run_name="resumed")
    trainer("resumed", 20, [again]).train(resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-10"))

    assert straight.result is not None and again.result is not None and again.result.state == "completed"
    expected, got = read_journal(Path(straight.result.directory)), read_journal(Path(again.result.directory))
    assert [s for s, _ in got.values] == [s for s, _ in expected.values]
    for (step, values), (_, reference) in zip(got.values, expected.values, strict=True):
        measured = {k: v for k, v in values.items() if not k.startswith(("cost/", "train/train_"))}
        wanted = {k: v for k, v in reference.items() if not k.startswith(("cost/", "train/train_"))}
        assert measured.keys() == wanted.keys(), step
        for key, value in wanted.items():
            assert measured[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (step, key)
