"""Array algorithms from the quiet-features study: maximum subarray (Kadane) and greedy activity selection.

Both tasks write numbers as single letters, as the study does, so every value is one token:

- ``maximum_subarray``: values -9..9 are the letters ``A``..``S`` (``A`` = -9, ``J`` = 0, ``S`` = 9).
- ``activity_selection``: times 0..25 are ``A``..``Z`` (``A`` = 0); activities are named by their index
  as a lower-case letter (``a`` = activity 0), so an answer token never looks like a time.
"""

from __future__ import annotations

import string
from itertools import product
from typing import Any, ClassVar

import numpy as np

from emergence import registry
from emergence.tasks.base import EOS, PAD, Example, Vocab, int_param

# ---------------------------------------------------------------------------------------------- shared


# ------------------------------------------------------------------------------------ maximum subarray

MIN_VALUE, MAX_VALUE = -9, 9
VALUE_TOKENS: tuple[str, ...] = tuple(string.ascii_uppercase[: MAX_VALUE - MIN_VALUE + 1])  # A..S
VALUE_TOKEN: dict[int, str] = {v: VALUE_TOKENS[v - MIN_VALUE] for v in range(MIN_VALUE, MAX_VALUE + 1)}


@registry.tasks.register("maximum_subarray")
class MaximumSubarray:
    name: ClassVar[str] = "maximum_subarray"
    description: ClassVar[str] = (
        "x_1..x_n = s<EOS>: values -9..9 as letters A..S (J = 0); s is the maximum-sum contiguous non-empty "
        "subarray's letters (ties: earliest start, then shortest)"
    )
    levels: ClassVar[dict[int, dict[str, Any]]] = {1: {"length": 5}, 2: {"length": 8}, 3: {"length": 12}}
    level_notes: ClassVar[dict[int, str]] = {
        1: "arrays of 5 (19^5 = 2.5M arrays, 15 candidate subarrays): the easiest; answers 1-5 tokens",
        2: "arrays of 8 (36 candidate subarrays): longer running sums to carry; answers 1-8 tokens",
        3: "arrays of 12 (78 candidate subarrays): the hardest; sums up to +-108 and answers up to 12 tokens",
    }
    feature_names: ClassVar[tuple[str, ...]] = ("kadane_sum", "prefix_sum", "answer_sum", "best_sum")
    # Answer token j (j < L, L the answer length without EOS) is the input value x[s + j], s the start of the
    # chosen subarray; "index k" below is that input index k = s + j.
    feature_notes: ClassVar[dict[str, str]] = {
        "kadane_sum": (
            "Kadane's best-sum-ending-here at index k = s + j: max over i <= k of x[i] + ... + x[k] (it includes "
            "x[k], the token being predicted); at the position predicting answer token j; none at EOS"
        ),
        "prefix_sum": "x[0] + ... + x[k], k = s + j, at the position predicting answer token j; none at EOS",
        "answer_sum": (
            "sum of the answer values already written, x[s] + ... + x[s + j - 1] (0 for j = 0), at the position "
            "predicting answer token j; at EOS it equals the maximum"
        ),
        "best_sum": "the maximum subarray sum, at every answer position, EOS included",
    }

    def default_params(self, level: int) -> dict[str, Any]:
        return dict(self.levels[level])

    def _check(self, params: dict[str, Any]) -> int:
        return int_param(params, "length", 1, None)

    def vocab(self, params: dict[str, Any]) -> Vocab:
        # The value alphabet does not depend on the length, so every level shares it as it is.
        return Vocab((*VALUE_TOKENS, "=", EOS, PAD))

    def input_space_size(self, params: dict[str, Any]) -> int:
        return (MAX_VALUE - MIN_VALUE + 1) ** self._check(params)

    def chance_exact_match(self, params: dict[str, Any]) -> float:
        # A guess that knows the answer is a contiguous run of the input and picks one of the n(n+1)/2 (start, end)
        # spans uniformly: the chance of the right span. (A guess over letter strings would be far below this.)
        length = self._check(params)
        return 2.0 / (length * (length + 1))

    def enumerate_inputs(self, params: dict[str, Any]) -> list[tuple[int, ...]]:
        return list(product(range(MIN_VALUE, MAX_VALUE + 1), repeat=self._check(params)))

    def random_inputs(self, params: dict[str, Any], rng: np.random.Generator, n: int) -> list[tuple[int, ...]]:
        length = self._check(params)
        return list(map(tuple, rng.integers(MIN_VALUE, MAX_VALUE + 1, size=(n, length)).tolist()))

    def example(self, raw_input: tuple[int, ...], params: dict[str, Any]) -> Example:
        values = raw_input
        length = len(values)
        prefix: list[int] = []
        kadane: list[int] = []
        total, ending_here = 0, 0
        for k, v in enumerate(values):
            total += v
            prefix.append(total)
            # Best sum of a subarray ending at k: extend the best one ending at k - 1, or start afresh at k.
            ending_here = v if k == 0 or ending_here < 0 else ending_here + v
            kadane.append(ending_here)
        best = max(kadane)
        # Tie-break: the earliest start s with some subarray x[s..e] summing to best, i.e. max_{e >= s} prefix[e]
        # - prefix[s - 1] == best; then the shortest, i.e. the first e >= s with prefix[e] = prefix[s - 1] + best.
        # So a zero-sum run just before the best subarray is included (J K -> J K) and one just after it is not.
        suffix_max = prefix[:]
        for k in range(length - 2, -1, -1):
            if suffix_max[k + 1] > suffix_max[k]:
                suffix_max[k] = suffix_max[k + 1]
        before = 0  # prefix[s - 1], 0 for s = 0
        start = 0
        while suffix_max[start] - before != best:
            before = prefix[start]
            start += 1
        end = prefix.index(before + best, start)
        chosen = values[start : end + 1]
        answer_sum = [0]
        for v in chosen:
            answer_sum.append(answer_sum[-1] + v)
        answer_length = len(chosen) + 1
        return Example(
            prompt=[VALUE_TOKEN[v] for v in values] + ["="],
            answer=[VALUE_TOKEN[v] for v in chosen] + [EOS],
            features={
                "kadane_sum": kadane[start : end + 1] + [None],
                "prefix_sum": prefix[start : end + 1] + [None],
                "answer_sum": answer_sum,
                "best_sum": [best] * answer_length,
            },
        )


