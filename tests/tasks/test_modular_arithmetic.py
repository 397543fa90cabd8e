from __future__ import annotations

import pytest

from emergence.tasks import TaskInputError, build_task

ORACLE = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "x2+xy+y2": lambda a, b: a * a + a * b + b * b}


@pytest.mark.parametrize("op", sorted(ORACLE))
@pytest.mark.parametrize("p", [23, 59, 113, 7])
def test_answers_match_python_modulo(op, p):
    n = min(p * p - 20, 400)
    data = build_task("modular_arithmetic", 1, {"p": p, "op": op}, n, 20, 10, p)
    for split in (data.train, data.test):
        for row in split.tokens:
            a, sign, b, eq, c, eos = data.vocab.decode(row)
            assert (sign, eq, eos) == (op, "=", "<EOS>")
            assert int(c) == ORACLE[op](int(a), int(b)) % p
    assert not {tuple(r.tolist()) for r in data.train.tokens} & {tuple(r.tolist()) for r in data.test.tokens}
    assert data.chance_exact_match == pytest.approx(1 / p)


def test_rejects_composite_modulus_and_unknown_op():
    with pytest.raises(TaskInputError, match="prime"):
        build_task("modular_arithmetic", 1, {"p": 21}, 10, 5, 2, 0)
    with pytest.raises(TaskInputError, match="op"):
        build_task("modular_arithmetic", 1, {"op": "/"}, 10, 5, 2, 0)


def test_levels_share_one_vocabulary():
    sizes = {len(build_task("modular_arithmetic", level, {}, 10, 5, 2, 0).vocab) for level in (1, 2, 3)}
    assert len(sizes) == 1
