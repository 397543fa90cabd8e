"""The code in docs/plugins.md runs as written: its task, measure and executor are real plugins."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_plugin_examples_in_the_docs_work() -> None:
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "plugins.md").read_text(encoding="utf-8"), flags=re.DOTALL)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/plugins.md", "exec"), namespace)  # noqa: S102 - our own documentation

    from emergence.plugins import Measure
    from emergence.tasks.build import distinct_inputs, resolve_params

    task = namespace["CountOnes"]()
    params = resolve_params(task, 2, {})
    example = task.example(0b101011, params)
    assert example.prompt == ["1", "1", "0", "1", "0", "1", "="] and example.answer == ["4", "<EOS>"]
    assert len(distinct_inputs(task, params, 10, __import__("numpy").random.default_rng(0))) == 10
    assert issubclass(namespace["WeightNorm"], Measure) and namespace["WeightNorm"].Options(squared=True).squared
    assert callable(namespace["OneByOne"](None).execute)
