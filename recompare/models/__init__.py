"""Model families behind one contract (see :mod:`recompare.models.base`).

Families are imported lazily so that ``recompare --help`` never pays for torch.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

from .._io import refuse
from ..errors import RecompareError
from .base import MODEL_FILE, Recommender, clone, read_model_json

#: kind -> "module:Class"; the DNN module is the only one importing torch
KINDS = {
    "wals": "recompare.models.wals:WALS",
    "softmax": "recompare.models.softmax:SoftmaxDNN",
    "popularity": "recompare.models.baselines:Popularity",
    "random": "recompare.models.baselines:RandomEmbeddings",
}

BASELINES = ("popularity", "random")


def model_class(kind: str) -> type[Recommender]:
    """The class registered for ``kind``."""
    if kind not in KINDS:
        raise RecompareError(f"unknown model kind '{kind}' (known: {', '.join(KINDS)})")
    module, name = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def load_model(path: str | os.PathLike, dataset=None) -> Recommender:
    """Load a saved model directory; with ``dataset``, check it was fit on that data.

    Parameters
    ----------
    path : str or path-like
        A directory written by the model's ``save``.
    dataset : Dataset, str, path-like or None
        The data set (or its directory) the model was trained on.  It supplies
        the training interactions that ``recommend(exclude_seen=True)`` needs; a
        saved model does not keep them.

    Raises :class:`RecompareError` on a fingerprint mismatch.
    """
    meta = read_model_json(path)
    if meta["kind"] not in KINDS:
        raise refuse(Path(path) / MODEL_FILE, "model description",
                     f"unknown model kind '{meta['kind']}' (known: {', '.join(KINDS)})")
    model = model_class(meta["kind"]).load(Path(path))
    if isinstance(dataset, (str, os.PathLike)):
        from ..data.dataset import Dataset

        dataset = Dataset.load(dataset)
    if dataset is not None:
        if model.fingerprint_ != dataset.fingerprint:
            raise RecompareError(
                f"model {path} was trained on another data set "
                f"(fingerprint {model.fingerprint_}, data set {dataset.fingerprint})"
            )
        model.seen_ = dataset.train
    return model


__all__ = ["BASELINES", "KINDS", "Recommender", "clone", "load_model", "model_class"]
