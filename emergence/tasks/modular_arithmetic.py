"""Modular arithmetic ``a op b = c (mod p)`` with one token per residue."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from emergence import registry
from emergence.tasks.base import EOS, PAD, Example, TaskInputError, Vocab, int_param

OPERATIONS: dict[str, Callable[[int, int], int]] = {
    "+": lambda x, y: x + y,
    "-": lambda x, y: x - y,
    "*": lambda x, y: x * y,
    "x2+xy+y2": lambda x, y: x * x + x * y + y * y,
}
LARGEST_LEVEL_MODULUS = 113


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


@registry.tasks.register("modular_arithmetic")
class ModularArithmetic:
    name: ClassVar[str] = "modular_arithmetic"
    description: ClassVar[str] = "a op b = c (mod p), p prime, op one of + - * x2+xy+y2"
    levels: ClassVar[dict[int, dict[str, Any]]] = {
        1: {"p": 23, "op": "+"},
        2: {"p": 59, "op": "+"},
        3: {"p": LARGEST_LEVEL_MODULUS, "op": "+"},
    }
    level_notes: ClassVar[dict[int, str]] = {
        1: "p = 23 (529 equations)",
        2: "p = 59 (3,481 equations)",
        3: "p = 113 (12,769 equations): the grokking setting",
    }
    feature_names: ClassVar[tuple[str, ...]] = ("operand_a_parity",)
    feature_notes: ClassVar[dict[str, str]] = {"operand_a_parity": "a mod 2, at the position predicting c"}

    def default_params(self, level: int) -> dict[str, Any]:
        return dict(self.levels[level])

    def _check(self, params: dict[str, Any]) -> tuple[int, str]:
        p, op = int_param(params, "p", 2), str(params["op"])
        if not _is_prime(p):
            raise TaskInputError("params.p", f"p = {p}; allowed: a prime (the modulus of a field)")
        if op not in OPERATIONS:
            raise TaskInputError("params.op", f"op {op!r} is not one of {sorted(OPERATIONS)}")
        return p, op

    def vocab(self, params: dict[str, Any]) -> Vocab:
        # One vocabulary for every level (and any explicit p), so a mixture of levels shares its embedding.
        size = max(LARGEST_LEVEL_MODULUS, self._check(params)[0])
        return Vocab(tuple(str(i) for i in range(size)) + tuple(OPERATIONS) + ("=", EOS, PAD))

    def input_space_size(self, params: dict[str, Any]) -> int:
        p, _ = self._check(params)
        return p * p

    def chance_exact_match(self, params: dict[str, Any]) -> float:
        return 1.0 / self._check(params)[0]

    def enumerate_inputs(self, params: dict[str, Any]) -> list[tuple[int, int]]:
        p, _ = self._check(params)
        return [(a, b) for a in range(p) for b in range(p)]

    def random_inputs(self, params: dict[str, Any], rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
        p, _ = self._check(params)
        return [tuple(pair) for pair in rng.integers(0, p, size=(n, 2)).tolist()]

    def example(self, raw_input: tuple[int, int], params: dict[str, Any]) -> Example:
        p, op = self._check(params)
        a, b = raw_input
        c = OPERATIONS[op](a, b) % p
        return Example(
            prompt=[str(a), op, str(b), "="],
            answer=[str(c), EOS],
            features={"operand_a_parity": [a % 2, None]},
        )
