"""Every shipped spec validates, and names in its header the command that runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from emergence.spec import resolve

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.yaml"))


def test_there_are_shipped_specs():
    assert {p.name for p in SPECS} >= {"addition.yaml", "tiny.yaml"}


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_shipped_spec_validates_and_documents_its_command(path):
    runs = resolve(str(path))
    assert runs
    header = path.read_text().split("\nname:")[0]
    assert f"emergence run specs/{path.name}" in header
