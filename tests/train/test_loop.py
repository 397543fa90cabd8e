from __future__ import annotations

import math

import pytest
import torch

from emergence.spec.schema import LRScheduleSpec
from emergence.train.loop import BatchOrder
from emergence.train.optim import lr_multiplier


def test_batch_order_covers_each_epoch_once_and_is_stateless():
    order = BatchOrder(10, 4, seed=3)
    first_epoch = torch.cat([order.indices(s) for s in range(5)])[:10]
    assert sorted(first_epoch.tolist()) == list(range(10))
    fresh = BatchOrder(10, 4, seed=3)
    assert fresh.indices(7).tolist() == order.indices(7).tolist()
    assert BatchOrder(10, 4, seed=4).indices(0).tolist() != order.indices(0).tolist()


def test_full_batch_when_batch_size_is_none():
    assert BatchOrder(7, None, 0).indices(5).tolist() == list(range(7))


@pytest.mark.parametrize(
    ("name", "step", "expected"),
    [("constant", 50, 1.0), ("cosine", 10, 1.0), ("cosine", 110, 0.0), ("cosine", 60, 0.5), ("linear", 60, 0.5)],
)
def test_schedules_after_warmup(name, step, expected):
    spec = LRScheduleSpec(name=name, warmup_steps=10)
    assert lr_multiplier(spec, step, 110) == pytest.approx(expected, abs=1e-9)


def test_warmup_is_linear_from_zero():
    spec = LRScheduleSpec(name="cosine", warmup_steps=4)
    assert [lr_multiplier(spec, s, 100) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert math.isclose(lr_multiplier(LRScheduleSpec(name="cosine", min_lr_ratio=0.1), 100, 100), 0.1)
