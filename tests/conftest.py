from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
TINY_SPEC = REPO / "specs" / "tiny.yaml"


@pytest.fixture
def tiny_raw(tmp_path: Path) -> dict:
    """The tiny spec as a dict, with its output directory inside the test's tmp dir."""
    raw = yaml.safe_load(TINY_SPEC.read_text())
    raw["execution"] = {"output_dir": str(tmp_path / "runs")}
    return raw


@pytest.fixture
def write_spec(tmp_path: Path):
    def write(raw: dict, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw))
        return path

    return write
