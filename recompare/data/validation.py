"""Validation splits carved from the training part only: what selection may look at.

Early stopping, tuning and the choice of defaults must never see the test split:
the test numbers would then be selected on themselves.  :func:`validation_split`
turns a data set into another one whose *split* is a validation split made only
from ``dataset.train``:

* **weak** (every split): a ``fraction`` share of each training user's training
  interactions becomes the validation ``test`` part; each user keeps at least one
  training interaction;
* **strong** (when the data set's split holds users out, kinds ``users`` and
  ``both``): a ``fraction`` share of the training users (among those with at least
  two interactions) leaves the validation training part entirely; their training
  interactions are split into ``foldin`` and ``heldout`` with the data set's own
  ``foldin_fraction`` (0.5 when it has none).

The result is an ordinary :class:`~recompare.data.dataset.Dataset`, so every model
and every protocol run on it unchanged: fit on it, evaluate it, and the numbers are
validation numbers.  The original test, fold-in and held-out parts are never read.
The carve is a pure function of ``(dataset.train, fraction, random_state)``.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import RecompareError
from .dataset import Dataset, Split, as_csr

#: Default share of interactions (weak) and of users (strong) lent to validation.
VALIDATION_FRACTION = 0.2
#: The seed stream of validation carves (kept apart from the split's own draws).
_STREAM = 9


def validation_split(dataset: Dataset, fraction: float = VALIDATION_FRACTION,
                     random_state: int = 0, *, heldout_users: bool | None = None) -> Dataset:
    """A data set whose split is a validation split carved from ``dataset.train``.

    Parameters
    ----------
    dataset : Dataset
        Split or not; only its training matrix (``dataset.train``) is read.
    fraction : float in (0, 1)
        Share of each training user's interactions held out for weak validation, and
        share of training users held out for strong validation.
    random_state : int
        Seed: the same seed gives the same carve.
    heldout_users : bool, optional
        Also hold out validation users (strong protocol).  Default: when the data
        set's split holds users out (``users``/``both``).

    Returns
    -------
    Dataset
        ``dataset.replace(split=...)`` whose split has kind ``"validation"``-marked
        options, parts over the same id maps, ``train`` a subset of ``dataset.train``.

    Raises
    ------
    RecompareError
        ``fraction`` out of (0, 1), or too few training interactions to hold any out.
    """
    if not 0.0 < fraction < 1.0:
        raise RecompareError(f"validation fraction must be between 0 and 1, got {fraction}")
    source = dataset.split
    if heldout_users is None:
        heldout_users = source is not None and source.kind in ("users", "both")
    train = as_csr(dataset.train)
    train.sort_indices()
    n_users = train.shape[0]
    degree = np.diff(train.indptr)
    row_of = np.repeat(np.arange(n_users), degree)
    rng = np.random.default_rng([int(random_state) & 0xFFFFFFFF, _STREAM])
    keys = rng.random(train.nnz)
    rank = _rank(train, keys)

    held_users = np.zeros(0, dtype=np.int64)
    is_held = np.zeros(n_users, dtype=bool)
    in_foldin = np.zeros(train.nnz, dtype=bool)
    in_heldout = np.zeros(train.nnz, dtype=bool)
    if heldout_users:
        eligible = np.flatnonzero(degree >= 2)
        n_held = round(fraction * len(eligible))
        if n_held == 0 or n_held >= int((degree > 0).sum()):
            raise RecompareError(
                f"too few training users for a validation split: {len(eligible)} with two "
                f"or more interactions, a {fraction:g} share of them is {n_held} users")
        held_users = np.sort(rng.choice(eligible, size=n_held, replace=False))
        is_held[held_users] = True
        foldin_fraction = float((source.options if source else {}).get("foldin_fraction", 0.5))
        foldin_count = np.floor(foldin_fraction * degree + rng.random(n_users)).astype(np.int64)
        foldin_count = np.clip(foldin_count, 1 if foldin_fraction > 0 else 0, degree - 1)
        entry_held = is_held[row_of]
        in_foldin = entry_held & (rank < foldin_count[row_of])
        in_heldout = entry_held & ~in_foldin

    test_count = np.floor(fraction * degree + rng.random(n_users)).astype(np.int64)
    test_count = np.clip(test_count, 0, np.maximum(degree - 1, 0))
    test_count[is_held] = 0
    # the validation items are a user's last ranks, so that with held-out users the
    # same keys do not pick the same entries twice
    in_test = rank >= (degree - test_count)[row_of]
    if not in_test.any():
        raise RecompareError(
            "too few interactions for a validation split: no training user has two or more "
            "interactions to lend one to validation")
    in_train = ~(in_test | in_foldin | in_heldout)
    options = {"kind": "validation", "source_kind": source.kind if source else None,
               "fraction": float(fraction), "seed": int(random_state),
               "heldout_users": bool(heldout_users)}
    split = Split(
        kind="both" if heldout_users else "random",
        train=_subset(train, row_of, in_train),
        test=_subset(train, row_of, in_test),
        foldin=_subset(train, row_of, in_foldin) if heldout_users else None,
        heldout=_subset(train, row_of, in_heldout) if heldout_users else None,
        heldout_users=held_users,
        options=options,
    )
    return dataset.replace(split=split, meta={**dataset.meta, "validation": options})


def is_validation(dataset: Dataset) -> bool:
    """Whether ``dataset``'s split was made by :func:`validation_split`."""
    return dataset.split is not None and dataset.split.options.get("kind") == "validation"


def _rank(matrix: sp.csr_matrix, keys: np.ndarray) -> np.ndarray:
    """Position (0 = smallest key) of each stored entry among its row's entries."""
    row_of = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    order = np.argsort(row_of + 0.5 * keys, kind="stable")
    rank = np.empty(matrix.nnz, dtype=np.int64)
    rank[order] = np.arange(matrix.nnz) - matrix.indptr[row_of[order]]
    return rank


def _subset(matrix: sp.csr_matrix, row_of: np.ndarray, mask: np.ndarray) -> sp.csr_matrix:
    return as_csr(sp.coo_matrix((matrix.data[mask], (row_of[mask], matrix.indices[mask])),
                                shape=matrix.shape))


__all__ = ["VALIDATION_FRACTION", "is_validation", "validation_split"]
