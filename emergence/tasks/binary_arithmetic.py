"""Binary arithmetic: ``a+b=c`` and ``a*b=c``, every number written least-significant bit first."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from emergence import registry
from emergence.tasks.base import EOS, PAD, Example, Vocab


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

    def vocab(self, params: dict[str, Any]) -> Vocab:
        return Vocab(("0", "1", "+", "=", EOS, PAD))

    def input_space_size(self, params: dict[str, Any]) -> int:
        return 2 ** (2 * int(params["n_bits"]))

    def chance_exact_match(self, params: dict[str, Any]) -> float:
        return 2.0 ** -(int(params["n_bits"]) + 1)

    def enumerate_inputs(self, params: dict[str, Any]) -> list[tuple[int, int]]:
        size = 2 ** int(params["n_bits"])
        return [(a, b) for a in range(size) for b in range(size)]

    def random_inputs(self, params: dict[str, Any], rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
        n_bits = int(params["n_bits"])
        # Bits rather than integers so operands wider than 63 bits work too.
        bits = rng.integers(0, 2, size=(n, 2, n_bits), dtype=np.uint8)
        packed = np.packbits(bits, axis=2, bitorder="little")
        return [(int.from_bytes(row[0].tobytes(), "little"), int.from_bytes(row[1].tobytes(), "little")) for row in packed]

    def example(self, raw_input: tuple[int, int], params: dict[str, Any]) -> Example:
        a, b = raw_input
        n_bits = int(params["n_bits"])
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
