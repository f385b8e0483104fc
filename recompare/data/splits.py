"""Train/evaluation splits over a data set's own id maps (never re-indexed).

Four kinds, each seeded:

* ``random``: per user, a ``test_fraction`` share of its interactions goes to
  ``test`` (the *weak* protocol: the same users, unseen interactions);
* ``temporal``: per user, its last ``last_n`` interactions, or its last
  ``test_fraction`` share, by timestamp;
* ``users``: a ``heldout_fraction`` share of users leaves training entirely;
  each held-out user's interactions are split into ``foldin`` (what a model
  may use to embed the user) and ``heldout`` (what it is judged on): the
  *strong* protocol, and with user features the *cold* one;
* ``both``: ``users`` first, then ``random`` on the remaining users.

Every user keeps at least one training interaction (users with a single
interaction keep it), and every held-out user keeps at least one interaction
to be judged on.  Per-user counts use stochastic rounding, so the expected
share is exactly the requested fraction even for users with few items.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import RecompareError
from .dataset import SPLIT_KINDS, Dataset, Split, as_csr


def split(
    dataset: Dataset,
    kind: str = "random",
    test_fraction: float = 0.2,
    heldout_fraction: float = 0.1,
    foldin_fraction: float = 0.5,
    last_n: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Return ``dataset`` with a :class:`~recompare.data.dataset.Split` set.

    Parameters
    ----------
    dataset : Dataset
        Any existing split is replaced; the split is made from ``interactions``.
    kind : {"random", "temporal", "users", "both"}
    test_fraction : float in (0, 1)
        Share of each training user's interactions held out as ``test``
        (``random``, ``both``, and ``temporal`` without ``last_n``).
    heldout_fraction : float in (0, 1)
        Share of users (among those with at least two interactions) held out
        of training (``users``, ``both``).
    foldin_fraction : float in [0, 1)
        Share of a held-out user's interactions given as ``foldin``; 0 puts
        all of them in ``heldout`` (pure cold start).
    last_n : int, optional
        ``temporal`` only: hold out each user's last ``last_n`` interactions.
    seed : int

    Returns
    -------
    Dataset
        ``dataset.replace(split=Split(...))``; the parts are float32 CSR of
        shape ``(n_users, n_items)`` whose union is ``interactions``.

    Raises
    ------
    RecompareError
        Unknown kind, impossible fractions, missing timestamps (temporal), or a
        split that would leave nothing to train on or nothing to evaluate.
    """
    if kind not in SPLIT_KINDS:
        raise RecompareError(f"unknown split {kind!r}; choose one of {', '.join(SPLIT_KINDS)}")
    matrix = as_csr(dataset.interactions)
    if matrix.nnz == 0:
        raise RecompareError("cannot split an empty data set (no interactions)")
    uses_test = kind in ("random", "both") or (kind == "temporal" and last_n is None)
    if uses_test and not 0.0 < test_fraction < 1.0:
        raise RecompareError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
    if kind in ("users", "both"):
        if not 0.0 < heldout_fraction < 1.0:
            raise RecompareError(
                f"--heldout-fraction must be between 0 and 1, got {heldout_fraction}")
        if not 0.0 <= foldin_fraction < 1.0:
            raise RecompareError(
                f"--foldin-fraction must be in [0, 1), got {foldin_fraction}")
    if last_n is not None:
        if kind != "temporal":
            raise RecompareError("--last-n applies to the temporal split only")
        if int(last_n) != last_n or last_n < 1:
            raise RecompareError(f"--last-n must be a positive integer, got {last_n}")

    rng = np.random.default_rng(seed)
    n_users = dataset.n_users
    degree = np.diff(matrix.indptr)
    # one random key per interaction: the within-user order of a random holdout
    keys = rng.random(matrix.nnz)
    options: dict[str, Any] = {"seed": int(seed)}
    heldout_users = np.zeros(0, dtype=np.int64)
    in_test = np.zeros(matrix.nnz, dtype=bool)
    in_foldin = np.zeros(matrix.nnz, dtype=bool)
    in_heldout = np.zeros(matrix.nnz, dtype=bool)

    if kind in ("users", "both"):
        lowest = 1 if foldin_fraction > 0 else 0
        eligible = np.flatnonzero(degree >= lowest + 1)
        # at least one held-out user whenever any is eligible
        n_heldout = max(1, round(heldout_fraction * len(eligible)))
        if len(eligible) == 0:
            raise RecompareError(
                "the users split leaves nothing to evaluate: no user has enough interactions "
                "to be held out (each needs one to fold in and one to judge)")
        if n_heldout >= int((degree > 0).sum()):
            raise RecompareError(
                f"--heldout-fraction {heldout_fraction} leaves no users to train on")
        heldout_users = np.sort(rng.choice(eligible, size=n_heldout, replace=False))
        is_heldout = np.zeros(n_users, dtype=bool)
        is_heldout[heldout_users] = True
        foldin_count = _stochastic_round(foldin_fraction * degree, rng)
        foldin_count = np.clip(foldin_count, lowest, np.maximum(degree - 1, 0))
        rank = _rank_within_rows(matrix, keys)
        row_of = np.repeat(np.arange(n_users), degree)
        held_entry = is_heldout[row_of]
        in_foldin = held_entry & (rank < foldin_count[row_of])
        in_heldout = held_entry & ~in_foldin
        options.update(heldout_fraction=float(heldout_fraction),
                       foldin_fraction=float(foldin_fraction))
    else:
        is_heldout = np.zeros(n_users, dtype=bool)

    if kind in ("random", "both", "temporal"):
        row_of = np.repeat(np.arange(n_users), degree)
        if kind == "temporal":
            if dataset.timestamps is None:
                raise RecompareError(
                    "the temporal split needs timestamps, and this data set has none; "
                    "use --split random, or prepare it with a time column (--time-col)")
            stamps = _aligned_timestamps(dataset, matrix)
            # latest first; ties broken by the random key, so the seed decides them
            order_key = -stamps.astype(np.float64)
            rank = _rank_within_rows(matrix, order_key, tiebreak=keys)
            if last_n is not None:
                test_count = np.full(n_users, int(last_n), dtype=np.int64)
                options["last_n"] = int(last_n)
            else:
                test_count = _stochastic_round(test_fraction * degree, rng)
                options["test_fraction"] = float(test_fraction)
        else:
            rank = _rank_within_rows(matrix, keys)
            test_count = _stochastic_round(test_fraction * degree, rng)
            options["test_fraction"] = float(test_fraction)
        # every user keeps at least one training interaction; held-out users take no test
        test_count = np.clip(test_count, 0, np.maximum(degree - 1, 0))
        test_count[is_heldout] = 0
        in_test = rank < test_count[row_of]
        if not in_test.any():
            raise RecompareError(
                f"the {kind} split leaves nothing to evaluate: every training user would keep "
                "all its interactions (a user needs at least 2, one to train on and one to test)")

    in_train = ~(in_test | in_foldin | in_heldout)
    if not in_train.any():
        raise RecompareError(f"the {kind} split leaves nothing to train on")
    parts = {
        "train": _subset(matrix, in_train),
        "test": _subset(matrix, in_test) if kind in ("random", "temporal", "both") else None,
        "foldin": _subset(matrix, in_foldin) if kind in ("users", "both") else None,
        "heldout": _subset(matrix, in_heldout) if kind in ("users", "both") else None,
    }
    result = Split(kind=kind, heldout_users=heldout_users.astype(np.int64),
                   options={"kind": kind, **options}, **parts)
    return dataset.replace(split=result)


