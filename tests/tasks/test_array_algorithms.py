"""Maximum subarray and activity selection, checked against brute force over every candidate answer.

Nothing here shares code with the generator: each test decodes the token tensors back to text, parses the
prompt itself, finds the answer by exhaustive search (every subarray / every subset of activities) and
recomputes every feature label from its definition.
"""

from __future__ import annotations

import string
from itertools import combinations, product

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emergence import registry
from emergence.tasks import EOS, NO_LABEL, PAD, TaskInputError, build_task

VALUE_OF = {letter: i - 9 for i, letter in enumerate("ABCDEFGHIJKLMNOPQRS")}  # A = -9, J = 0, S = 9
TIME_OF = {letter: i for i, letter in enumerate(string.ascii_uppercase)}  # A = 0
ACTIVITY_OF = {letter: i for i, letter in enumerate(string.ascii_lowercase)}  # a = activity 0
SUBARRAY_LEVELS = {1: 5, 2: 8, 3: 12}
ACTIVITY_LEVELS = {1: (4, 9), 2: (6, 14), 3: (8, 19)}


def rows(data, split):
    """(prompt, answer, row index) for every example of a split, after checking the padding."""
    for i in range(len(split)):
        text = data.vocab.decode(split.tokens[i])
        prompt_len, answer_len = int(split.prompt_len[i]), int(split.answer_len[i])
        assert all(t == PAD for t in text[prompt_len + answer_len :])
        answer = text[prompt_len : prompt_len + answer_len]
        assert answer[-1] == EOS and EOS not in answer[:-1] and PAD not in text[: prompt_len + answer_len]
        yield text[:prompt_len], answer[:-1], i


def assert_labels(split, name, i, expected):
    """The stored labels of feature ``name`` on row i are ``expected`` (None = NO_LABEL), then NO_LABEL padding."""
    stored = split.features[name][i].tolist()
    want = [NO_LABEL if x is None else x for x in expected]
    assert stored[: len(want)] == want, name
    assert all(x == NO_LABEL for x in stored[len(want) :]), name


# -------------------------------------------------------------------------------------- maximum subarray


def subarray_oracle(a: list[int]) -> tuple[int, int, int, int]:
    """(best sum, start, end, number of spans reaching it): all n(n+1)/2 spans, earliest start then shortest."""
    spans = {(i, j): sum(a[i : j + 1]) for i in range(len(a)) for j in range(i, len(a))}
    best = max(spans.values())
    winners = [span for span, total in spans.items() if total == best]
    start, end = min(winners, key=lambda span: (span[0], span[1] - span[0]))
    return best, start, end, len(winners)


def check_subarray_split(data, split) -> int:
    """Check every example of a split; return how many had several spans reaching the maximum (tie-break used)."""
    ties = 0
    for prompt, answer, i in rows(data, split):
        assert prompt[-1] == "="
        a = [VALUE_OF[t] for t in prompt[:-1]]
        best, start, end, n_winners = subarray_oracle(a)
        ties += n_winners > 1
        assert [VALUE_OF[t] for t in answer] == a[start : end + 1]
        assert sum(VALUE_OF[t] for t in answer) == best
        ks = range(start, end + 1)
        assert_labels(split, "kadane_sum", i, [max(sum(a[s : k + 1]) for s in range(k + 1)) for k in ks] + [None])
        assert_labels(split, "prefix_sum", i, [sum(a[: k + 1]) for k in ks] + [None])
        assert_labels(split, "answer_sum", i, [sum(a[start:k]) for k in ks] + [best])
        assert_labels(split, "best_sum", i, [best] * (end - start + 2))
    return ties


