"""Binary arithmetic: ``a+b=c`` and ``a*b=c``, every number written least-significant bit first."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from emergence import registry
from emergence.tasks.base import EOS, PAD, Example, Vocab, int_param


@registry.tasks.register("binary_addition")
class BinaryAddition:
    name: ClassVar[str] = "binary_addition"
    description: ClassVar[str] = "a+b=c in binary, least-significant bit first; c has n_bits + 1 bits"
    levels: ClassVar[dict[int, dict[str, Any]]] = {1: {"n_bits": 8}, 2: {"n_bits": 16}, 3: {"n_bits": 32}}
    level_notes: ClassVar[dict[int, str]] = {
        1: "8-bit operands: learnt in a few hundred steps with almost no plateau",
        2: "16-bit operands: a loss plateau, then a sharp rise in exact match",
        3: "32-bit operands: long plateau",
    }
    feature_names: ClassVar[tuple[str, ...]] = ("carry", "carry_in")
    feature_notes: ClassVar[dict[str, str]] = {
        "carry": "carry out of bit i, c_(i+1) = a_i b_i or (a_i xor b_i) c_i, at the position predicting sum bit i",
        "carry_in": "carry into bit i, c_i, at the position predicting sum bit i",
    }

    def default_params(self, level: int) -> dict[str, Any]:
        return dict(self.levels[level])

    def _check(self, params: dict[str, Any]) -> int:
        return int_param(params, "n_bits")

    def vocab(self, params: dict[str, Any]) -> Vocab:
        return Vocab(("0", "1", "+", "=", EOS, PAD))

    def input_space_size(self, params: dict[str, Any]) -> int:
        return 2 ** (2 * self._check(params))

    def chance_exact_match(self, params: dict[str, Any]) -> float:
        return 2.0 ** -(self._check(params) + 1)

    def enumerate_inputs(self, params: dict[str, Any]) -> list[tuple[int, int]]:
        size = 2 ** self._check(params)
        return [(a, b) for a in range(size) for b in range(size)]

    def random_inputs(self, params: dict[str, Any], rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
        n_bits = self._check(params)
        # Bits rather than integers so operands wider than 63 bits work too.
        bits = rng.integers(0, 2, size=(n, 2, n_bits), dtype=np.uint8)
        packed = np.packbits(bits, axis=2, bitorder="little")
        return [(int.from_bytes(row[0].tobytes(), "little"), int.from_bytes(row[1].tobytes(), "little")) for row in packed]

    def example(self, raw_input: tuple[int, int], params: dict[str, Any]) -> Example:
        a, b = raw_input
        n_bits = self._check(params)
        a_bits = [(a >> i) & 1 for i in range(n_bits)]
        b_bits = [(b >> i) & 1 for i in range(n_bits)]
        sum_bits, carry_in, carry_out = [], [], []
        carry = 0
        for a_i, b_i in zip(a_bits, b_bits, strict=True):
            carry_in.append(carry)
            sum_bits.append(a_i ^ b_i ^ carry)
            carry = (a_i & b_i) | ((a_i ^ b_i) & carry)
            carry_out.append(carry)
        sum_bits.append(carry)  # the top bit of c is the final carry
        prompt = [str(x) for x in a_bits] + ["+"] + [str(x) for x in b_bits] + ["="]
        answer = [str(x) for x in sum_bits] + [EOS]
        no_label = [None, None]  # the top bit and EOS have no carry to read
        return Example(
            prompt=prompt,
            answer=answer,
            features={"carry": carry_out + no_label, "carry_in": carry_in + [carry, None]},
        )


def _random_bit_operands(rng: np.random.Generator, n_bits: int, n: int) -> list[tuple[int, int]]:
    """n pairs of independent uniform n_bits-bit integers, drawn as bits so any width works."""
    bits = rng.integers(0, 2, size=(n, 2, n_bits), dtype=np.uint8)
    packed = np.packbits(bits, axis=2, bitorder="little")
    return [(int.from_bytes(row[0].tobytes(), "little"), int.from_bytes(row[1].tobytes(), "little")) for row in packed]


@registry.tasks.register("binary_multiplication")
class BinaryMultiplication:
    name: ClassVar[str] = "binary_multiplication"
    description: ClassVar[str] = "a*b=c in binary, least-significant bit first; a and b have n_bits bits, c has 2 n_bits bits"
    # Not 4/8/16: 4 bits is only 256 inputs, too few for a training set plus a held-out test set; 6 bits
    # (4,096) is the smallest width with room for both, and 16 bits is the quiet-features study's setting.
    levels: ClassVar[dict[int, dict[str, Any]]] = {1: {"n_bits": 6}, 2: {"n_bits": 10}, 3: {"n_bits": 16}}
    level_notes: ClassVar[dict[int, str]] = {
        1: "6-bit operands (4,096 inputs; 12 product bits; columns hold up to 6 ones, carries up to 5): "
        "2-layer d_model=64, 2,000 examples, full batch: test exact match 0.30 after 400 steps, still rising",
        2: "10-bit operands (about 10^6 inputs): columns hold up to 10 ones, carries up to 9",
        3: "16-bit operands (about 4.3 * 10^9 inputs; the quiet-features study's setting): carries up to 15, long plateau expected",
    }
    feature_names: ClassVar[tuple[str, ...]] = ("carry_in", "column_ones")
    feature_notes: ClassVar[dict[str, str]] = {
        "carry_in": "carry into column k when the partial products a_i b_j (i+j=k) are summed column by column, "
        "an integer >= 0 that can exceed 1 (c_k = (column_ones_k + carry_in_k) mod 2), at the position predicting product bit k",
        "column_ones": "number of partial products a_i b_j = 1 with i+j=k (0..n_bits), at the position predicting product bit k",
    }

    def default_params(self, level: int) -> dict[str, Any]:
        return dict(self.levels[level])

    def _check(self, params: dict[str, Any]) -> int:
        return int_param(params, "n_bits")

    def vocab(self, params: dict[str, Any]) -> Vocab:
        return Vocab(("0", "1", "*", "=", EOS, PAD))

    def input_space_size(self, params: dict[str, Any]) -> int:
        return 2 ** (2 * self._check(params))

    def chance_exact_match(self, params: dict[str, Any]) -> float:
        # Uniform guess over every 2n-bit answer string.
        return 2.0 ** -(2 * self._check(params))

    def enumerate_inputs(self, params: dict[str, Any]) -> list[tuple[int, int]]:
        size = 2 ** self._check(params)
        return [(a, b) for a in range(size) for b in range(size)]

    def random_inputs(self, params: dict[str, Any], rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
        return _random_bit_operands(rng, self._check(params), n)

    def example(self, raw_input: tuple[int, int], params: dict[str, Any]) -> Example:
        n_bits = self._check(params)
        a, b = raw_input
        a_text, b_text = format(a, f"0{n_bits}b")[::-1], format(b, f"0{n_bits}b")[::-1]  # least-significant first
        # Read as a most-significant-first number, the LSB-first text of a is a bit-reversed: bit n-1-i of
        # reversed_a is a_i. Shifted so that bit j lines up with a_(k-j), it ANDs with b to give the partial
        # products of column k, so each column is one shift and one popcount instead of an n-term loop.
        reversed_a = int(a_text, 2)
        top = n_bits - 1
        column_ones = [((reversed_a >> (top - k)) & b).bit_count() for k in range(n_bits)]
        column_ones += [((reversed_a << (k - top)) & b).bit_count() for k in range(n_bits, 2 * n_bits)]
        answer: list[str] = []
        carry_in: list[int | None] = []
        carry = 0
        for ones in column_ones:
            carry_in.append(carry)
            total = ones + carry
            answer.append("1" if total & 1 else "0")
            carry = total >> 1
        answer.append(EOS)
        return Example(
            prompt=[*a_text, "*", *b_text, "="],
            answer=answer,
            features={"carry_in": carry_in + [None], "column_ones": [*column_ones, None]},
        )
