"""The built-in measures' declarations (``measures/builtin.py``) and the classes they name agree, and the
registry answers from a declaration without importing the measure's module."""

from __future__ import annotations

import subprocess
import sys

import pytest

from emergence import registry
from emergence.measures.base import Measure, MeasureDeclaration
from emergence.measures.builtin import BUILTIN_MEASURES, IMPLEMENTATION_MODULES


@pytest.mark.parametrize("declaration", BUILTIN_MEASURES, ids=[d.name for d in BUILTIN_MEASURES])
def test_each_declared_measure_is_the_class_it_names(declaration):
    assert registry.measures.info(declaration.name) is declaration
    measure = registry.measures.get(declaration.name)
    assert issubclass(measure, Measure)
    assert f"{measure.__module__}:{measure.__qualname__}" == declaration.implementation
    assert (measure.name, measure.Options, measure.cost, measure.default_every) == (
        declaration.name, declaration.Options, declaration.cost, declaration.default_every,
    )
    assert registry.measures.plugin(declaration.name) is None
    assert measure.__module__ in IMPLEMENTATION_MODULES


def test_every_registered_built_in_is_declared():
    declared = {d.name for d in BUILTIN_MEASURES}
    plugins = {name for name in registry.measures.names() if registry.measures.plugin(name) is not None}
    assert set(registry.measures.names()) - plugins == declared


def test_a_declaration_names_its_class_or_the_class_is_refused():
    with pytest.raises(TypeError, match="declared as emergence.measures.geometry:RankMe"):

        class Impostor(Measure, declared="rankme"):
            def compute(self, context):
                return {}


def test_the_registry_answers_from_a_declaration_without_importing_the_measure():
    code = (
        "import sys\n"
        "from emergence import registry\n"
        "info = registry.measures.info('llc')\n"
        "print(type(info).__name__, info.cost, info.default_every, sorted(info.Options.model_fields)[:2], 'llc' in registry.measures)\n"
        "print(sorted(m for m in ('torch', 'devinterp', 'emergence.measures.llc') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.splitlines() == [
        f"{MeasureDeclaration.__name__} expensive 1000 ['batch_size', 'localization'] True",
        "[]",
    ]
