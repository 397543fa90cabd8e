"""Sequence tasks: copy, reverse, sort, compare, parity (geometric anatomy); majority of majorities (quiet features).

Every task here writes its input left to right, then ``=``, then the answer and ``<EOS>``. Raw inputs are tuples of
small Python ints (symbols, digits or bits), so a raw input is hashable and rendering it needs no lookups beyond a
precomputed token table.
"""

from __future__ import annotations

from functools import cache
from itertools import product
from math import comb
from typing import Any, ClassVar

import numpy as np

from emergence import registry
from emergence.tasks.base import EOS, PAD, Example, TaskInputError, Vocab, int_param

# Upper bounds on explicit params: far beyond anything a small model learns, low enough that a typo (length 10**6)
# fails at once instead of allocating gigabytes.
MAX_LENGTH = 512
MAX_SYMBOLS = 1_000
MAX_DIGITS = 512
MAX_BITS = 4_096

# The token of symbol (or digit, or bit) i is str(i); one table so example() never calls str() per token.
SYMBOL_TOKENS: tuple[str, ...] = tuple(str(i) for i in range(MAX_SYMBOLS))


@cache
def _component_names(family: str, n: int) -> tuple[str, ...]:
    """``family/0`` ... ``family/{n-1}``, formatted once per (family, n) rather than once per example."""
    return tuple(f"{family}/{i}" for i in range(n))


# ---------------------------------------------------------------------------------------------------------------------
# copy / reverse / sort: n symbols from an alphabet of k
# ---------------------------------------------------------------------------------------------------------------------

# All three levels use 10 symbols, so one vocabulary serves a mixture of levels; only the length changes.
SYMBOL_LEVELS: dict[int, dict[str, Any]] = {
    1: {"length": 5, "n_symbols": 10},
    2: {"length": 10, "n_symbols": 10},
    3: {"length": 20, "n_symbols": 10},
}
LARGEST_LEVEL_SYMBOLS = 10


class _SymbolSequence:
    """Shared machinery of copy, reverse and sort: the input is ``length`` symbols 0..n_symbols-1, uniformly."""

    levels: ClassVar[dict[int, dict[str, Any]]] = SYMBOL_LEVELS

    def default_params(self, level: int) -> dict[str, Any]:
        return dict(self.levels[level])

    def _check(self, params: dict[str, Any]) -> tuple[int, int]:
        length = int_param(params, "length", 1, MAX_LENGTH)
        n_symbols = int_param(params, "n_symbols", 2, MAX_SYMBOLS)
        return length, n_symbols

    def vocab(self, params: dict[str, Any]) -> Vocab:
        # Built for the largest level; grows only when an explicit n_symbols asks for more symbols.
        _, n_symbols = self._check(params)
        return Vocab(SYMBOL_TOKENS[: max(LARGEST_LEVEL_SYMBOLS, n_symbols)] + ("=", EOS, PAD))

    def input_space_size(self, params: dict[str, Any]) -> int:
        length, n_symbols = self._check(params)
        return n_symbols**length

    def enumerate_inputs(self, params: dict[str, Any]) -> list[tuple[int, ...]]:
        length, n_symbols = self._check(params)
        return list(product(range(n_symbols), repeat=length))

    def random_inputs(
        self, params: dict[str, Any], rng: np.random.Generator, n: int
    ) -> list[tuple[int, ...]]:
        length, n_symbols = self._check(params)
        return list(map(tuple, rng.integers(0, n_symbols, size=(n, length)).tolist()))


