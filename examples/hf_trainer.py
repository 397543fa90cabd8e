"""emergence in a Hugging Face `transformers.Trainer`, logged into the Trainer's own MLflow run.

    python examples/hf_trainer.py [--steps 200] [--output-dir runs] [--tracking-uri sqlite:///mlflow.db] [--report-to none]

A tiny GPT-NeoX (2 layers, d_model 64, built from its config: nothing is downloaded) learns the task
`reverse` of `emergence.tasks` written as text ("3 1 4 1 5 = 5 1 4 1 3 <EOS>"), with a WordLevel tokenizer
made in code; its exact match jumps from 0 to 1 around step 100 (about 20 s on 2 CPU cores).
`EmergenceCallback` measures RankMe of every block's output (module paths `gpt_neox.layers.*`), the
spectral edge of the updates and the Fisher rank of the per-example answer loss (`causal_lm_loss`), with the exact match of the answer on held-out examples as the behaviour
whose rise is the emergence event. With `report_to=["mlflow"]` (the default here) the Trainer's MLflow run
holds its own metrics and ours, and the verdicts (`tables/verdicts.json`); `--report-to none` leaves the
Trainer silent and the Monitor logs to an MLflow run of its own.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here comes from the Hub

import numpy as np
import torch
from emergence_transformers import EmergenceCallback, causal_lm_loss
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
)

import emergence
from emergence import registry
from emergence.tasks.build import distinct_inputs, resolve_params

TASK, LEVEL = "reverse", 1  # 5 symbols from 10, reversed
TRAIN_EXAMPLES, TEST_EXAMPLES = 2000, 64
EXPERIMENT = "hf-trainer"
IGNORE = -100  # the label the loss skips: the prompt is given, only the answer is learnt


def tokenizer_for(vocab: tuple[str, ...]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the task's tokens, split on spaces."""
    word_level = Tokenizer(models.WordLevel({token: i for i, token in enumerate(vocab)}, unk_token="<PAD>"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token="<PAD>", eos_token="<EOS>")


def datasets(task: Any, params: dict[str, Any], tokenizer: PreTrainedTokenizerFast) -> tuple[list[dict], list[dict]]:
    """Distinct examples of the task as text, tokenized; training and held-out ones. The loss is on the answer."""
    raws = distinct_inputs(task, params, TRAIN_EXAMPLES + TEST_EXAMPLES, np.random.default_rng(0))
    rows = []
    for raw in raws:
        example = task.example(raw, params)
        encoded = tokenizer(" ".join(example.prompt + example.answer))
        labels = [IGNORE] * len(example.prompt) + encoded["input_ids"][len(example.prompt) :]
        rows.append({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "labels": labels})
    return rows[TEST_EXAMPLES:], rows[:TEST_EXAMPLES]


def exact_match(model: torch.nn.Module, test: list[dict]) -> dict[str, float]:
    """The share of held-out examples whose every answer token is the model's top guess (teacher-forced)."""
    input_ids = torch.tensor([row["input_ids"] for row in test], device=model.device)
    labels = torch.tensor([row["labels"] for row in test], device=model.device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        guesses = model(input_ids=input_ids).logits[:, :-1].argmax(-1)
    model.train(was_training)
    answer = labels[:, 1:] != IGNORE
    correct = ((guesses == labels[:, 1:]) | ~answer).all(1)
    return {"test_exact_match": float(correct.float().mean())}


def monitor_spec(chance: float, output_dir: str, tracking_uri: str | None) -> dict[str, Any]:
    """The monitor spec: what to measure, when, how to judge it, where to log (the Trainer's MLflow run, when
    it reports to MLflow: the callback points the mlflow entry at it)."""
    return {
        "kind": "monitor",
        "name": "hf-trainer",
        "measures": [
            {"name": "rankme", "sites": ["gpt_neox.layers.*"]},
            {"name": "spectral_edge"},
            {"name": "fisher_rank", "every": 50, "n_examples": 32},  # on causal_lm_loss: one backward pass per example
        ],
        "schedule": {"every": 10, "log_spaced_until": 8},
        "analysis": {"emergence": {"metric": "behavior/test_exact_match", "chance": chance, "threshold": 0.5}},
        "tracking": [{"backend": "mlflow", "tracking_uri": tracking_uri, "experiment": EXPERIMENT}] if tracking_uri else [],
        "execution": {"output_dir": output_dir},
    }


def mlflow_experiment(tracking_uri: str) -> None:
    """The Trainer's MLflowCallback logs into the active experiment: make ours, with its artifacts beside a
    SQLite store (MLflow would put them in ./mlruns of whatever directory the script runs in)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        database = tracking_uri.removeprefix("sqlite:///")
        artifacts = (Path(database).absolute().parent / "mlruns").as_uri() if tracking_uri.startswith("sqlite:///") else None
        mlflow.create_experiment(EXPERIMENT, artifact_location=artifacts, tags={"mlflow.experimentKind": "custom_model_development"})
    mlflow.set_experiment(EXPERIMENT)


def main(steps: int, output_dir: str, tracking_uri: str | None, report_to: list[str]) -> emergence.RunResult:
    torch.manual_seed(0)
    task = registry.tasks.get(TASK)()
    params = resolve_params(task, LEVEL, {})
    tokenizer = tokenizer_for(task.vocab(params).tokens)
    train, test = datasets(task, params, tokenizer)
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
        max_position_embeddings=32, rotary_pct=1.0, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    model = GPTNeoXForCausalLM(config)
    if tracking_uri and "mlflow" in report_to:
        mlflow_experiment(tracking_uri)
    spec = monitor_spec(task.chance_exact_match(params), output_dir, tracking_uri)

    callback = EmergenceCallback(spec, diagnostic=test, behavior=lambda: exact_match(model, test), loss_fn=causal_lm_loss)
    args = TrainingArguments(
        output_dir=str(Path(output_dir) / "hf-trainer-checkpoints"), max_steps=steps, per_device_train_batch_size=64,
        learning_rate=1e-3, weight_decay=0.1, warmup_steps=10, lr_scheduler_type="constant_with_warmup",
        logging_steps=10, eval_strategy="steps", eval_steps=50, save_strategy="no", report_to=report_to, run_name="hf-trainer", use_cpu=True, disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=test, callbacks=[callback])
    trainer.train()

    result = callback.result
    assert result is not None
    print(f"{result.state}: {result.directory}; emergence at step {result.emergence_step}")
    if tracking_uri:
        print(f"MLflow: {mlflow_run(result, report_to)}; see it with `mlflow ui --backend-store-uri {tracking_uri}`")
    for verdict in result.signal_verdicts:
        print(f"  {verdict['signal']:<40} {verdict['verdict']:<13} lead {verdict['lead_steps']}")
    return result


def mlflow_run(result: emergence.RunResult, report_to: list[str]) -> str:
    """Which MLflow run holds the run: the callback wrote the Trainer's run id into the resolved spec."""
    (entry,) = result.resolved_spec["tracking"]
    if "mlflow" in report_to:
        return f"experiment {EXPERIMENT!r}, the Trainer's run {entry['run_id']}"
    return f"experiment {EXPERIMENT!r}, the Monitor's own run (tag emergence.run_key = {result.run_key})"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--output-dir", default="runs")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="an MLflow tracking URI; '' for none")
    parser.add_argument("--report-to", choices=["mlflow", "none"], default="mlflow", help="what the Trainer itself reports to")
    options = parser.parse_args()
    uri = options.tracking_uri or None
    main(options.steps, options.output_dir, uri, ["mlflow"] if options.report_to == "mlflow" and uri else [])