@pytest.mark.parametrize("level", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_subarray_answers_and_labels_match_brute_force(level, seed):
    data = build_task("maximum_subarray", level, {}, 200, 100, 20, seed)
    length = SUBARRAY_LEVELS[level]
    assert data.params == {"length": length}
    assert set(data.train.features) == {"kadane_sum", "prefix_sum", "answer_sum", "best_sum"}
    assert data.chance_exact_match == pytest.approx(2 / (length * (length + 1)))
    assert data.input_space_size == 19**length
    ties = 0
    for split in (data.train, data.test):
        assert all(int(p) == length + 1 for p in split.prompt_len)
        ties += check_subarray_split(data, split)
    assert ties > 0  # the tie-break was exercised, so a wrong one would have been caught
    seen = {t for split in (data.train, data.test) for p, _, _ in rows(data, split) for t in p[:-1]}
    assert seen == set(VALUE_OF)  # every value -9..9 is drawn


def test_subarray_tie_break_earliest_start_then_shortest():
    # 0 1 0 -1 1 (J K J I K): seven spans sum to the maximum 1. The earliest start is index 0, and from there
    # [0, 1], [0, 1, 0] and the whole array all reach 1: the shortest, [0, 1], is the answer.
    task = registry.tasks.get("maximum_subarray")()
    example = task.example((0, 1, 0, -1, 1), {"length": 5})
    assert example.prompt == ["J", "K", "J", "I", "K", "="]
    assert example.answer == ["J", "K", EOS]
    assert subarray_oracle([0, 1, 0, -1, 1]) == (1, 0, 1, 7)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), length=st.integers(1, 12))
def test_subarray_any_length_matches_brute_force(seed, length):
    data = build_task("maximum_subarray", 2, {"length": length}, 12, 6, 2, seed)
    for split in (data.train, data.test):
        check_subarray_split(data, split)


def test_subarray_mixed_levels_share_a_vocabulary_and_stay_correct():
    data = build_task("maximum_subarray", [1, 2, 3], {}, 150, 60, 30, 4)
    assert sorted(set(data.test.level[:30].tolist())) == [1, 2, 3]
    for split in (data.train, data.test):
        check_subarray_split(data, split)
        for prompt, _, i in rows(data, split):
            assert len(prompt) - 1 == SUBARRAY_LEVELS[int(split.level[i])]
    assert len({tuple(build_task("maximum_subarray", lvl, {}, 5, 2, 1, 0).vocab.tokens) for lvl in (1, 2, 3)}) == 1


def test_subarray_small_space_is_enumerated_whole():
    task = registry.tasks.get("maximum_subarray")()
    everything = task.enumerate_inputs({"length": 3})
    assert len(everything) == len(set(everything)) == task.input_space_size({"length": 3}) == 19**3
    # An independent count: the test's own list of every length-2 array is exactly what a full build holds.
    data = build_task("maximum_subarray", 1, {"length": 2}, 300, 61, 10, 5)
    built = [tuple(p[:-1]) for split in (data.train, data.test) for p, _, _ in rows(data, split)]
    assert len(built) == len(set(built)) == 361
    assert set(built) == set(product(VALUE_OF, repeat=2))


def test_subarray_refuses_more_than_the_space_and_bad_lengths():
    with pytest.raises(TaskInputError, match="has only 361 distinct inputs"):
        build_task("maximum_subarray", 1, {"length": 2}, 300, 62, 10, 0)
    for bad in (0, -3, 2.5, "5", True):
        with pytest.raises(TaskInputError) as error:
            build_task("maximum_subarray", 1, {"length": bad}, 10, 5, 2, 0)
        assert error.value.field == "params.length"


# ------------------------------------------------------------------------------------ activity selection


def parse_activities(prompt: list[str]) -> tuple[list[int], list[int]]:
    n = (len(prompt) - 2) // 2
    assert len(prompt) == 2 * n + 2 and prompt[n] == "|" and prompt[-1] == "="
    starts = [TIME_OF[t] for t in prompt[:n]]
    durations = [TIME_OF[t] for t in prompt[n + 1 : 2 * n + 1]]
    assert all(1 <= d <= 9 for d in durations)
    return starts, durations


def compatible(chosen: tuple[int, ...], starts: list[int], finish: list[int]) -> bool:
    # Half-open intervals [start, finish): two are compatible when one ends no later than the other starts.
    return all(finish[i] <= starts[j] or finish[j] <= starts[i] for i, j in combinations(chosen, 2))


def activity_oracle(starts: list[int], durations: list[int]) -> tuple[list[int], int]:
    """(the canonical selection, how many maximum-cardinality compatible sets there are), by brute force.

    Canonical: among the largest compatible sets, the one whose (finish, index) list sorted by finish is
    lexicographically smallest; it is listed in that order.
    """
    n = len(starts)
    finish = [s + d for s, d in zip(starts, durations, strict=True)]
    for size in range(n, 0, -1):
        best = [c for c in combinations(range(n), size) if compatible(c, starts, finish)]
        if best:
            keys = [sorted((finish[i], i) for i in c) for c in best]
            return [i for _, i in min(keys)], len(best)
    raise AssertionError("a single activity is always compatible")


