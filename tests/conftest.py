"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest

from mlkit.data.synthetic import SynthConfig, generate


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """A small synthetic demo dataset with every kind of fault, generated once.

    Tests must not write into it; they get their own output folders.
    """
    root = tmp_path_factory.mktemp("demo") / "data"
    summary = generate(root, SynthConfig(n_samples=300, seed=7))
    return root, summary
