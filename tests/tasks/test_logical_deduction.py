"""Logical deduction checked by brute force: the clues must pin exactly one order, and it must give the answer."""

from __future__ import annotations

import re
from itertools import permutations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emergence import registry
from emergence.tasks import NO_LABEL, TaskInputError, build_task


def parse(tokens: list[str]) -> tuple[list[str], list[tuple[str, str, str]], int, list[str]]:
    """Split a decoded row into (books, clues, question position 1-based, answer tokens)."""
    colon, equals = tokens.index(":"), tokens.index("=")
    books = tokens[:colon]
    body = tokens[colon + 1 : equals]
    question = int(body[-1])
    clue_tokens = body[:-2]  # drop "? q"
    assert body[-2] == "?"
    clues = [tuple(clue_tokens[k : k + 3]) for k in range(0, len(clue_tokens), 4)]
    separators = clue_tokens[3::4]
    assert all(s == "," for s in separators)
    return books, clues, question, tokens[equals + 1 :]


def satisfies(arrangement: tuple[str, ...], clue: tuple[str, str, str]) -> bool:
    subject, relation, other = clue
    if relation == "<":
        return arrangement.index(subject) < arrangement.index(other)
    assert relation == "@"
    return arrangement.index(subject) == int(other) - 1


@pytest.mark.parametrize("level", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clues_pin_one_order_and_it_answers_the_question(level, seed):
    data = build_task("logical_deduction", level, {}, 150, 60, 10, seed)
    n = {1: 3, 2: 5, 3: 7}[level]
    for split in (data.train, data.test):
        for i in range(len(split)):
            tokens = [t for t in data.vocab.decode(split.tokens[i]) if t != "<PAD>"]
            books, clues, question, answer = parse(tokens)
            assert len(books) == len(set(books)) == n
            solutions = [order for order in permutations(books) if all(satisfies(order, c) for c in clues)]
            assert len(solutions) == 1, (tokens, solutions)
            (order,) = solutions
            assert answer == [order[question - 1], "<EOS>"]
            answer_row = int(split.prompt_len[i])
            assert split.tokens[i, answer_row].item() == data.vocab.index[order[question - 1]]
            for k, book in enumerate(books):
                assert split.features[f"position/{k}"][i].tolist()[:2] == [order.index(book) + 1, NO_LABEL]
            assert split.features["clue_count"][i, 0] == len(clues)


ENGLISH_LEFT = re.compile(r"The (\w+) book is to the left of the (\w+) book\.")
ENGLISH_AT = re.compile(r"The (\w+) book is the (leftmost|rightmost|(\w+) from the left)\.")
ORDINAL = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7}


@pytest.mark.parametrize("n_objects", [3, 5, 7])
def test_english_rendering_states_the_same_puzzle(n_objects):
    task = registry.tasks.get("logical_deduction")()
    params = {"n_objects": n_objects}
    for raw in task.random_inputs(params, np.random.default_rng(n_objects), 40):
        prompt, continuation = task.render_text(raw)
        books = re.findall(r"an? (\w+) book", prompt.split(".")[0])
        assert len(books) == n_objects

        def position(words: str) -> int:
            return 1 if words == "leftmost" else n_objects if words == "rightmost" else ORDINAL[words.split()[0]]

        clues = [(a, "<", b) for a, b in ENGLISH_LEFT.findall(prompt)]
        clues += [(a, "@", str(position(where))) for a, where, _ in ENGLISH_AT.findall(prompt)]
        solutions = [order for order in permutations(books) if all(satisfies(order, c) for c in clues)]
        assert len(solutions) == 1
        asked = re.search(r"Which book is the (leftmost|rightmost|\w+ from the left)\?", prompt)
        assert asked is not None
        assert continuation == f" {solutions[0][position(asked.group(1)) - 1]} book"
        assert prompt.endswith("Answer: The")


def test_puzzles_vary_in_clue_count_and_question():
    data = build_task("logical_deduction", 3, {}, 400, 10, 5, 0)
    assert len(set(data.train.features["clue_count"][:, 0].tolist())) >= 3
    questions = {row[int(pl) - 2].item() for row, pl in zip(data.train.tokens, data.train.prompt_len, strict=True)}
    assert len(questions) == 7


def test_refuses_more_examples_than_it_can_guarantee():
    with pytest.raises(TaskInputError, match="lower bound"):
        build_task("logical_deduction", 1, {"n_objects": 2}, 500, 100, 10, 0)


def test_rejects_an_impossible_object_count():
    with pytest.raises(TaskInputError) as error:
        build_task("logical_deduction", 1, {"n_objects": 9}, 10, 10, 5, 0)
    assert error.value.field == "params.n_objects"


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), level=st.sampled_from([1, 2, 3]))
def test_same_seed_same_puzzles_and_tokens_round_trip(seed, level):
    first = build_task("logical_deduction", level, {}, 6, 3, 1, seed)
    second = build_task("logical_deduction", level, {}, 6, 3, 1, seed)
    assert first.train.tokens.equal(second.train.tokens) and first.test.tokens.equal(second.test.tokens)
    for row in first.train.tokens:
        assert first.vocab.encode(first.vocab.decode(row)) == row.tolist()


def test_train_and_test_never_overlap():
    data = build_task("logical_deduction", 1, {}, 2000, 500, 50, 4)
    train = {tuple(r.tolist()) for r in data.train.tokens}
    assert len(train) == 2000 and not train & {tuple(r.tolist()) for r in data.test.tokens}
