"""Shared fixtures for the dataset reader tests.

The fixture files under tests/data/sources/ are small copies of each real format
(real column names, realistic values) with the bad rows the readers must handle.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

FIXTURES = Path(__file__).resolve().parents[3] / "data" / "sources"


@pytest.fixture
def fixtures_root() -> Path:
    """The checked-in data root; readers only read it."""
    return FIXTURES


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """An empty data root to write variations of the fixture files into."""
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def write_file(data_root: Path) -> Callable[[str, str | bytes], Path]:
    """Write ``content`` to ``data_root/relative`` (text as UTF-8)."""

    def write(relative: str, content: str | bytes) -> Path:
        path = data_root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return write


@pytest.fixture
def copy_fixture(data_root: Path) -> Callable[[str], Path]:
    """Copy one dataset's fixture folder into the writable data root."""

    def copy(dataset: str, folder: str | None = None) -> Path:
        target = data_root / (folder or dataset)
        shutil.copytree(FIXTURES / dataset, target)
        return target

    return copy


def _pick(frame: pd.DataFrame, image_id: str) -> pd.Series:
    found = frame[frame["image_id"] == image_id]
    assert len(found) == 1, f"expected one row for {image_id}, got {len(found)}"
    return found.iloc[0]


def _reasons(quarantine: pd.DataFrame, reason: str) -> pd.DataFrame:
    return quarantine[quarantine["reason"] == reason].reset_index(drop=True)


@pytest.fixture
def pick() -> Callable[[pd.DataFrame, str], pd.Series]:
    """``pick(frame, image_id)``: the one row with this image id."""
    return _pick


@pytest.fixture
def reasons() -> Callable[[pd.DataFrame, str], pd.DataFrame]:
    """``reasons(quarantine, code)``: the quarantine rows with this reason."""
    return _reasons
