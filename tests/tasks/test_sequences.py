"""Sequence tasks checked against Python built-ins: slicing, sorted(), int() comparison, sum() % 2 and Counter.

Every test decodes the built token tensors back to text and parses the prompt itself; nothing here calls the
generator's helpers, so a wrong answer or label in the generator cannot be reproduced by the oracle.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from itertools import product
from math import prod

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emergence import registry
from emergence.tasks import EOS, NO_LABEL, PAD, TaskInputError, build_task

TASKS = ("copy", "reverse", "sort", "compare", "parity", "majority_of_majorities")
SEEDS = (0, 1, 2)
LEVELS = (1, 2, 3)
SYMBOL_LENGTH = {1: 5, 2: 10, 3: 20}
N_DIGITS = {1: 4, 2: 8, 3: 16}
N_BITS = {1: 10, 2: 12, 3: 14}
GROUPS = {1: (3, 5), 2: (5, 5), 3: (7, 7)}  # (n_groups, group_size)


def decoded_rows(data) -> Iterator[tuple[object, int, list[str], list[str]]]:
    """(split, row, prompt, answer) for every train and test example; checks the padding on the way."""
    for split in (data.train, data.test):
        for i in range(len(split)):
            text = data.vocab.decode(split.tokens[i])
            start, length = int(split.prompt_len[i]), int(split.answer_len[i])
            assert set(text[start + length :]) <= {PAD}
            assert PAD not in text[: start + length]
            yield split, i, text[:start], text[start : start + length]


def labels(split, name: str, i: int) -> list[int]:
    return split.features[name][i].tolist()


def answer_only(values: list[int], width: int) -> list[int]:
    """Labels for a one-token answer (then EOS), padded to the split's answer width."""
    return values + [NO_LABEL] * (width - len(values))


# --- copy / reverse / sort --------------------------------------------------------------------------------------------


def expected_symbol_task(task: str, x: list[int]) -> tuple[list[int], list[int]]:
    """The answer and the source index of each answer token, from built-ins alone."""
    if task == "copy":
        return list(x), list(range(len(x)))
    if task == "reverse":
        return x[::-1], list(range(len(x)))[::-1]
    # Stable: equal symbols keep their input order, so the key breaks ties by index.
    order = sorted(range(len(x)), key=lambda k: (x[k], k))
    return sorted(x), order


def check_symbol_split(data, task: str, length: int, n_symbols: int) -> None:
    expected_names = {"source_position"} | ({"count_smaller"} if task == "sort" else set())
    for split in (data.train, data.test):
        assert set(split.features) == expected_names
        assert all(v.shape == (len(split), length + 1) for v in split.features.values())
    for split, i, prompt, answer in decoded_rows(data):
        assert len(prompt) == length + 1 and prompt[-1] == "="
        x = [int(t) for t in prompt[:-1]]
        assert all(0 <= v < n_symbols for v in x)
        assert len(answer) == length + 1 and answer[-1] == EOS
        expected, source = expected_symbol_task(task, x)
        assert [int(t) for t in answer[:-1]] == expected
        assert labels(split, "source_position", i) == source + [NO_LABEL]
        if task == "sort":
            smaller = [sum(1 for v in x if v < y) for y in expected]
            assert labels(split, "count_smaller", i) == smaller + [NO_LABEL]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("task", ["copy", "reverse", "sort"])
def test_symbol_tasks_match_slicing_and_sorted(task, level, seed):
    data = build_task(task, level, {}, 200, 100, 50, seed)
    assert data.params == {"length": SYMBOL_LENGTH[level], "n_symbols": 10}
    check_symbol_split(data, task, SYMBOL_LENGTH[level], 10)


@pytest.mark.parametrize("task", ["copy", "reverse", "sort"])
def test_more_symbols_than_the_levels_grow_the_vocabulary_and_sort_numerically(task):
    # With 12 symbols "10" < "2" as strings but not as numbers: a lexicographic sort would fail here.
    data = build_task(task, 1, {"length": 8, "n_symbols": 12}, 300, 50, 10, 4)
    assert {"10", "11"} <= set(data.vocab.tokens)
    check_symbol_split(data, task, 8, 12)


