"""Binary addition checked against Python integers; labels against the textbook carry recurrence."""

from __future__ import annotations

from itertools import product

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emergence import registry
from emergence.tasks import TaskInputError, build_task
from emergence.tasks.base import NO_LABEL


def lsb_first_to_int(bits: list[str]) -> int:
    return sum(int(b) << i for i, b in enumerate(bits))


@pytest.mark.parametrize("level", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_answers_and_carries_match_integer_arithmetic(level, seed):
    data = build_task("binary_addition", level, {}, 300, 100, 50, seed)
    n_bits = {1: 8, 2: 16, 3: 32}[level]
    for split in (data.train, data.test):
        for i in range(len(split)):
            text = data.vocab.decode(split.tokens[i])
            prompt_len, answer_len = int(split.prompt_len[i]), int(split.answer_len[i])
            a_bits, b_bits = text[:n_bits], text[n_bits + 1 : 2 * n_bits + 1]
            assert text[n_bits] == "+" and text[prompt_len - 1] == "="
            answer = text[prompt_len : prompt_len + answer_len]
            assert answer[-1] == "<EOS>" and len(answer) == n_bits + 2
            a, b = lsb_first_to_int(a_bits), lsb_first_to_int(b_bits)
            assert lsb_first_to_int(answer[:-1]) == a + b
            # carry out of bit i: does the sum of the low i+1 bits overflow?
            mask = [(1 << (j + 1)) - 1 for j in range(n_bits)]
            expected_carry = [int((a & m) + (b & m) > m) for m in mask]
            assert split.features["carry"][i, :n_bits].tolist() == expected_carry
            assert split.features["carry"][i, n_bits:].tolist() == [NO_LABEL, NO_LABEL]
            assert split.features["carry_in"][i, 1 : n_bits + 1].tolist() == expected_carry


@pytest.mark.parametrize("level", [1, 2])
def test_train_and_test_never_overlap_and_diagnostic_is_held_out(level):
    data = build_task("binary_addition", level, {}, 2000, 500, 100, 3)
    train = {tuple(row.tolist()) for row in data.train.tokens}
    test = [tuple(row.tolist()) for row in data.test.tokens]
    assert len(train) == 2000 and len(set(test)) == 500
    assert not train & set(test)
    assert [tuple(r.tolist()) for r in data.diagnostic.tokens] == test[:100]


def test_refuses_more_examples_than_the_input_space():
    with pytest.raises(TaskInputError, match="has only 256 distinct inputs"):
        build_task("binary_addition", 1, {"n_bits": 4}, 250, 10, 5, 0)


def test_small_space_can_be_used_whole():
    data = build_task("binary_addition", 1, {"n_bits": 4}, 200, 56, 10, 0)
    assert len({tuple(r.tolist()) for r in data.train.tokens} | {tuple(r.tolist()) for r in data.test.tokens}) == 256


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n_bits=st.integers(2, 12))
def test_same_seed_same_data(seed, n_bits):
    first = build_task("binary_addition", 1, {"n_bits": n_bits}, 8, 4, 2, seed)
    second = build_task("binary_addition", 1, {"n_bits": n_bits}, 8, 4, 2, seed)
    assert first.train.tokens.equal(second.train.tokens)
    assert first.test.tokens.equal(second.test.tokens)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_render_tokenize_decode_round_trip(seed):
    data = build_task("binary_addition", 1, {}, 4, 2, 1, seed)
    for row in data.train.tokens:
        text = data.vocab.decode(row)
        assert data.vocab.encode(text) == row.tolist()


# Binary multiplication. The carry into column k is recomputed from integer arithmetic on the partial
# products that land below column k, (sum of a_i b_j 2^(i+j) over i+j<k) >> k, not from the generator's
# column-by-column recurrence; column_ones by counting the pairs (i, j) directly.

MULTIPLICATION_BITS = {1: 6, 2: 10, 3: 16}


def multiplication_labels(split, name, i, width):
    row = split.features[name][i].tolist()
    assert row[width:] == [NO_LABEL] * (len(row) - width)  # nothing past EOS
    return [None if x == NO_LABEL else x for x in row[:width]]


def check_multiplication_row(data, split, i, n_bits):
    text = data.vocab.decode(split.tokens[i])
    prompt_len, answer_len = int(split.prompt_len[i]), int(split.answer_len[i])
    assert prompt_len == 2 * n_bits + 2 and answer_len == 2 * n_bits + 1
    assert text[n_bits] == "*" and text[prompt_len - 1] == "="
    assert all(t == "<PAD>" for t in text[prompt_len + answer_len :])
    a_bits, b_bits = text[:n_bits], text[n_bits + 1 : 2 * n_bits + 1]
    assert set(a_bits + b_bits) <= {"0", "1"}
    answer = text[prompt_len : prompt_len + answer_len]
    assert answer[-1] == "<EOS>"
    a, b = lsb_first_to_int(a_bits), lsb_first_to_int(b_bits)
    c = lsb_first_to_int(answer[:-1])
    assert c == a * b
    ones_at = [x + y for x in range(n_bits) for y in range(n_bits) if (a >> x) & 1 and (b >> y) & 1]
    width = 2 * n_bits
    column_ones = [ones_at.count(k) for k in range(width)]
    # below[k]: the partial products that land in columns < k, as an integer
    below = [sum(column_ones[col] << col for col in range(k)) for k in range(width)]
    carry_in = [below[k] >> k for k in range(width)]
    assert multiplication_labels(split, "column_ones", i, width + 1) == column_ones + [None]
    assert multiplication_labels(split, "carry_in", i, width + 1) == carry_in + [None]
    # Long multiplication, read off the oracle's numbers: the product bit is (ones + carry in) mod 2.
    assert [(c >> k) & 1 for k in range(width)] == [(o + k) % 2 for o, k in zip(column_ones, carry_in, strict=True)]
    return a, b


