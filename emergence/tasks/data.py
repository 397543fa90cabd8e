"""Turn a task spec and a seed into train / test / diagnostic tensors, with no train-test overlap."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain
from typing import Any

import numpy as np
import torch

from emergence.tasks.base import NO_LABEL, PAD, Example, Split, Task, TaskData
from emergence.tasks.build import distinct_inputs, plan_levels, task_class


def _pack(rows: list[list[int]], width: int, fill: int) -> np.ndarray:
    """Right-pad ragged rows into one array, without a Python loop per row (this is the hot path of a build)."""
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    flat = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
    packed = np.full((len(rows), width), fill, dtype=np.int64)
    packed[np.arange(width)[None, :] < lengths[:, None]] = flat  # a row-major mask fills row by row, in order
    return packed


def tokenize(task: Task, examples: list[Example], levels: list[int], params: dict[str, Any], with_features: bool = True) -> Split:
    lookup = task.vocab(params).index.__getitem__
    sequences = [list(map(lookup, e.prompt + e.answer)) for e in examples]
    tokens = torch.from_numpy(_pack(sequences, max(map(len, sequences)), lookup(PAD)))
    answer_width = max(len(e.answer) for e in examples)
    # The union of names: in a mixture of levels, a 7-node graph has no queue/K but an 11-node one does.
    names = dict.fromkeys(chain.from_iterable(e.features for e in examples)) if with_features else {}
    features = {
        name: _pack([[NO_LABEL if x is None else x for x in e.features.get(name, ())] for e in examples], answer_width, NO_LABEL)
        for name in names
    }
    return Split(
        tokens=tokens,
        prompt_len=torch.tensor([len(e.prompt) for e in examples]),
        answer_len=torch.tensor([len(e.answer) for e in examples]),
        level=torch.tensor(levels),
        features=features,
    )


@contextmanager
def _collector_paused() -> Iterator[None]:
    """A build allocates millions of small lists that never form cycles; the cyclic collector only slows it (about 2x)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def build_task(
    name: str,
    level: int | list[int],
    params: dict[str, Any],
    train_size: int,
    test_size: int,
    diagnostic_size: int,
    seed: int,
    train_features: bool = True,
    shuffle_answers: bool = False,
) -> TaskData:
    """The diagnostic set is the first ``diagnostic_size`` test examples: held out, and the same at every step.

    ``train_features=False`` leaves the training split without feature labels: training never reads them,
    and packing labels (up to a few hundred per example for graph tasks) is most of the cost of a build.
    ``shuffle_answers``: the null control's task (``shuffled_answers``); the inputs, test and diagnostic sets
    are those of the same build without it.
    """
    with _collector_paused():
        return _build(task_class(name)(), level, params, train_size, test_size, diagnostic_size, seed, train_features, shuffle_answers)


def _build(
    task: Task,
    level: int | list[int],
    params: dict[str, Any],
    train_size: int,
    test_size: int,
    diagnostic_size: int,
    seed: int,
    train_features: bool,
    shuffle_answers: bool = False,
) -> TaskData:
    name = task.name
    levels = [level] if isinstance(level, int) else list(level)
    rng = np.random.default_rng([seed, 7_919])  # a task stream of its own, independent of model init
    train_examples: list[Example] = []
    test_examples: list[Example] = []
    train_levels: list[int] = []
    test_levels: list[int] = []
    per_level_params = {}
    for lvl, lvl_params, n_train, n_test in plan_levels(task, level, params, train_size, test_size, diagnostic_size):
        per_level_params[lvl] = lvl_params
        raws = distinct_inputs(task, lvl_params, n_train + n_test, rng)
        train_examples += [task.example(r, lvl_params) for r in raws[:n_train]]
        test_examples += [task.example(r, lvl_params) for r in raws[n_train:]]
        train_levels += [lvl] * n_train
        test_levels += [lvl] * n_test
    first = per_level_params[levels[0]]
    if shuffle_answers:
        train_examples = shuffled_answers(train_examples, train_levels, seed)
        train_features = False  # labels describe the inputs' own answers, which the shuffled examples no longer have
    if len(levels) > 1:
        # Shuffle the test set so the diagnostic prefix holds every level.
        order = rng.permutation(len(test_examples))
        test_examples = [test_examples[i] for i in order]
        test_levels = [test_levels[i] for i in order]
    train = tokenize(task, train_examples, train_levels, first, with_features=train_features)
    test = tokenize(task, test_examples, test_levels, first)
    width = max(train.tokens.shape[1], test.tokens.shape[1])
    train, test = _pad_to(train, width, task.vocab(first).index[PAD]), _pad_to(test, width, task.vocab(first).index[PAD])
    diagnostic = test.subset(torch.arange(diagnostic_size))
    space = sum(task.input_space_size(p) for p in per_level_params.values())
    chance = float(np.mean([task.chance_exact_match(per_level_params[lvl]) for lvl in test_levels]))
    return TaskData(
        name=name,
        vocab=task.vocab(first),
        train=train,
        test=test,
        diagnostic=diagnostic,
        levels=tuple(levels),
        input_space_size=space,
        chance_exact_match=chance,
        params=first if len(levels) == 1 else {f"level_{lvl}": p for lvl, p in per_level_params.items()},
        level_chance={lvl: task.chance_exact_match(p) for lvl, p in per_level_params.items()},
    )


def shuffled_answers(examples: list[Example], levels: list[int], seed: int) -> list[Example]:
    """Each prompt with the answer of another example of the same level, by a seeded permutation: the answers
    keep their distribution (and a level its answer format) but no longer follow from the inputs, so there is
    nothing to learn that generalises to the test set. A generator of its own, so the inputs, the test set and
    the diagnostic set are exactly those of the real run."""
    rng = np.random.default_rng([seed, 7_919, 1])
    order = np.arange(len(examples))
    level_of = np.asarray(levels)
    for level in np.unique(level_of):
        members = np.flatnonzero(level_of == level)
        order[members] = members[rng.permutation(len(members))]
    return [Example(prompt=example.prompt, answer=examples[source].answer, features={}) for example, source in zip(examples, order, strict=True)]


def _pad_to(split: Split, width: int, pad_id: int) -> Split:
    if split.tokens.shape[1] == width:
        return split
    extra = torch.full((len(split), width - split.tokens.shape[1]), pad_id, dtype=torch.long)
    split.tokens = torch.cat([split.tokens, extra], dim=1)
    return split
