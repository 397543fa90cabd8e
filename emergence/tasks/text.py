"""A task's examples as text for a pretrained model's tokenizer: what a checkpoint series is scored and
measured on.

Each example becomes ``(prompt, answer)`` text: the task's own English (``render_text``, where it has one,
as ``logical_deduction`` does) or its tokens joined by spaces (``"3 1 4 = "`` and ``" 4 1 3"``), after
``shots`` solved examples separated by blank lines. The prompt and the answer are tokenized apart and
concatenated (a tokenizer that merged across the boundary would blur which tokens are the answer), then
right-padded: the splits have the layout of a trained run's (prompt, then answer tokens, ``prompt_len``,
``answer_len``), in the tokenizer's ids, so capture, behaviour, probes and losses work on them unchanged.
Feature labels follow the answer tokens when the text answer has as many tokens as the task's answer (digits a
tokenizer keeps apart); otherwise only the label read where the first answer token is predicted (the end of
the prompt) is kept, since the task's later answer tokens do not map one to one onto the tokenizer's.

A task with a finite answer set (``text_choices``) is also scored by choice: each candidate continuation's
log-probability after the prompt, the most likely one is the model's answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from emergence.tasks.base import EOS, NO_LABEL, Split, Task, TaskData, TaskInputError
from emergence.tasks.build import distinct_inputs, plan_levels, task_class

SHOT_SEPARATOR = "\n\n"


class Tokenizer(Protocol):
    """What is used of a Hugging Face tokenizer."""

    pad_token_id: int | None
    eos_token_id: int | None

    def __call__(self, text: str, add_special_tokens: bool = True) -> Any: ...


@dataclass
class Choices:
    """For each example of a split: its candidate continuations as token ids, and the index of the right one."""

    candidates: list[list[list[int]]]
    correct: list[int]


@dataclass
class TextTask:
    """The task's splits in a tokenizer's ids, and the answer sets of its test split when it has them."""

    data: TaskData
    test_choices: Choices | None = None
    shots: list[tuple[str, str]] = field(default_factory=list)  # the solved examples before every prompt
    examples: list[tuple[str, str]] = field(default_factory=list)  # the first test examples as text, for a person


def render(task: Task, raw: Any, params: dict[str, Any]) -> tuple[str, str]:
    """(prompt, answer) text of one raw input: the task's own prose, else its tokens joined by spaces."""
    if hasattr(task, "render_text"):
        return task.render_text(raw)
    example = task.example(raw, params)
    return " ".join(example.prompt), " " + " ".join(t for t in example.answer if t != EOS)


def token_ids(tokenizer: Tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def text_split(
    task: Task, raws: list[Any], params: dict[str, Any], level: int, tokenizer: Tokenizer, prefix: str
) -> tuple[Split, list[tuple[str, str]]]:
    """The examples ``raws`` as one right-padded split in the tokenizer's ids, after ``prefix`` (the shots)."""
    texts = [render(task, raw, params) for raw in raws]
    prompts = [token_ids(tokenizer, prefix + prompt, special=True) for prompt, _ in texts]
    answers = [token_ids(tokenizer, answer, special=False) for _, answer in texts]
    if any(not a for a in answers):
        raise TaskInputError("format", f"task {task.name!r}: an answer tokenizes to nothing")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    width = max(len(p) + len(a) for p, a in zip(prompts, answers, strict=True))
    tokens = torch.full((len(raws), width), pad, dtype=torch.long)
    for i, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        tokens[i, : len(prompt) + len(answer)] = torch.tensor(prompt + answer)
    features: dict[str, np.ndarray] = {}
    answer_width = max(map(len, answers))
    for i, raw in enumerate(raws):
        example = task.example(raw, params)
        # Labels follow the answer tokens when the text answer has as many tokens as the task's (digits that
        # the tokenizer keeps apart); otherwise only the first, read at the end of the prompt, is certain.
        aligned = len(answers[i]) == len([t for t in example.answer if t != EOS])
        for name, labels in example.features.items():
            column = features.setdefault(name, np.full((len(raws), answer_width), NO_LABEL, dtype=np.int64))
            for j, label in enumerate(labels[: len(answers[i]) if aligned else 1]):
                column[i, j] = NO_LABEL if label is None else label
    split = Split(
        tokens=tokens,
        prompt_len=torch.tensor([len(p) for p in prompts]),
        answer_len=torch.tensor([len(a) for a in answers]),
        level=torch.full((len(raws),), level, dtype=torch.long),
        features=features,
    )
    return split, texts


def choices_of(task: Task, raws: list[Any], tokenizer: Tokenizer) -> Choices:
    candidates, correct = [], []
    for raw in raws:
        texts, right = task.text_choices(raw)
        candidates.append([token_ids(tokenizer, text, special=False) for text in texts])
        correct.append(right)
    return Choices(candidates, correct)


def build_text_task(
    name: str,
    level: int,
    params: dict[str, Any],
    train_size: int,
    test_size: int,
    diagnostic_size: int,
    seed: int,
    tokenizer: Tokenizer,
    shots: int = 0,
    choices: bool = False,
) -> TextTask:
    """The task as text: train, test and diagnostic splits (the diagnostic set is the first test examples),
    ``shots`` solved examples drawn apart from all of them, the answer sets when ``choices``."""
    if not isinstance(level, int):
        raise TaskInputError("level", "a task rendered as text takes one level")
    task = task_class(name)()
    ((_, level_params, n_train, n_test),) = plan_levels(task, level, params, train_size + shots, test_size, diagnostic_size)
    rng = np.random.default_rng([seed, 7_919])  # the stream build_task draws from: the same examples for a seed
    raws = distinct_inputs(task, level_params, n_train + n_test, rng)
    shot_raws, train_raws, test_raws = raws[:shots], raws[shots:n_train], raws[n_train:]
    solved = [render(task, raw, level_params) for raw in shot_raws]
    prefix = "".join(prompt + answer + SHOT_SEPARATOR for prompt, answer in solved)
    train, _ = text_split(task, train_raws, level_params, level, tokenizer, prefix)
    test, texts = text_split(task, test_raws, level_params, level, tokenizer, prefix)
    data = TaskData(
        name=name,
        vocab=task.vocab(level_params),  # the task's own symbols; the splits hold the tokenizer's ids
        train=train,
        test=test,
        diagnostic=test.subset(torch.arange(diagnostic_size)),
        levels=(level,),
        input_space_size=task.input_space_size(level_params),
        chance_exact_match=task.chance_exact_match(level_params),
        params=level_params,
        level_chance={level: task.chance_exact_match(level_params)},
    )
    return TextTask(data, choices_of(task, test_raws, tokenizer) if choices else None, solved, texts[:3])
