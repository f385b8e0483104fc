"""recompare: WALS matrix factorization versus a softmax DNN, measured on the same data.

The Python API mirrors the CLI::

    import recompare
    ds = recompare.load_dataset("data/planted")
    ds = recompare.split(recompare.prepare("ml-100k/"), "both", seed=0)  # data prepare
    ds = recompare.split(recompare.planted(n_groups=6), "both")            # data synth

Names are imported on first use, so that ``recompare --help`` does not pay for
pandas and scipy.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import RecompareError

__version__ = "0.1.0"

#: public name -> module that defines it (imported lazily by ``__getattr__``)
_LAZY = {
    "Dataset": "recompare.data.dataset",
    "IdMap": "recompare.data.dataset",
    "Split": "recompare.data.dataset",
    "mirror": "recompare.data.synth",
    "planted": "recompare.data.synth",
    "prepare": "recompare.data.loaders",
    "split": "recompare.data.splits",
}

if TYPE_CHECKING:  # pragma: no cover
    from .data.dataset import Dataset, IdMap, Split
    from .data.loaders import prepare
    from .data.splits import split
    from .data.synth import mirror, planted


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'recompare' has no attribute {name!r}")


def load_dataset(path) -> Dataset:
    """Read a prepared data set directory (see ``docs/data-layout.md``)."""
    from .data.dataset import Dataset

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
