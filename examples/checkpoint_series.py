"""Make a checkpoint series to walk: a tiny GPT-NeoX, built as Pythia is (rotary on a quarter of each head,
parallel attention and MLP), trained on one of our tasks written as text and saved in Hugging Face format
at steps 0, 1, 2, 4 ... (one folder per step, `OUT/step{N}/`, with a word-level tokenizer beside it).

    python examples/checkpoint_series.py [--out runs/tiny-series] [--task sort] [--steps 0 1 2 4 8 16 32 64 96 ...]
    emergence run specs/series-local.yaml      # walks it: behaviour, geometry, probes, verdicts, integrity

Nothing is downloaded: the model is built from its config and the tokenizer from the task's words.
`--duplicate 224:256` saves step 224's weights again as step 256, the fault public series have been found with
(EleutherAI/pythia issue 205), so the walk has one to find.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast

from emergence import registry
from emergence.tasks.build import distinct_inputs, resolve_params
from emergence.tasks.text import SHOT_SEPARATOR, render

PAD, EOS, UNK = "<PAD>", "<EOS>", "<UNK>"
IGNORE = -100  # labels the loss skips: the prompt is given, only the answer is learnt


def word_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over every whitespace-separated word of ``texts`` (and the blank line between shots)."""
    words = sorted({word for text in texts for word in text.split()})
    vocab = {token: i for i, token in enumerate([PAD, EOS, UNK, *words])}
    model = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    model.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=model, pad_token=PAD, eos_token=EOS, unk_token=UNK)


def training_rows(task: Any, params: dict[str, Any], tokenizer: PreTrainedTokenizerFast, raws: list[Any]) -> list[dict[str, list[int]]]:
    rows = []
    for raw in raws:
        prompt, answer = render(task, raw, params)
        prompt_ids = tokenizer(prompt)["input_ids"]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append({"input_ids": prompt_ids + answer_ids, "labels": [IGNORE] * len(prompt_ids) + answer_ids})
    return rows


def batch(rows: list[dict[str, list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), IGNORE)
    for i, row in enumerate(rows):
        ids[i, : len(row["input_ids"])] = torch.tensor(row["input_ids"])
        labels[i, : len(row["labels"])] = torch.tensor(row["labels"])
    return ids, labels


def make_series(
    out: Path, task_name: str = "sort", level: int = 1, steps: tuple[int, ...] = (0, 1, 2, 4, 8, 16, 32, 64, 96, 128, 160, 192, 224, 256),
    seed: int = 0, lr: float = 3e-3, batch_size: int = 64, n_train: int = 2000, duplicate: tuple[int, int] | None = None,
) -> list[Path]:
    """Train and save the series; returns the checkpoint folders, in step order."""
    if duplicate is not None and not (duplicate[0] in steps and duplicate[1] in steps and duplicate[0] < duplicate[1]):
        raise ValueError(f"--duplicate {duplicate[0]}:{duplicate[1]}: both must be saved steps, the first earlier; steps are {sorted(steps)}")
    torch.manual_seed(seed)
    task = registry.tasks.get(task_name)()
    params = resolve_params(task, level, {})
    # Every example a spec on this task could draw (its seeds differ), for the tokenizer's vocabulary.
    vocabulary_raws = distinct_inputs(task, params, min(task.input_space_size(params), 4000), np.random.default_rng(seed + 1))
    texts = ["".join(render(task, raw, params)) for raw in vocabulary_raws]
    tokenizer = word_tokenizer(texts + [SHOT_SEPARATOR])
    rows = training_rows(task, params, tokenizer, distinct_inputs(task, params, n_train, np.random.default_rng(seed + 2)))
    width = max(len(r["input_ids"]) for r in rows)
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
        max_position_embeddings=max(2 * width, 64), rotary_pct=0.25, use_parallel_residual=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    model = GPTNeoXForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    wanted = sorted(set(steps))
    for step in range(max(wanted) + 1):
        if step in wanted:
            folder = out / f"step{step}"
            if duplicate is not None and step == duplicate[1]:
                shutil.copytree(out / f"step{duplicate[0]}", folder, dirs_exist_ok=True)  # another step's weights
            else:
                model.save_pretrained(folder)
                tokenizer.save_pretrained(folder)
            saved.append(folder)
        if step == max(wanted):
            break
        order = torch.randint(0, len(rows), (batch_size,), generator=generator)
        ids, labels = batch([rows[i] for i in order], tokenizer.pad_token_id)
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return saved


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/tiny-series")
    parser.add_argument("--task", default="sort")
    parser.add_argument("--level", type=int, default=1)
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 1, 2, 4, 8, 16, 32, 64, 96, 128, 160, 192, 224, 256])
    parser.add_argument("--duplicate", help="A:B saves step A's weights again as step B")
    options = parser.parse_args()
    pair = tuple(int(x) for x in options.duplicate.split(":")) if options.duplicate else None
    folders = make_series(Path(options.out), options.task, options.level, tuple(options.steps), duplicate=pair)  # type: ignore[arg-type]
    print(f"{len(folders)} checkpoints in {options.out}: {', '.join(f.name for f in folders)}")
