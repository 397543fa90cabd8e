"""Decimal arithmetic: ``a+b=c`` and ``a*b=c``, every number written least-significant digit first.

Digit order. Every operand and every answer is written least-significant digit first, zero-padded to a
fixed width (``345 + 78`` at 3 digits is ``5 4 3 + 8 7 0 = 3 2 4 0``). A left-to-right model emits the
answer one digit at a time, and column ``k`` of the school algorithm needs only columns ``< k``: with the
low digit first, everything answer digit ``k`` depends on (the operand digits of columns ``<= k`` and the
carry from column ``k - 1``) is already in its context when it is predicted, so the carry chain runs in
the same direction as generation. Most-significant first would make the first answer digit depend on
every column at once (a carry can ripple from the bottom), which is much harder for a small model and
mixes "learns carrying" with "learns look-ahead". binary_addition makes the same choice.

Operands are uniform over all fixed-width digit strings (leading zeros allowed), so an n-digit operand
is uniform on ``[0, 10**n)`` and the raw input is the pair of integers ``(a, b)``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from emergence import registry
from emergence.tasks.base import EOS, PAD, Example, Vocab, int_param

DIGITS: tuple[str, ...] = tuple("0123456789")
INT64_DIGITS = 18  # 10**18 < 2**63: the widest operand numpy can draw in one go


def _uniform_below_power_of_ten(rng: np.random.Generator, width: int, n: int) -> list[int]:
    """n integers uniform on ``[0, 10**width)``.

    Wider than 18 digits, a number is assembled from independent uniform chunks of at most 18 digits
    (uniform chunks give a uniform number), so explicit params can ask for any width.
    """
    chunks = [INT64_DIGITS] * (width // INT64_DIGITS) + ([width % INT64_DIGITS] if width % INT64_DIGITS else [])
    value = rng.integers(0, 10 ** chunks[0], size=n, dtype=np.int64).astype(object)
    for chunk in chunks[1:]:
        value = value * 10**chunk + rng.integers(0, 10**chunk, size=n, dtype=np.int64).astype(object)
    return value.tolist()


def _uniform_operand_pairs(rng: np.random.Generator, width_a: int, width_b: int, n: int) -> list[tuple[int, int]]:
    """n pairs (a, b), a uniform on ``[0, 10**width_a)`` and b on ``[0, 10**width_b)``, independent."""
    a = _uniform_below_power_of_ten(rng, width_a, n)
    b = _uniform_below_power_of_ten(rng, width_b, n)
    return list(zip(a, b, strict=True))


@registry.tasks.register("addition")
class DecimalAddition:
    name: ClassVar[str] = "addition"
    description: ClassVar[str] = (
        "a+b=c in decimal, least-significant digit first, operands zero-padded to n_digits; c has n_digits + 1 digits"
    )
    levels: ClassVar[dict[int, dict[str, Any]]] = {1: {"n_digits": 3}, 2: {"n_digits": 6}, 3: {"n_digits": 12}}
    level_notes: ClassVar[dict[int, str]] = {
        1: "3-digit operands (10^6 inputs; 4 answer digits): 2-layer d_model=64, 2,000 examples, full batch: "
        "test exact match 0.83 after 150 steps, 0.91 after 400",
        2: "6-digit operands (10^12 inputs): carries can ripple across 6 columns; needs more steps",
        3: "12-digit operands (10^24 inputs): long carry chains; same model and budget: test exact match 0.00 after 400 "
        "steps (it memorises the 2,000 examples)",
    }
    feature_names: ClassVar[tuple[str, ...]] = ("carry", "carry_in", "digit_sum")
    feature_notes: ClassVar[dict[str, str]] = {
        "carry": "carry out of digit i (0/1), at the position predicting sum digit i; none at the top digit and EOS",
        "carry_in": "carry into digit i (0/1), at the position predicting sum digit i; at the top digit it is the final carry",
        "digit_sum": "a_i + b_i + carry_in_i (0..19), at the position predicting sum digit i (sum digit = digit_sum mod 10); "
        "at the top digit a_n = b_n = 0, so it equals the final carry",
    }

    def default_params(self, level: int) -> dict[str, Any]:
        return dict(self.levels[level])

    def _check(self, params: dict[str, Any]) -> int:
        return int_param(params, "n_digits")

    def vocab(self, params: dict[str, Any]) -> Vocab:
        # Digits, operator and "=" cover every width, so every level (and any explicit n_digits) shares it.
        return Vocab((*DIGITS, "+", "=", EOS, PAD))

    def input_space_size(self, params: dict[str, Any]) -> int:
        return 10 ** (2 * self._check(params))

    def chance_exact_match(self, params: dict[str, Any]) -> float:
        # Uniform guess over every (n + 1)-digit answer string; the top digit is really only 0 or 1, but
        # the model is not told that, and this matches binary_addition's 2^-(n+1).
        return 10.0 ** -(self._check(params) + 1)

    def enumerate_inputs(self, params: dict[str, Any]) -> list[tuple[int, int]]:
        size = 10 ** self._check(params)
        return [(a, b) for a in range(size) for b in range(size)]

    def random_inputs(self, params: dict[str, Any], rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
        n_digits = self._check(params)
        return _uniform_operand_pairs(rng, n_digits, n_digits, n)

    def example(self, raw_input: tuple[int, int], params: dict[str, Any]) -> Example:
        n_digits = self._check(params)
        a, b = raw_input
        a_text, b_text = str(a).zfill(n_digits)[::-1], str(b).zfill(n_digits)[::-1]  # least-significant first
        answer: list[str] = []
        carry_in: list[int | None] = []
        carry_out: list[int | None] = []
        digit_sum: list[int | None] = []
        carry = 0
        for a_i, b_i in zip(map(int, a_text), map(int, b_text), strict=True):
            total = a_i + b_i + carry
            carry_in.append(carry)
            digit_sum.append(total)
            answer.append(DIGITS[total % 10])
            carry = total // 10
            carry_out.append(carry)
        answer += [DIGITS[carry], EOS]  # the top digit of c is the final carry
        return Example(
            prompt=[*a_text, "+", *b_text, "="],
            answer=answer,
            features={
                "carry": carry_out + [None, None],  # nothing carries out of the top digit; EOS reads nothing
                "carry_in": carry_in + [carry, None],
                "digit_sum": digit_sum + [carry, None],
            },
        )


@registry.tasks.register("multiplication")
class DecimalMultiplication:
    name: ClassVar[str] = "multiplication"
    description: ClassVar[str] = (
        "a*b=c in decimal, least-significant digit first; a has n_digits_a digits, b n_digits_b, c n_digits_a + n_digits_b"
    )
    levels: ClassVar[dict[int, dict[str, Any]]] = {
        # 2x1 would have only 1,000 inputs: a 2-layer d_model=64 model trained on 500 of them memorised
        # (test exact match 0.37 after 400 full-batch steps, test loss rising); 3x1 has 10^4 and generalises.
        1: {"n_digits_a": 3, "n_digits_b": 1},
        2: {"n_digits_a": 3, "n_digits_b": 2},
        3: {"n_digits_a": 4, "n_digits_b": 4},
    }
    level_notes: ClassVar[dict[int, str]] = {
        1: "3-digit by 1-digit (10^4 inputs; 4 answer digits): one partial product, a times table plus a carry; "
        "2-layer d_model=64, 2,000 examples, full batch: test exact match 0.66 after 400 steps",
        2: "3-digit by 2-digit (10^5 inputs): columns sum up to 2 digit products plus a carry; harder",
        3: "4-digit by 4-digit (10^8 inputs): columns sum up to 4 digit products, carries up to 35; hard for a small model",
    }
    feature_names: ClassVar[tuple[str, ...]] = ("column_sum", "carry_in", "carry_out")
    feature_notes: ClassVar[dict[str, str]] = {
        "column_sum": "sum of the digit products a_i*b_j with i+j=k plus carry_in_k (c_k = column_sum mod 10), "
        "at the position predicting product digit k",
        "carry_in": "carry into column k (carry_out of column k-1; 0 at k = 0), at the position predicting product digit k",
        "carry_out": "carry out of column k, column_sum // 10 (0 at the top column: the product fits), "
        "at the position predicting product digit k",
    }

    def default_params(self, level: int) -> dict[str, Any]:
        return dict(self.levels[level])

    def _check(self, params: dict[str, Any]) -> tuple[int, int]:
        return int_param(params, "n_digits_a"), int_param(params, "n_digits_b")

    def vocab(self, params: dict[str, Any]) -> Vocab:
        return Vocab((*DIGITS, "*", "=", EOS, PAD))

    def input_space_size(self, params: dict[str, Any]) -> int:
        n_a, n_b = self._check(params)
        return 10 ** (n_a + n_b)

    def chance_exact_match(self, params: dict[str, Any]) -> float:
        # Uniform guess over every (n_a + n_b)-digit answer string.
        n_a, n_b = self._check(params)
        return 10.0 ** -(n_a + n_b)

    def enumerate_inputs(self, params: dict[str, Any]) -> list[tuple[int, int]]:
        n_a, n_b = self._check(params)
        return [(a, b) for a in range(10**n_a) for b in range(10**n_b)]

    def random_inputs(self, params: dict[str, Any], rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
        return _uniform_operand_pairs(rng, *self._check(params), n)

    def example(self, raw_input: tuple[int, int], params: dict[str, Any]) -> Example:
        n_a, n_b = self._check(params)
        a, b = raw_input
        a_text, b_text = str(a).zfill(n_a)[::-1], str(b).zfill(n_b)[::-1]  # least-significant first
        b_digits = list(map(int, b_text))
        columns = [0] * (n_a + n_b)  # columns[k] = sum of a_i * b_j over i + j = k
        for i, a_i in enumerate(map(int, a_text)):
            if a_i:
                for j, b_j in enumerate(b_digits):
                    columns[i + j] += a_i * b_j
        answer: list[str] = []
        column_sum: list[int | None] = []
        carry_in: list[int | None] = []
        carry_out: list[int | None] = []
        carry = 0
        for column in columns:
            total = column + carry
            carry_in.append(carry)
            column_sum.append(total)
            answer.append(DIGITS[total % 10])
            carry = total // 10
            carry_out.append(carry)
        answer.append(EOS)
        return Example(
            prompt=[*a_text, "*", *b_text, "="],
            answer=answer,
            features={"column_sum": column_sum + [None], "carry_in": carry_in + [None], "carry_out": carry_out + [None]},
        )
