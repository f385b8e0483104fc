"""recompare: WALS matrix factorization versus a softmax DNN, measured on the same data.

The Python API mirrors the CLI::

    import recompare
    ds = recompare.load_dataset("data/planted")
"""
from __future__ import annotations

from .data.dataset import Dataset, IdMap, Split
from .errors import RecompareError

__version__ = "0.1.0"


def load_dataset(path) -> Dataset:
    """Read a prepared data set directory (see ``docs/data-layout.md``)."""
    return Dataset.load(path)


def load_model(path, dataset=None):
    """Load a saved model directory (optionally checking it against ``dataset``)."""
    from .models import load_model as _load

    return _load(path, dataset)


__all__ = ["Dataset", "IdMap", "Split", "RecompareError", "load_dataset", "load_model",
           "__version__"]
