"""Fixtures shared by the measure tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Thousands of products and SGLD steps on tensors of a few hundred numbers: on a shared 2-core machine
    intra-op threads only add synchronisation (50x slower here), so a module that asks runs single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
