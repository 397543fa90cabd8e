"""Binary addition checked against Python integers; labels against the textbook carry recurrence."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