def test_sort_ties_go_to_the_leftmost_unused_position():
    # Two symbols over 6 places: nearly every input has runs of equal symbols, so the tie-break is exercised.
    data = build_task("sort", 1, {"length": 6, "n_symbols": 2}, 50, 14, 5, 0)
    check_symbol_split(data, "sort", 6, 2)
    for split, i, prompt, _ in decoded_rows(data):
        source = labels(split, "source_position", i)[:6]
        for j in range(5):
            if prompt[source[j]] == prompt[source[j + 1]]:
                assert source[j] < source[j + 1]


# --- compare ------------------------------------------------------------------------------------------------------------


def check_compare_split(data, n_digits: int) -> list[tuple[str, int]]:
    """Checks every example; returns (relation, first difference) per example for distribution checks."""
    seen = []
    for split in (data.train, data.test):
        names = {"first_difference"} | {f"prefix_equal/{i}" for i in range(n_digits)}
        assert set(split.features) == names
    for split, i, prompt, answer in decoded_rows(data):
        assert len(prompt) == 2 * n_digits + 2 and prompt[n_digits] == "?" and prompt[-1] == "="
        sa, sb = "".join(prompt[:n_digits]), "".join(prompt[n_digits + 1 : -1])
        assert sa.isdigit() and sb.isdigit() and len(sa) == len(sb) == n_digits
        a, b = int(sa), int(sb)
        relation = "<" if a < b else "=" if a == b else ">"
        assert answer == [relation, EOS]
        first = len(os.path.commonprefix([sa, sb]))
        assert labels(split, "first_difference", i) == answer_only([first], 2)
        for k in range(n_digits):
            assert labels(split, f"prefix_equal/{k}", i) == answer_only([int(sa[: k + 1] == sb[: k + 1])], 2)
        seen.append((relation, first))
    return seen


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("level", LEVELS)
def test_compare_matches_integer_comparison(level, seed):
    data = build_task("compare", level, {}, 200, 100, 50, seed)
    assert data.params == {"n_digits": N_DIGITS[level]}
    assert data.chance_exact_match == pytest.approx(1 / 3)
    check_compare_split(data, N_DIGITS[level])