def textbook_greedy(starts: list[int], durations: list[int]) -> list[int]:
    """Earliest finish first, ties by smaller index: the test's own, to confirm it equals the brute-force choice."""
    finish = [s + d for s, d in zip(starts, durations, strict=True)]
    chosen: list[int] = []
    for i in sorted(range(len(starts)), key=lambda i: (finish[i], i)):
        if not chosen or starts[i] >= finish[chosen[-1]]:
            chosen.append(i)
    return chosen


def index_tie_break_used(chosen: list[int], starts: list[int], finish: list[int]) -> bool:
    """Did some unchosen activity fit after the previous choice and finish with the chosen one, losing on index?"""
    for j, c in enumerate(chosen):
        last = finish[chosen[j - 1]] if j else 0
        if any(x > c and finish[x] == finish[c] and starts[x] >= last for x in range(len(starts)) if x not in chosen):
            return True
    return False


def check_activity_split(data, split) -> tuple[int, int]:
    """Check every example; return (examples with several largest sets, examples with an equal-finish tie inside)."""
    several, finish_ties = 0, 0
    for prompt, answer, i in rows(data, split):
        starts, durations = parse_activities(prompt)
        n = len(starts)
        finish = [s + d for s, d in zip(starts, durations, strict=True)]
        chosen = [ACTIVITY_OF[t] for t in answer]
        expected, n_largest = activity_oracle(starts, durations)
        assert chosen == expected
        several += n_largest > 1
        finish_ties += index_tie_break_used(chosen, starts, finish)
        k = len(chosen)
        assert_labels(split, "start", i, [starts[c] for c in chosen] + [None])
        assert_labels(split, "finish", i, [finish[c] for c in chosen] + [None])
        assert_labels(split, "last_finish", i, [0] + [finish[c] for c in chosen])
        for a in range(n):
            assert_labels(split, f"selected/{string.ascii_lowercase[a]}", i, [int(a in chosen[:j]) for j in range(k + 1)])
        for name in split.features:  # a smaller instance in a mixture has no label for the activities it lacks
            if name.startswith("selected/") and ACTIVITY_OF[name.split("/")[1]] >= n:
                assert (split.features[name][i] == NO_LABEL).all()
    return several, finish_ties


@pytest.mark.parametrize("level", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_activity_answers_and_labels_match_brute_force(level, seed):
    data = build_task("activity_selection", level, {}, 200, 100, 20, seed)
    n, max_start = ACTIVITY_LEVELS[level]
    assert data.params == {"n_activities": n, "max_start": max_start}
    assert set(data.train.features) == {"start", "finish", "last_finish"} | {f"selected/{a}" for a in string.ascii_lowercase[:n]}
    assert data.chance_exact_match == pytest.approx(1 / (2**n - 1))
    assert data.input_space_size == ((max_start + 1) * 9) ** n
    several, finish_ties = 0, 0
    seen_starts, seen_durations = set(), set()
    for split in (data.train, data.test):
        for prompt, _, _ in rows(data, split):
            starts, durations = parse_activities(prompt)
            seen_starts.update(starts)
            seen_durations.update(durations)
        s, f = check_activity_split(data, split)
        several, finish_ties = several + s, finish_ties + f
    assert seen_starts == set(range(max_start + 1)) and seen_durations == set(range(1, 10))
    # Both tie-breaks were exercised: several largest sets, and a rejected activity that finished at the same time
    # as a chosen one and would also have fitted (chosen only because of its smaller index).
    assert several > 0 and finish_ties > 0


@settings(max_examples=20, deadline=None)
@given(
    starts=st.lists(st.integers(0, 12), min_size=1, max_size=9).flatmap(
        lambda s: st.tuples(st.just(s), st.lists(st.integers(1, 9), min_size=len(s), max_size=len(s)))
    )
)
def test_greedy_is_the_lexicographically_smallest_largest_set(starts):
    # The oracle's definition and the textbook greedy agree (the claim the brute-force oracle rests on).
    s, d = starts
    assert textbook_greedy(s, d) == activity_oracle(s, d)[0]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 8), max_start=st.integers(0, 25))
