"""Softmax DNN hyperparameters: the allowed values and their checks.

A plain function over an estimator's stored parameters, kept apart from
:mod:`recompare.models.softmax` (as :mod:`.wals_params` is from WALS) so that the
estimator module reads as fit, serving and I/O.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import RecompareError
from .tower import as_hidden

if TYPE_CHECKING:
    from .softmax import SoftmaxDNN

LOSSES = ("full", "sampled")
NEGATIVES = ("none", "uniform", "popularity", "in-batch", "hard")
ACTIVATIONS = ("relu", "tanh")
OPTIMIZERS = ("adam", "adagrad")
POOLINGS = ("mean", "weighted", "sqrt")
LR_DECAYS = ("none", "linear", "cosine", "auto")


def validate(model: SoftmaxDNN, dataset) -> None:
    """Check every hyperparameter of ``model`` against ``dataset``; raises
    :class:`RecompareError` with one clear line."""
    def check(ok: bool, message: str) -> None:
        if not ok:
            raise RecompareError(message)

    def is_int(v: Any) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    check(is_int(model.dim) and model.dim > 0, f"dim must be a positive integer, got {model.dim}")
    hidden = as_hidden(model.hidden)
    check(all(h > 0 for h in hidden), f"hidden sizes must be positive, got {model.hidden}")
    check(model.activation in ACTIVATIONS,
          f"activation must be one of {', '.join(ACTIVATIONS)}, got {model.activation!r}")
    check(0 <= model.dropout < 1, f"dropout must be in [0, 1), got {model.dropout}")
    check(model.pooling in POOLINGS,
          f"pooling must be one of {', '.join(POOLINGS)}, got {model.pooling!r}")
    check(model.normalize == "auto" or isinstance(model.normalize, (bool, np.bool_)),
          f"normalize must be true, false or 'auto', got {model.normalize!r}")
    check(model.temperature > 0, f"temperature must be positive, got {model.temperature}")
    check(model.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}, got {model.loss!r}")
    check(model.negatives in NEGATIVES,
          f"negatives must be one of {', '.join(NEGATIVES)}, got {model.negatives!r}")
    check(is_int(model.num_negatives) and model.num_negatives > 0,
          f"num_negatives must be a positive integer, got {model.num_negatives}")
    if model.loss == "sampled" and model.negatives in ("uniform", "popularity", "hard"):
        check(model.num_negatives <= dataset.n_items,
              f"num_negatives={model.num_negatives} is larger than the catalogue "
              f"({dataset.n_items} items); lower num_negatives")
    check(model.gravity == "auto" or (isinstance(model.gravity, (int, float))
                                     and model.gravity >= 0),
          f"gravity must be >= 0 or 'auto', got {model.gravity!r}")
    check(is_int(model.epochs) and model.epochs > 0,
          f"epochs must be a positive integer, got {model.epochs}")
    check(is_int(model.batch_size) and model.batch_size > 0,
          f"batch_size must be a positive integer, got {model.batch_size}")
    check(model.average_epochs == "auto"
          or (is_int(model.average_epochs) and model.average_epochs >= 0),
          f"average_epochs must be a non-negative integer or 'auto', "
          f"got {model.average_epochs!r}")
    check(model.lr > 0, f"lr must be positive, got {model.lr}")
    check(model.lr_decay in LR_DECAYS,
          f"lr_decay must be one of {', '.join(LR_DECAYS)}, got {model.lr_decay!r}")
    check(model.optimizer in OPTIMIZERS,
          f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {model.optimizer!r}")
    check(model.weight_decay >= 0, f"weight_decay must be >= 0, got {model.weight_decay}")
    check(model.embedding_l2 >= 0, f"embedding_l2 must be >= 0, got {model.embedding_l2}")
    check(model.init_scale > 0, f"init_scale must be positive, got {model.init_scale}")
    check(0 < model.target_fraction < 1,
          f"target_fraction must be in (0, 1), got {model.target_fraction}")
    check(0 <= model.history_dropout < 1,
          f"history_dropout must be in [0, 1), got {model.history_dropout}")
    check(0 <= model.validation_fraction < 1,
          f"validation_fraction must be in [0, 1), got {model.validation_fraction}")
    if model.patience is not None:
        check(is_int(model.patience) and model.patience >= 0,
              f"patience must be a positive integer or None (no early stopping), "
              f"got {model.patience!r}")
        if model.patience == 0:
            warnings.warn("patience=0 is read as patience=None (no early stopping); "
                          "pass None", FutureWarning, stacklevel=5)
        check(not model.patience or model.validation_fraction > 0,
              "early stopping (patience) needs validation data: set validation_fraction "
              "(e.g. 0.2)")
    check(is_int(model.members) and model.members >= 1,
          f"members must be a positive integer, got {model.members!r}")
    check(is_int(model.threads) and model.threads >= 0,
          f"threads must be a non-negative integer, got {model.threads}")
    check(dataset.n_items > 1, "the data set needs at least two items")
    train = dataset.train
    check(train.nnz > 0, "the training matrix is empty")