def _stochastic_round(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """floor(v + U), U uniform: integer with expectation exactly ``v``."""
    return np.floor(values + rng.random(len(values))).astype(np.int64)


def _rank_within_rows(matrix: sp.csr_matrix, key: np.ndarray,
                      tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Position (0 = smallest key) of each stored entry among its row's entries."""
    n_rows = matrix.shape[0]
    degree = np.diff(matrix.indptr)
    row_of = np.repeat(np.arange(n_rows), degree)
    if tiebreak is None and key.size and key.min() >= 0 and key.max() < 1:
        # keys in [0, 1): one float sort of row + key / 2 is much faster than a lexsort
        # (halved so that rounding can never carry an entry into the next row)
        order = np.argsort(row_of + 0.5 * key, kind="stable")
    else:
        order = np.lexsort((key, row_of) if tiebreak is None else (tiebreak, key, row_of))
    rank = np.empty(matrix.nnz, dtype=np.int64)
    rank[order] = np.arange(matrix.nnz) - matrix.indptr[row_of[order]]
    return rank


def _subset(matrix: sp.csr_matrix, mask: np.ndarray) -> sp.csr_matrix:
    """The stored entries of ``matrix`` where ``mask`` holds, same shape."""
    row_of = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    return as_csr(sp.coo_matrix(
        (matrix.data[mask], (row_of[mask], matrix.indices[mask])), shape=matrix.shape))


def _aligned_timestamps(dataset: Dataset, matrix: sp.csr_matrix) -> np.ndarray:
    """Timestamps as an array parallel to ``matrix.data`` (same sparsity pattern)."""
    ts = sp.csr_matrix(dataset.timestamps)
    ts.sort_indices()
    if (ts.shape == matrix.shape and np.array_equal(ts.indptr, matrix.indptr)
            and np.array_equal(ts.indices, matrix.indices)):
        return np.asarray(ts.data, dtype=np.int64)
    coo = matrix.tocoo()
    return np.asarray(ts[coo.row, coo.col], dtype=np.int64).ravel()