@registry.tasks.register("copy")
class Copy(_SymbolSequence):
    name: ClassVar[str] = "copy"
    description: ClassVar[str] = "x1 ... xn = x1 ... xn <EOS>: copy n symbols (integers 0..k-1) in order"
    level_notes: ClassVar[dict[int, str]] = {
        1: "5 symbols from 10 (10^5 inputs): easy (reverse, the same shape, is learnt in ~100 steps)",
        2: "10 symbols from 10: the same fixed-offset attention over twice the positions; harder",
        3: "20 symbols from 10: 41-token sequences, the hardest; exact match needs all 20 tokens right",
    }
    feature_names: ClassVar[tuple[str, ...]] = ("source_position",)
    feature_notes: ClassVar[dict[str, str]] = {
        "source_position": "index j of the input symbol that answer token j copies, at the position predicting it; "
        "none at EOS",
    }

    def chance_exact_match(self, params: dict[str, Any]) -> float:
        # A uniform guess over all k^n answer sequences.
        length, n_symbols = self._check(params)
        return float(n_symbols) ** -length

    def example(self, raw_input: tuple[int, ...], params: dict[str, Any]) -> Example:
        length = len(raw_input)
        tokens = [SYMBOL_TOKENS[s] for s in raw_input]
        return Example(
            prompt=[*tokens, "="],
            answer=[*tokens, EOS],
            features={"source_position": [*range(length), None]},
        )


@registry.tasks.register("reverse")
class Reverse(_SymbolSequence):
    name: ClassVar[str] = "reverse"
    description: ClassVar[str] = "x1 ... xn = xn ... x1 <EOS>: write n symbols (integers 0..k-1) backwards"
    level_notes: ClassVar[dict[int, str]] = {
        1: "5 symbols from 10 (10^5 inputs): easy; 2-layer d64, batch 256: exact match 1.0 by step 100",
        2: "10 symbols from 10: the source moves back one place per step, over twice the span; harder",
        3: "20 symbols from 10: the attention offset (2j+1) varies over 40 positions; the hardest",
    }
    feature_names: ClassVar[tuple[str, ...]] = ("source_position",)
    feature_notes: ClassVar[dict[str, str]] = {
        "source_position": "index n-1-j of the input symbol that answer token j copies, at the position predicting "
        "it; none at EOS",
    }

    def chance_exact_match(self, params: dict[str, Any]) -> float:
        # A uniform guess over all k^n answer sequences.
        length, n_symbols = self._check(params)
        return float(n_symbols) ** -length

    def example(self, raw_input: tuple[int, ...], params: dict[str, Any]) -> Example:
        length = len(raw_input)
        tokens = [SYMBOL_TOKENS[s] for s in raw_input]
        return Example(
            prompt=[*tokens, "="],
            answer=[*tokens[::-1], EOS],
            features={"source_position": [*range(length - 1, -1, -1), None]},
        )


@registry.tasks.register("sort")
class Sort(_SymbolSequence):
    name: ClassVar[str] = "sort"
    description: ClassVar[str] = (
        "x1 ... xn = the n symbols (integers 0..k-1) in ascending numeric order <EOS>"
    )
    level_notes: ClassVar[dict[int, str]] = {
        1: "5 symbols from 10 (10^5 inputs, 2,002 possible answers): easy; 2-layer d64, batch 256: exact match 1.0 "
        "by step 100",
        2: "10 symbols from 10: repeated symbols are common, counts matter; harder",
        3: "20 symbols from 10: every symbol repeats about twice; the model must count to place each one; the hardest",
    }
    feature_names: ClassVar[tuple[str, ...]] = ("source_position", "count_smaller")
    feature_notes: ClassVar[dict[str, str]] = {
        "source_position": "index of the input symbol that answer token j is, for a stable sort (equal symbols keep "
        "their input order: ties go to the leftmost unused one), at the position predicting token j; none at EOS",
        "count_smaller": "how many input symbols are strictly smaller than answer token j (where its run of equal "
        "symbols starts), at the position predicting token j; none at EOS",
    }

    def chance_exact_match(self, params: dict[str, Any]) -> float:
        # A uniform guess over the sorted sequences, i.e. the multisets of n symbols from k: C(n+k-1, n).
        length, n_symbols = self._check(params)
        return 1.0 / comb(length + n_symbols - 1, length)

    def example(self, raw_input: tuple[int, ...], params: dict[str, Any]) -> Example:
        # A counting sort: bucket positions by symbol (in input order, which makes it stable), then read the buckets.
        buckets: dict[int, list[int]] = {}
        for position, symbol in enumerate(raw_input):
            buckets.setdefault(symbol, []).append(position)
        answer: list[str] = []
        source: list[int | None] = []
        smaller: list[int | None] = []
        seen = 0  # symbols emitted before the current bucket = symbols strictly smaller than it
        for symbol in sorted(buckets):
            positions = buckets[symbol]
            answer += [SYMBOL_TOKENS[symbol]] * len(positions)
            source += positions
            smaller += [seen] * len(positions)
            seen += len(positions)
        return Example(
            prompt=[*(SYMBOL_TOKENS[s] for s in raw_input), "="],
            answer=[*answer, EOS],
            features={"source_position": [*source, None], "count_smaller": [*smaller, None]},
        )


