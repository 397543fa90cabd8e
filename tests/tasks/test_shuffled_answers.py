"""The null control's task: the same inputs, test and diagnostic sets as the real run, with the training
answers permuted across examples of the same level."""

from __future__ import annotations

from collections import Counter

import torch

from emergence.tasks import build_task


def answers(split) -> list[tuple[int, ...]]:
    return [tuple(row[start : start + length].tolist()) for row, start, length in zip(split.tokens, split.prompt_len, split.answer_len, strict=True)]


def prompts(split) -> list[tuple[int, ...]]:
    return [tuple(row[:start].tolist()) for row, start in zip(split.tokens, split.prompt_len, strict=True)]


def test_shuffled_answers_keep_inputs_and_held_out_sets_and_permute_training_answers():
    real = build_task("modular_arithmetic", 1, {"p": 11}, 80, 40, 20, seed=3)
    control = build_task("modular_arithmetic", 1, {"p": 11}, 80, 40, 20, seed=3, shuffle_answers=True)
    assert prompts(control.train) == prompts(real.train)
    assert torch.equal(control.test.tokens, real.test.tokens) and torch.equal(control.diagnostic.tokens, real.diagnostic.tokens)
    assert Counter(answers(control.train)) == Counter(answers(real.train))  # the same answers, ...
    moved = sum(a != b for a, b in zip(answers(control.train), answers(real.train), strict=True))
    assert moved > 60  # ... most of them on another example's input (a random permutation fixes about 1 in p)
    assert control.train.features == {}  # labels of the real answers would describe answers no longer there
    again = build_task("modular_arithmetic", 1, {"p": 11}, 80, 40, 20, seed=3, shuffle_answers=True)
    assert torch.equal(again.train.tokens, control.train.tokens)  # seeded: the control is reproducible


def test_a_mixture_shuffles_within_each_level():
    control = build_task("copy", [1, 2], {}, 60, 30, 10, seed=0, shuffle_answers=True)
    real = build_task("copy", [1, 2], {}, 60, 30, 10, seed=0)
    for level in (1, 2):
        mine = control.train.level == level
        assert torch.equal(control.train.answer_len[mine], real.train.answer_len[mine])  # each level keeps its answer format
        assert Counter(a for a, keep in zip(answers(control.train), mine, strict=True) if keep) == Counter(
            a for a, keep in zip(answers(real.train), mine, strict=True) if keep
        )