@pytest.mark.parametrize("level", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multiplication_answers_and_partial_product_labels_match_integer_arithmetic(level, seed):
    data = build_task("binary_multiplication", level, {}, 200, 100, 50, seed)
    n_bits = MULTIPLICATION_BITS[level]
    assert data.params == {"n_bits": n_bits}
    assert data.chance_exact_match == pytest.approx(2.0 ** -(2 * n_bits))
    assert data.vocab.tokens == ("0", "1", "*", "=", "<EOS>", "<PAD>")
    max_carry = 0
    for split in (data.train, data.test):
        assert set(split.features) == {"carry_in", "column_ones"}
        for i in range(len(split)):
            check_multiplication_row(data, split, i, n_bits)
        max_carry = max(max_carry, int(split.features["carry_in"].max()))
    assert max_carry > 1  # carries of partial products are not bits


def test_multiplication_levels_mix_in_one_build():
    data = build_task("binary_multiplication", [1, 3], {}, 100, 40, 20, 7)
    for split in (data.train, data.test):
        for i in range(len(split)):
            check_multiplication_row(data, split, i, MULTIPLICATION_BITS[int(split.level[i])])


@pytest.mark.parametrize("n_bits", [33, 70])
def test_multiplication_wide_explicit_operands(n_bits):
    data = build_task("binary_multiplication", 1, {"n_bits": n_bits}, 30, 10, 5, 0)
    top_bits = set()
    for i in range(len(data.train)):
        a, b = check_multiplication_row(data, data.train, i, n_bits)
        top_bits |= {a >> (n_bits - 1), b >> (n_bits - 1)}
    assert top_bits == {0, 1}


@pytest.mark.parametrize("level", [1, 2])
def test_multiplication_train_and_test_never_overlap(level):
    data = build_task("binary_multiplication", level, {}, 3000, 500, 100, 3)
    train = {tuple(row.tolist()) for row in data.train.tokens}
    test = [tuple(row.tolist()) for row in data.test.tokens]
    assert len(train) == 3000 and len(set(test)) == 500
    assert not train & set(test)
    assert [tuple(r.tolist()) for r in data.diagnostic.tokens] == test[:100]


def test_multiplication_refuses_more_examples_than_the_input_space_and_bad_params():
    with pytest.raises(TaskInputError, match="has only 64 distinct inputs"):
        build_task("binary_multiplication", 1, {"n_bits": 3}, 60, 10, 5, 0)
    for bad in (0, -2, "8", 4.0, True):
        with pytest.raises(TaskInputError) as error:
            build_task("binary_multiplication", 1, {"n_bits": bad}, 10, 5, 2, 0)
        assert error.value.field == "params.n_bits"


def test_multiplication_small_space_is_enumerated_whole():
    task = registry.tasks.get("binary_multiplication")()
    everything = task.enumerate_inputs({"n_bits": 3})
    # The test's own count: every pair of 3-bit strings.
    pairs = {(int("".join(x), 2), int("".join(y), 2)) for x, y in product(product("01", repeat=3), repeat=2)}
    assert len(everything) == len(set(everything)) == task.input_space_size({"n_bits": 3}) == len(pairs) == 64
    assert set(everything) == pairs
    assert set(task.random_inputs({"n_bits": 3}, np.random.default_rng(0), 2000)) == pairs
    data = build_task("binary_multiplication", 1, {"n_bits": 3}, 50, 14, 5, 0)
    seen = {check_multiplication_row(data, s, i, 3) for s in (data.train, data.test) for i in range(len(s))}
    assert seen == pairs


@settings(max_examples=20, deadline=None)
@given(n_bits=st.integers(1, 40), data=st.data())
def test_multiplication_render_tokenize_decode_round_trip(n_bits, data):
    a, b = data.draw(st.integers(0, 2**n_bits - 1)), data.draw(st.integers(0, 2**n_bits - 1))
    task = registry.tasks.get("binary_multiplication")()
    example = task.example((a, b), {"n_bits": n_bits})
    vocab = task.vocab({"n_bits": n_bits})
    text = vocab.decode(vocab.encode(example.prompt + example.answer))
    assert lsb_first_to_int(text[:n_bits]) == a and lsb_first_to_int(text[n_bits + 1 : 2 * n_bits + 1]) == b
    assert lsb_first_to_int(text[2 * n_bits + 2 : -1]) == a * b and len(text) == 4 * n_bits + 3
    assert all(len(v) == len(example.answer) for v in example.features.values())


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), level=st.sampled_from([1, 3]))  # level 2 enumerates 2^20 inputs per build: slow here
def test_multiplication_same_seed_same_data(seed, level):
    first = build_task("binary_multiplication", level, {}, 8, 4, 2, seed)
    second = build_task("binary_multiplication", level, {}, 8, 4, 2, seed)
    assert first.train.tokens.equal(second.train.tokens) and first.test.tokens.equal(second.test.tokens)
    assert all(np.array_equal(first.train.features[k], second.train.features[k]) for k in first.train.features)
    for row in first.train.tokens:
        assert first.vocab.encode(first.vocab.decode(row)) == row.tolist()
