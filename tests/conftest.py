"""Fixtures shared by the test files: small data sets made here, the bundled data path
and a fresh output path.

Data fixtures are session-scoped and must not be changed by a test (a
:class:`~recompare.data.dataset.Dataset` is frozen; derive a new one with ``replace``).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from recompare.data.splits import split
from recompare.data.synth import planted

#: the bundled default data set (``recompare data synth data/planted``)
BUNDLED = Path(__file__).resolve().parent.parent / "data" / "planted"


@pytest.fixture(scope="session")
def tiny_planted():
    """Planted data, no split: 240 users, 120 items, 3 groups, user features, timestamps."""
    return planted(n_users=240, n_items=120, n_groups=3, seed=1)


@pytest.fixture(scope="session")
def tiny_split(tiny_planted):
    """:func:`tiny_planted` with a ``both`` split: every protocol (weak, strong, cold)."""
    return split(tiny_planted, "both", seed=1)


@pytest.fixture(scope="session")
def tiny_path(tiny_split, tmp_path_factory) -> Path:
    """:func:`tiny_split` saved as a data set directory (read it, never write it): for
    commands whose test needs a data set on disk but not the bundled data's size."""
    path = tmp_path_factory.mktemp("tiny") / "data"
    tiny_split.save(path)
    return path


@pytest.fixture(scope="session")
def bundled_path() -> Path:
    """Path of the bundled ``data/planted`` directory (read it, never write it)."""
    return BUNDLED


@pytest.fixture
def out_dir(tmp_path) -> Path:
    """A path for a command or function to create (it does not exist yet)."""
    return tmp_path / "out"
