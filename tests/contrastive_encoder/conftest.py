"""Fixtures for stage-1 tests: a tiny image-text world written to tmp_path (no generator needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ce_helpers import write_class_folders, write_pairs


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    return write_pairs(tmp_path / "pairs")


@pytest.fixture
def class_dir(tmp_path: Path) -> Path:
    return write_class_folders(tmp_path / "classes")