def test_compare_draws_long_shared_prefixes():
    # Uniform pairs of 16-digit numbers would almost never be equal or share 8 leading digits.
    n_digits = 16
    seen = check_compare_split(build_task("compare", 3, {}, 1500, 500, 10, 5), n_digits)
    relations = Counter(r for r, _ in seen)
    assert relations["="] >= 0.02 * len(seen)
    assert relations["<"] >= 0.3 * len(seen) and relations[">"] >= 0.3 * len(seen)
    assert sum(first >= n_digits // 2 for _, first in seen) >= 0.3 * len(seen)
    # Every place can be the deciding one.
    assert {first for _, first in seen} == set(range(n_digits + 1))


# --- parity and majority of majorities -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("level", LEVELS)
def test_parity_matches_sum_mod_2(level, seed):
    n_bits = N_BITS[level]
    data = build_task("parity", level, {}, 200, 100, 50, seed)
    assert data.params == {"n_bits": n_bits}
    assert data.chance_exact_match == 0.5
    for split in (data.train, data.test):
        assert set(split.features) == {f"prefix_parity/{i}" for i in range(n_bits)}
    answers = Counter()
    for split, i, prompt, answer in decoded_rows(data):
        assert len(prompt) == n_bits + 1 and prompt[-1] == "="
        bits = [int(t) for t in prompt[:-1]]
        assert set(bits) <= {0, 1}
        assert answer == [str(sum(bits) % 2), EOS]
        answers[answer[0]] += 1
        for k in range(n_bits):
            assert labels(split, f"prefix_parity/{k}", i) == [sum(bits[: k + 1]) % 2, NO_LABEL]
    assert answers["0"] > 50 and answers["1"] > 50


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("level", LEVELS)
def test_majority_of_majorities_matches_counter(level, seed):
    n_groups, size = GROUPS[level]
    data = build_task("majority_of_majorities", level, {}, 200, 100, 50, seed)
    assert data.params == {"n_groups": n_groups, "group_size": size}
    assert data.chance_exact_match == 0.5
    for split in (data.train, data.test):
        names = {f"{family}/{g}" for family in ("group_majority", "group_ones") for g in range(n_groups)}
        assert set(split.features) == names
    for split, i, prompt, answer in decoded_rows(data):
        assert len(prompt) == n_groups * size + 1 and prompt[-1] == "="
        bits = prompt[:-1]
        assert set(bits) <= {"0", "1"}
        groups = [bits[g * size : (g + 1) * size] for g in range(n_groups)]
        majorities = [Counter(group).most_common(1)[0][0] for group in groups]
        assert answer == [Counter(majorities).most_common(1)[0][0], EOS]
        for g, group in enumerate(groups):
            assert labels(split, f"group_ones/{g}", i) == [Counter(group)["1"], NO_LABEL]
            assert labels(split, f"group_majority/{g}", i) == [int(majorities[g]), NO_LABEL]


# --- the whole input space, refusals, bad params -------------------------------------------------------------------------

# Small explicit params (every one goes through enumerate_inputs) and the input space counted by brute force here.
SMALL = {
    "copy": ({"length": 3, "n_symbols": 3}, ["".join(p) for p in product("012", repeat=3)]),
    "reverse": ({"length": 3, "n_symbols": 4}, ["".join(p) for p in product("0123", repeat=3)]),
    "sort": ({"length": 4, "n_symbols": 3}, ["".join(p) for p in product("012", repeat=4)]),
    "compare": (
        {"n_digits": 2},
        [f"{a:02d}?{b:02d}" for a in range(100) for b in range(100)],
    ),
    "parity": ({"n_bits": 5}, [format(v, "05b") for v in range(32)]),
    "majority_of_majorities": ({"n_groups": 3, "group_size": 3}, [format(v, "09b") for v in range(512)]),
}


@pytest.mark.parametrize("task", TASKS)
def test_small_space_is_enumerated_whole_and_counted_exactly(task):
    params, everything = SMALL[task]
    size = len(everything)
    task_object = registry.tasks.get(task)()
    resolved = {**task_object.default_params(1), **params}
    enumerated = task_object.enumerate_inputs(resolved)
    assert len(enumerated) == len(set(enumerated)) == task_object.input_space_size(resolved) == size
    data = build_task(task, 1, params, size - size // 5, size // 5, 3, 1)
    assert data.input_space_size == size
    prompts = ["".join(prompt[:-1]) for _, _, prompt, _ in decoded_rows(data)]
    assert sorted(prompts) == sorted(everything)


def test_sort_chance_is_one_over_the_number_of_sorted_answers():
    params, everything = SMALL["sort"]
    distinct_answers = {"".join(sorted(x)) for x in everything}
    data = build_task("sort", 1, params, 10, 5, 1, 0)
    assert data.chance_exact_match == pytest.approx(1 / len(distinct_answers))
    # The level presets: C(n + 9, n) sorted answers of n symbols out of 10, counted here as combinations.
    data = build_task("sort", 1, {}, 10, 5, 1, 0)
    assert data.chance_exact_match == pytest.approx(prod(range(1, 10)) / prod(range(6, 15)))


@pytest.mark.parametrize("task", ["copy", "reverse"])
def test_copy_and_reverse_chance_is_one_over_all_sequences(task):
    assert build_task(task, 2, {}, 10, 5, 1, 0).chance_exact_match == pytest.approx(10.0**-10)
    assert build_task(
        task, 1, {"length": 3, "n_symbols": 7}, 10, 5, 1, 0
    ).chance_exact_match == pytest.approx(7**-3)


@pytest.mark.parametrize(
    ("task", "params", "space"),
    [
        ("copy", {"length": 2, "n_symbols": 3}, 9),
        ("sort", {"length": 3, "n_symbols": 2}, 8),
        ("compare", {"n_digits": 1}, 100),
        ("parity", {"n_bits": 4}, 16),
        ("majority_of_majorities", {"n_groups": 1, "group_size": 3}, 8),
    ],
)
def test_refuses_more_examples_than_the_input_space(task, params, space):
    with pytest.raises(TaskInputError, match=f"has only {space} distinct inputs") as error:
        build_task(task, 1, params, space, 1, 1, 0)
    assert error.value.field == "train_size"
    build_task(task, 1, params, space - 1, 1, 1, 0)  # exactly the whole space is fine


@pytest.mark.parametrize(
    ("task", "params", "field"),
    [
        ("copy", {"length": 0}, "params.length"),
        ("reverse", {"length": 2.5}, "params.length"),
        ("sort", {"n_symbols": 1}, "params.n_symbols"),
        ("sort", {"length": True}, "params.length"),
        ("compare", {"n_digits": 0}, "params.n_digits"),
        ("compare", {"n_digits": "8"}, "params.n_digits"),
        ("parity", {"n_bits": -3}, "params.n_bits"),
        ("majority_of_majorities", {"group_size": 4}, "params.group_size"),
        ("majority_of_majorities", {"n_groups": 2}, "params.n_groups"),
        ("parity", {"bits": 3}, "params"),
    ],
)
def test_bad_params_name_the_field(task, params, field):
    with pytest.raises(TaskInputError) as error:
        build_task(task, 1, params, 10, 5, 1, 0)
    assert error.value.field == field


@pytest.mark.parametrize("task", TASKS)
def test_train_and_test_never_overlap_and_diagnostic_is_held_out(task):
    # 800 of parity's 1,024 level-1 inputs: a large share, so a sampler that repeated inputs would be caught.
    data = build_task(task, 1, {}, 600, 200, 100, 3)
    train = {tuple(row.tolist()) for row in data.train.tokens}
    test = [tuple(row.tolist()) for row in data.test.tokens]
    assert len(train) == 600 and len(set(test)) == 200
    assert not train & set(test)
    assert [tuple(r.tolist()) for r in data.diagnostic.tokens] == test[:100]


@pytest.mark.parametrize("task", TASKS)
def test_a_mixture_of_levels_shares_one_vocabulary(task):
    data = build_task(task, [1, 3], {}, 100, 40, 20, 0)
    assert set(data.test.level.tolist()) == {1, 3}
    assert set(data.diagnostic.level.tolist()) == {1, 3}
    for _, _, prompt, answer in decoded_rows(data):
        assert prompt[-1] == "=" and answer[-1] == EOS


# --- properties ------------------------------------------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(task=st.sampled_from(TASKS), level=st.sampled_from(LEVELS), seed=st.integers(0, 10_000))
def test_render_tokenize_decode_round_trip(task, level, seed):
    data = build_task(task, level, {}, 6, 3, 1, seed)
    for split in (data.train, data.test):
        for row in split.tokens:
            text = data.vocab.decode(row)
            assert data.vocab.encode(text) == row.tolist()


@settings(max_examples=20, deadline=None)
@given(task=st.sampled_from(TASKS), level=st.sampled_from(LEVELS), seed=st.integers(0, 10_000))
def test_same_seed_same_data(task, level, seed):
    first = build_task(task, level, {}, 8, 4, 2, seed)
    second = build_task(task, level, {}, 8, 4, 2, seed)
    for a, b in ((first.train, second.train), (first.test, second.test)):
        assert a.tokens.equal(b.tokens)
        assert a.features.keys() == b.features.keys()
        assert all(np.array_equal(a.features[k], b.features[k]) for k in a.features)
    assert not first.train.tokens.equal(build_task(task, level, {}, 8, 4, 2, seed + 1).train.tokens)