# ---------------------------------------------------------------------------------------------------------------------
# compare: a ? b = one of < = >
# ---------------------------------------------------------------------------------------------------------------------

RELATIONS = ("<", "=", ">")


@registry.tasks.register("compare")
class Compare:
    """b copies a random-length prefix of a, so long shared prefixes and a = b are common (see random_inputs).

    With n_digits <= 3 (at most 10^6 pairs) the build enumerates the space and draws pairs uniformly instead, so
    there the first digit decides 90% of the pairs; the levels start at 4 digits for that reason.
    """

    name: ClassVar[str] = "compare"
    description: ClassVar[str] = (
        "a ? b = r <EOS>: a, b n-digit decimals (most-significant first, leading zeros kept), r one of < = >"
    )
    levels: ClassVar[dict[int, dict[str, Any]]] = {
        1: {"n_digits": 4},
        2: {"n_digits": 8},
        3: {"n_digits": 16},
    }
    level_notes: ClassVar[dict[int, str]] = {
        1: "4 digits: the first difference is among 4 places; easy; 2-layer d64, batch 256: exact match 0.94 by step "
        "500",
        2: "8 digits: long shared prefixes put the deciding digit anywhere in 8 places; harder",
        3: "16 digits: the model must find the first differing digit among 16 pairs; the hardest",
    }
    feature_names: ClassVar[tuple[str, ...]] = ("first_difference", "prefix_equal")
    feature_notes: ClassVar[dict[str, str]] = {
        "first_difference": "index of the first digit where a and b differ (n if a = b), at the position predicting "
        "the relation; none at EOS",
        "prefix_equal": "prefix_equal/i: 1 if the first i+1 digits of a and b agree, else 0, at the position "
        "predicting the relation; none at EOS",
    }

    def default_params(self, level: int) -> dict[str, Any]:
        return dict(self.levels[level])

    def _check(self, params: dict[str, Any]) -> int:
        return int_param(params, "n_digits", 1, MAX_DIGITS)

    def vocab(self, params: dict[str, Any]) -> Vocab:
        # "=" is both the prompt's last token and the "equal" answer; the answer is read at a fixed place, so no clash.
        return Vocab((*SYMBOL_TOKENS[:10], "?", "<", "=", ">", EOS, PAD))

    def input_space_size(self, params: dict[str, Any]) -> int:
        # Every ordered pair of digit strings: the prefix copy in random_inputs only reweights pairs (L = 0 reaches all).
        return 100 ** self._check(params)

    def chance_exact_match(self, params: dict[str, Any]) -> float:
        return 1.0 / len(RELATIONS)  # a uniform guess over < = >

    def enumerate_inputs(self, params: dict[str, Any]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        n_digits = self._check(params)
        numbers = list(product(range(10), repeat=n_digits))
        return [(a, b) for a in numbers for b in numbers]

    def random_inputs(
        self, params: dict[str, Any], rng: np.random.Generator, n: int
    ) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        # a is uniform; b copies a prefix of a of length L uniform in 0..n_digits and draws its other digits uniformly.
        # Without the copy the first digit would decide 90% of the pairs and a = b would almost never occur.
        n_digits = self._check(params)
        a = rng.integers(0, 10, size=(n, n_digits))
        fresh = rng.integers(0, 10, size=(n, n_digits))
        shared = rng.integers(0, n_digits + 1, size=n)
        b = np.where(np.arange(n_digits)[None, :] < shared[:, None], a, fresh)
        return list(zip(map(tuple, a.tolist()), map(tuple, b.tolist()), strict=True))

    def example(self, raw_input: tuple[tuple[int, ...], tuple[int, ...]], params: dict[str, Any]) -> Example:
        a, b = raw_input
        n_digits = len(a)
        first = next((i for i in range(n_digits) if a[i] != b[i]), n_digits)
        relation = "=" if first == n_digits else "<" if a[first] < b[first] else ">"
        features: dict[str, list[int | None]] = {"first_difference": [first, None]}
        for i, name in enumerate(_component_names("prefix_equal", n_digits)):
            features[name] = [int(i < first), None]
        return Example(
            prompt=[*(SYMBOL_TOKENS[d] for d in a), "?", *(SYMBOL_TOKENS[d] for d in b), "="],
            answer=[relation, EOS],
            features=features,
        )


# ---------------------------------------------------------------------------------------------------------------------
# parity and majority of majorities: a bit string, one answer bit
# ---------------------------------------------------------------------------------------------------------------------

BIT_TOKENS = ("0", "1")


def _bit_strings(n_bits: int) -> list[tuple[int, ...]]:
    return list(product((0, 1), repeat=n_bits))


def _random_bit_strings(rng: np.random.Generator, n: int, n_bits: int) -> list[tuple[int, ...]]:
    return list(map(tuple, rng.integers(0, 2, size=(n, n_bits)).tolist()))


@registry.tasks.register("parity")
class Parity:
    name: ClassVar[str] = "parity"
    description: ClassVar[str] = "b1 ... bn = p <EOS>: n bits, p = their sum mod 2"
    # Full parity gets hard fast: a 2-layer d_model=64 model left 13 bits at chance for 1,500 steps (batch 512, 7,000
    # examples), so the levels stay small and their input spaces are small too: train_size + test_size must fit.
    levels: ClassVar[dict[int, dict[str, Any]]] = {1: {"n_bits": 10}, 2: {"n_bits": 12}, 3: {"n_bits": 14}}
    level_notes: ClassVar[dict[int, str]] = {
        1: "10 bits (1,024 inputs): chance for ~200 steps, then a jump; 2-layer d64, 800 examples full batch: learnt "
        "by step 300",
        2: "12 bits (4,096 inputs): a longer plateau; 2-layer d64, batch 512 of 3,500: at chance until ~step 450, then "
        "learnt",
        3: "14 bits (16,384 inputs): clearly harder; 13 bits stayed at chance for 1,500 steps of batch 512 (2-layer "
        "d64); expect a long plateau",
    }
    feature_names: ClassVar[tuple[str, ...]] = ("prefix_parity",)
    feature_notes: ClassVar[dict[str, str]] = {
        "prefix_parity": "prefix_parity/i: parity of bits 0..i, at the position predicting the answer bit; none at EOS",
    }

    def default_params(self, level: int) -> dict[str, Any]:
        return dict(self.levels[level])

    def _check(self, params: dict[str, Any]) -> int:
        return int_param(params, "n_bits", 1, MAX_BITS)

    def vocab(self, params: dict[str, Any]) -> Vocab:
        return Vocab((*BIT_TOKENS, "=", EOS, PAD))

    def input_space_size(self, params: dict[str, Any]) -> int:
        return 2 ** self._check(params)

    def chance_exact_match(self, params: dict[str, Any]) -> float:
        return 0.5  # a uniform guess over the two answer bits

    def enumerate_inputs(self, params: dict[str, Any]) -> list[tuple[int, ...]]:
        return _bit_strings(self._check(params))

    def random_inputs(
        self, params: dict[str, Any], rng: np.random.Generator, n: int
    ) -> list[tuple[int, ...]]:
        return _random_bit_strings(rng, n, self._check(params))

    def example(self, raw_input: tuple[int, ...], params: dict[str, Any]) -> Example:
        features: dict[str, list[int | None]] = {}
        running = 0
        for name, bit in zip(_component_names("prefix_parity", len(raw_input)), raw_input, strict=True):
            running ^= bit
            features[name] = [running, None]
        return Example(
            prompt=[*(BIT_TOKENS[b] for b in raw_input), "="],
            answer=[BIT_TOKENS[running], EOS],
            features=features,
        )


@registry.tasks.register("majority_of_majorities")
class MajorityOfMajorities:
    name: ClassVar[str] = "majority_of_majorities"
    description: ClassVar[str] = (
        "bits = m <EOS>: n_groups consecutive groups of group_size bits (not separated), m the majority of the "
        "group majorities"
    )
    levels: ClassVar[dict[int, dict[str, Any]]] = {
        1: {"n_groups": 3, "group_size": 5},
        2: {"n_groups": 5, "group_size": 5},
        3: {"n_groups": 7, "group_size": 7},
    }
    level_notes: ClassVar[dict[int, str]] = {
        1: "3 groups of 5 bits (32,768 inputs): easy; 2-layer d64, batch 256: exact match 0.98 by step 200",
        2: "5 groups of 5 bits: group boundaries are never shown; the majority of all 25 bits agrees with m 85% of the "
        "time, a shortcut to plateau on",
        3: "7 groups of 7 bits (49 bits): hard; 2-layer d64, batch 256 of 20,000 sat at 0.84 (the all-bits-majority "
        "shortcut agrees with m 83% of the time) for 1,000 steps",
    }
    feature_names: ClassVar[tuple[str, ...]] = ("group_majority", "group_ones")
    feature_notes: ClassVar[dict[str, str]] = {
        "group_majority": "group_majority/g: 1 if most bits of group g are 1, at the position predicting m; "
        "none at EOS",
        "group_ones": "group_ones/g: number of ones in group g, at the position predicting m; none at EOS",
    }

    def default_params(self, level: int) -> dict[str, Any]:
        return dict(self.levels[level])

    def _check(self, params: dict[str, Any]) -> tuple[int, int]:
        # Both odd, so neither a group majority nor the majority of majorities can tie.
        n_groups = int_param(params, "n_groups", 1, MAX_BITS, odd=True)
        group_size = int_param(params, "group_size", 1, MAX_BITS, odd=True)
        if n_groups * group_size > MAX_BITS:
            raise TaskInputError(
                "params.group_size",
                f"n_groups * group_size = {n_groups * group_size}; allowed: at most {MAX_BITS} bits",
            )
        return n_groups, group_size

    def vocab(self, params: dict[str, Any]) -> Vocab:
        return Vocab((*BIT_TOKENS, "=", EOS, PAD))

    def input_space_size(self, params: dict[str, Any]) -> int:
        n_groups, group_size = self._check(params)
        return 2 ** (n_groups * group_size)

    def chance_exact_match(self, params: dict[str, Any]) -> float:
        return 0.5  # a uniform guess over the two answer bits

    def enumerate_inputs(self, params: dict[str, Any]) -> list[tuple[int, ...]]:
        n_groups, group_size = self._check(params)
        return _bit_strings(n_groups * group_size)

    def random_inputs(
        self, params: dict[str, Any], rng: np.random.Generator, n: int
    ) -> list[tuple[int, ...]]:
        n_groups, group_size = self._check(params)
        return _random_bit_strings(rng, n, n_groups * group_size)

    def example(self, raw_input: tuple[int, ...], params: dict[str, Any]) -> Example:
        n_groups, group_size = self._check(params)
        ones = [sum(raw_input[g * group_size : (g + 1) * group_size]) for g in range(n_groups)]
        majority = [int(2 * count > group_size) for count in ones]
        features: dict[str, list[int | None]] = {}
        for name, value in zip(_component_names("group_majority", n_groups), majority, strict=True):
            features[name] = [value, None]
        for name, value in zip(_component_names("group_ones", n_groups), ones, strict=True):
            features[name] = [value, None]
        majorities = sum(majority)
        answer = int(2 * majorities > n_groups)
        return Example(
            prompt=[*(BIT_TOKENS[b] for b in raw_input), "="],
            answer=[BIT_TOKENS[answer], EOS],
            features=features,
        )
