"""recompare: WALS matrix factorization versus a softmax DNN, measured on the same data.

The Python API mirrors the CLI::

    import recompare
    ds = recompare.load_dataset("data/planted")
    ds = recompare.split(recompare.prepare("ml-100k/"), "both", seed=0)  # data prepare
    ds = recompare.split(recompare.planted(n_groups=6), "both")            # data synth
"""
from __future__ import annotations

from .data import mirror, planted, prepare, split
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


__all__ = [
    "Dataset",
    "IdMap",
    "RecompareError",
    "Split",
    "__version__",
    "load_dataset",
    "load_model",
    "mirror",
    "planted",
    "prepare",
    "split",
]