def test_activity_any_params_match_brute_force(seed, n, max_start):
    data = build_task("activity_selection", 1, {"n_activities": n, "max_start": max_start}, 12, 6, 2, seed)
    for split in (data.train, data.test):
        check_activity_split(data, split)
        for prompt, _, _ in rows(data, split):
            assert max(parse_activities(prompt)[0]) <= max_start


def test_activity_mixed_levels_share_a_vocabulary_and_stay_correct():
    data = build_task("activity_selection", [1, 2, 3], {}, 150, 60, 30, 4)
    assert sorted(set(data.test.level[:30].tolist())) == [1, 2, 3]
    for split in (data.train, data.test):
        check_activity_split(data, split)
        for prompt, _, i in rows(data, split):
            assert len(parse_activities(prompt)[0]) == ACTIVITY_LEVELS[int(split.level[i])][0]
    assert len({tuple(build_task("activity_selection", lvl, {}, 5, 2, 1, 0).vocab.tokens) for lvl in (1, 2, 3)}) == 1


def test_activity_small_space_is_enumerated_whole():
    task = registry.tasks.get("activity_selection")()
    params = {"n_activities": 2, "max_start": 3}
    everything = task.enumerate_inputs(params)
    assert len(everything) == len(set(everything)) == task.input_space_size(params) == (4 * 9) ** 2
    # An independent count: every prompt the test can write for 2 activities, starts 0-1, is built exactly once.
    data = build_task("activity_selection", 1, {"n_activities": 2, "max_start": 1}, 300, 24, 10, 5)
    built = [tuple(p) for split in (data.train, data.test) for p, _, _ in rows(data, split)]
    every = {(s0, s1, "|", d0, d1, "=") for s0, s1 in product("AB", repeat=2) for d0, d1 in product("BCDEFGHIJ", repeat=2)}
    assert len(built) == len(set(built)) == len(every) == 324
    assert set(built) == every


def test_activity_refuses_more_than_the_space_and_bad_params():
    with pytest.raises(TaskInputError, match="has only 324 distinct inputs"):
        build_task("activity_selection", 1, {"n_activities": 2, "max_start": 1}, 300, 25, 10, 0)
    for field, bad in [("n_activities", 0), ("n_activities", 27), ("n_activities", "4"), ("max_start", -1), ("max_start", 26)]:
        with pytest.raises(TaskInputError) as error:
            build_task("activity_selection", 1, {field: bad}, 10, 5, 2, 0)
        assert error.value.field == f"params.{field}"


def test_activity_vocabulary_grows_only_when_params_demand_it():
    default = build_task("activity_selection", 3, {}, 5, 2, 1, 0).vocab.tokens
    assert build_task("activity_selection", 1, {}, 5, 2, 1, 0).vocab.tokens == default
    grown = build_task("activity_selection", 1, {"n_activities": 10, "max_start": 25}, 5, 2, 1, 0).vocab.tokens
    assert {"i", "j", "Z"} <= set(grown) and not {"i", "j", "Z"} & set(default)


# --------------------------------------------------------------------------------------------- both tasks

TASKS = ["maximum_subarray", "activity_selection"]


@pytest.mark.parametrize("name", TASKS)
@pytest.mark.parametrize("level", [1, 3])
def test_train_and_test_never_overlap_and_diagnostic_is_held_out(name, level):
    data = build_task(name, level, {}, 1500, 400, 100, 9)
    train = {tuple(r.tolist()) for r in data.train.tokens}
    test = [tuple(r.tolist()) for r in data.test.tokens]
    assert len(train) == 1500 and len(set(test)) == 400
    assert not train & set(test)
    assert [tuple(r.tolist()) for r in data.diagnostic.tokens] == test[:100]


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(TASKS), level=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_render_tokenize_decode_round_trip(name, level, seed):
    data = build_task(name, level, {}, 6, 3, 1, seed)
    for split in (data.train, data.test):
        for row in split.tokens:
            assert data.vocab.encode(data.vocab.decode(row)) == row.tolist()


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(TASKS), level=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_same_seed_same_data(name, level, seed):
    first = build_task(name, level, {}, 8, 4, 2, seed)
    second = build_task(name, level, {}, 8, 4, 2, seed)
    for a, b in ((first.train, second.train), (first.test, second.test)):
        assert a.tokens.equal(b.tokens)
        assert a.features.keys() == b.features.keys()
        assert all(np.array_equal(a.features[k], b.features[k]) for k in a.features)