# ---------------------------------------------------------------------------------- activity selection

MIN_DURATION, MAX_DURATION = 1, 9
TIME_TOKENS: tuple[str, ...] = tuple(string.ascii_uppercase)  # A = 0 .. Z = 25
ACTIVITY_TOKENS: tuple[str, ...] = tuple(string.ascii_lowercase)  # a = activity 0 .. z = activity 25
LARGEST_LEVEL_ACTIVITIES, LARGEST_LEVEL_MAX_START = 8, 19
SELECTED_NAMES: tuple[str, ...] = tuple(f"selected/{a}" for a in ACTIVITY_TOKENS)


@registry.tasks.register("activity_selection")
class ActivitySelection:
    name: ClassVar[str] = "activity_selection"
    description: ClassVar[str] = (
        "s_1..s_n | d_1..d_n = a..<EOS>: start times and durations 1-9 as letters (A = 0); the answer names (a = "
        "activity 0) the activities chosen by greedy earliest-finish selection, in the order chosen"
    )
    # The start range grows with n so that greedy keeps about half of the activities at every level.
    levels: ClassVar[dict[int, dict[str, Any]]] = {
        1: {"n_activities": 4, "max_start": 9},
        2: {"n_activities": 6, "max_start": 14},
        3: {"n_activities": LARGEST_LEVEL_ACTIVITIES, "max_start": LARGEST_LEVEL_MAX_START},
    }
    level_notes: ClassVar[dict[int, str]] = {
        1: "4 activities, starts 0-9: about 2 chosen on average, the easiest",
        2: "6 activities, starts 0-14: about 2.8 chosen, more overlaps to resolve",
        3: "8 activities, starts 0-19: about 3.6 chosen (up to 8), the hardest",
    }
    feature_names: ClassVar[tuple[str, ...]] = ("start", "finish", "last_finish", "selected")
    feature_notes: ClassVar[dict[str, str]] = {
        "start": "start time of the activity named by answer token j, at the position predicting it; none at EOS",
        "finish": "finish time (start + duration) of the activity named by answer token j, at the position predicting it; none at EOS",
        "last_finish": (
            "finish time of the activity chosen just before answer token j (0 for j = 0), at the position predicting "
            "answer token j; at EOS the finish of the last chosen activity"
        ),
        "selected": (
            "selected/<activity>: 1 if that activity is among answer tokens 0..j-1 (chosen before token j), else 0, "
            "at the position predicting answer token j, EOS included (there: the whole selection)"
        ),
    }

    def default_params(self, level: int) -> dict[str, Any]:
        return dict(self.levels[level])

    def _check(self, params: dict[str, Any]) -> tuple[int, int]:
        n = int_param(params, "n_activities", 1, len(ACTIVITY_TOKENS))
        max_start = int_param(params, "max_start", 0, len(TIME_TOKENS) - 1)
        return n, max_start

    def vocab(self, params: dict[str, Any]) -> Vocab:
        # One vocabulary for every level; explicit params beyond the largest level grow it (up to z and Z).
        n, max_start = self._check(params)
        times = TIME_TOKENS[: max(LARGEST_LEVEL_MAX_START, max_start, MAX_DURATION) + 1]
        names = ACTIVITY_TOKENS[: max(LARGEST_LEVEL_ACTIVITIES, n)]
        return Vocab((*times, *names, "|", "=", EOS, PAD))

    def input_space_size(self, params: dict[str, Any]) -> int:
        n, max_start = self._check(params)
        return ((max_start + 1) * (MAX_DURATION - MIN_DURATION + 1)) ** n

    def chance_exact_match(self, params: dict[str, Any]) -> float:
        # A guess of which activities are chosen, uniform over the 2^n - 1 non-empty subsets, written in the
        # order greedy would list them (by finish time): the order carries no extra freedom.
        n, _ = self._check(params)
        return 1.0 / (2**n - 1)

    def enumerate_inputs(self, params: dict[str, Any]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        n, max_start = self._check(params)
        durations = list(product(range(MIN_DURATION, MAX_DURATION + 1), repeat=n))
        return [(starts, ds) for starts in product(range(max_start + 1), repeat=n) for ds in durations]

    def random_inputs(
        self, params: dict[str, Any], rng: np.random.Generator, n: int
    ) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        n_activities, max_start = self._check(params)
        starts = rng.integers(0, max_start + 1, size=(n, n_activities)).tolist()
        durations = rng.integers(MIN_DURATION, MAX_DURATION + 1, size=(n, n_activities)).tolist()
        return [(tuple(s), tuple(d)) for s, d in zip(starts, durations, strict=True)]

    def example(self, raw_input: tuple[tuple[int, ...], tuple[int, ...]], params: dict[str, Any]) -> Example:
        starts, durations = raw_input
        n = len(starts)
        finish = [s + d for s, d in zip(starts, durations, strict=True)]
        # Activities occupy half-open intervals [start, finish): one may start exactly when the previous ends.
        # Greedy scans by finish time, ties by smaller index; starts are >= 0, so last_finish = 0 admits the first.
        chosen: list[int] = []
        last_finish = 0
        for i in sorted(range(n), key=[f * n + i for i, f in enumerate(finish)].__getitem__):
            if starts[i] >= last_finish:
                chosen.append(i)
                last_finish = finish[i]
        k = len(chosen)
        features: dict[str, list[int | None]] = {
            "start": [starts[i] for i in chosen] + [None],
            "finish": [finish[i] for i in chosen] + [None],
            "last_finish": [0, *(finish[i] for i in chosen)],
        }
        written_at = [k] * n  # the answer index of each activity; k (the EOS slot) for one never chosen
        for j, i in enumerate(chosen):
            written_at[i] = j
        for i, j in enumerate(written_at):
            # Before answer token j', activity i (written at j) is selected iff j < j'.
            features[SELECTED_NAMES[i]] = [0] * (j + 1) + [1] * (k - j)
        return Example(
            prompt=[TIME_TOKENS[s] for s in starts] + ["|"] + [TIME_TOKENS[d] for d in durations] + ["="],
            answer=[ACTIVITY_TOKENS[i] for i in chosen] + [EOS],
            features=features,
        )
