"""Train/evaluation splits over a data set's own id maps (never re-indexed).

Five kinds, each seeded:

* ``random``: per user, a ``test_fraction`` share of its interactions goes to
  ``test`` (the *weak* protocol: the same users, unseen interactions);
* ``temporal``: per user, its last ``last_n`` interactions, or its last
  ``test_fraction`` share, by timestamp;
* ``temporal-global``: one ``cutoff`` time for everyone: training is every
  interaction before it; users active before and after it are judged on their
  interactions after it (``test``, weak); users first seen after it are held
  out (``foldin`` = their earliest ``foldin_fraction`` share, ``heldout`` =
  the rest: the strong and cold protocols), so nothing from the future of any
  user reaches training;
* ``users``: a ``heldout_fraction`` share of users leaves training entirely;
  each held-out user's interactions are split into ``foldin`` (what a model
  may use to embed the user) and ``heldout`` (what it is judged on): the
  *strong* protocol, and with user features the *cold* one;
* ``both``: ``users`` first, then ``random`` on the remaining users.

Except in ``temporal-global``, every user keeps at least one training
interaction (users with a single interaction keep it); every held-out user
keeps at least one interaction to be judged on.  Per-user counts use
stochastic rounding, so the expected share is exactly the requested fraction
even for users with few items.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import RecompareError
from .dataset import SPLIT_KINDS, Dataset, Split, as_csr


@dataclass
class _Parts:
    """Which stored entries of the interaction matrix go where (boolean masks)."""

    test: np.ndarray
    foldin: np.ndarray
    heldout: np.ndarray
    heldout_users: np.ndarray


def split(
    dataset: Dataset,
    kind: str = "random",
    test_fraction: float = 0.2,
    heldout_fraction: float = 0.1,
    foldin_fraction: float = 0.5,
    last_n: int | None = None,
    seed: int = 0,
    cutoff: float | str | None = None,
) -> Dataset:
    """Return ``dataset`` with a :class:`~recompare.data.dataset.Split` set.

    Parameters
    ----------
    dataset : Dataset
        Any existing split is replaced; the split is made from ``interactions``.
    kind : {"random", "temporal", "temporal-global", "users", "both"}
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
    cutoff : float in (0, 1) or str, optional
        ``temporal-global`` only (required there): the share of interactions
        before the cutoff (``0.8``: the time before which 80% of them fall;
        ties at that time go after it), or a date / date-time in UTC
        (``"2015-01-01"``, ``"2015-01-01T12:00"``).

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
    _check_options(kind, test_fraction, heldout_fraction, foldin_fraction, last_n, cutoff)
    matrix = as_csr(dataset.interactions)
    if matrix.nnz == 0:
        raise RecompareError("cannot split an empty data set (no interactions)")
    rng = np.random.default_rng(seed)
    # one random key per interaction: the within-user order of a random holdout
    keys = rng.random(matrix.nnz)
    options: dict[str, Any] = {"seed": int(seed)}
    if kind == "temporal-global":
        parts = _global_time_parts(dataset, matrix, cutoff, foldin_fraction, keys, rng, options)
    else:
        parts = _held_out_user_parts(matrix, kind, heldout_fraction, foldin_fraction, keys, rng,
                                     options)
        if kind in ("random", "both", "temporal"):
            parts.test = _test_entries(dataset, matrix, kind, parts.heldout_users,
                                       test_fraction, last_n, keys, rng, options)
    in_train = ~(parts.test | parts.foldin | parts.heldout)
    if not in_train.any():
        raise RecompareError(f"the {kind} split leaves nothing to train on")
    with_test = kind in ("random", "temporal", "both", "temporal-global")
    with_users = kind in ("users", "both", "temporal-global")
    result = Split(
        kind=kind, heldout_users=parts.heldout_users.astype(np.int64),
        options={"kind": kind, **options},
        train=_subset(matrix, in_train),
        test=_subset(matrix, parts.test) if with_test else None,
        foldin=_subset(matrix, parts.foldin) if with_users else None,
        heldout=_subset(matrix, parts.heldout) if with_users else None,
    )
    return dataset.replace(split=result)


def _check_options(kind: str, test_fraction: float, heldout_fraction: float,
                   foldin_fraction: float, last_n: int | None,
                   cutoff: float | str | None) -> None:
    if kind not in SPLIT_KINDS:
        raise RecompareError(f"unknown split {kind!r}; choose one of {', '.join(SPLIT_KINDS)}")
    uses_test = kind in ("random", "both") or (kind == "temporal" and last_n is None)
    if uses_test and not 0.0 < test_fraction < 1.0:
        raise RecompareError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
    if kind in ("users", "both") and not 0.0 < heldout_fraction < 1.0:
        raise RecompareError(
            f"--heldout-fraction must be between 0 and 1, got {heldout_fraction}")
    if kind in ("users", "both", "temporal-global") and not 0.0 <= foldin_fraction < 1.0:
        raise RecompareError(f"--foldin-fraction must be in [0, 1), got {foldin_fraction}")
    if last_n is not None:
        if kind != "temporal":
            raise RecompareError("--last-n applies to the temporal split only")
        if int(last_n) != last_n or last_n < 1:
            raise RecompareError(f"--last-n must be a positive integer, got {last_n}")
    if (cutoff is None) == (kind == "temporal-global"):
        raise RecompareError("--cutoff is required by, and applies only to, the "
                             "temporal-global split")


def _held_out_user_parts(matrix: sp.csr_matrix, kind: str, heldout_fraction: float,
                         foldin_fraction: float, keys: np.ndarray, rng: np.random.Generator,
                         options: dict) -> _Parts:
    """Held-out users and their fold-in / held-out entries (``users``, ``both``)."""
    empty = np.zeros(matrix.nnz, dtype=bool)
    parts = _Parts(empty, empty.copy(), empty.copy(), np.zeros(0, dtype=np.int64))
    if kind not in ("users", "both"):
        return parts
    degree = np.diff(matrix.indptr)
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
    parts.heldout_users = np.sort(rng.choice(eligible, size=n_heldout, replace=False))
    parts.foldin, parts.heldout = _foldin_and_heldout(
        matrix, parts.heldout_users, foldin_fraction, _rank_within_rows(matrix, keys), rng)
    options.update(heldout_fraction=float(heldout_fraction),
                   foldin_fraction=float(foldin_fraction))
    return parts


def _foldin_and_heldout(matrix: sp.csr_matrix, users: np.ndarray, foldin_fraction: float,
                        rank: np.ndarray, rng: np.random.Generator,
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Entry masks: the first ``foldin_fraction`` share (by ``rank``) of each of ``users``'
    rows is fold-in, the rest held out; a user keeps at least one entry to be judged on."""
    degree = np.diff(matrix.indptr)
    lowest = 1 if foldin_fraction > 0 else 0
    is_heldout = np.zeros(matrix.shape[0], dtype=bool)
    is_heldout[users] = True
    foldin_count = _stochastic_round(foldin_fraction * degree, rng)
    foldin_count = np.clip(foldin_count, lowest, np.maximum(degree - 1, 0))
    row_of = np.repeat(np.arange(matrix.shape[0]), degree)
    held_entry = is_heldout[row_of]
    in_foldin = held_entry & (rank < foldin_count[row_of])
    return in_foldin, held_entry & ~in_foldin


def _test_entries(dataset: Dataset, matrix: sp.csr_matrix, kind: str,
                  heldout_users: np.ndarray, test_fraction: float, last_n: int | None,
                  keys: np.ndarray, rng: np.random.Generator, options: dict) -> np.ndarray:
    """Entry mask of the ``test`` part (``random``, ``temporal``, ``both``)."""
    n_users = matrix.shape[0]
    degree = np.diff(matrix.indptr)
    row_of = np.repeat(np.arange(n_users), degree)
    if kind == "temporal":
        stamps = aligned_timestamps(dataset, matrix, "temporal")
        # latest first; ties broken by the random key, so the seed decides them
        rank = _rank_within_rows(matrix, -stamps.astype(np.float64), tiebreak=keys)
    else:
        rank = _rank_within_rows(matrix, keys)
    if last_n is not None:
        test_count = np.full(n_users, int(last_n), dtype=np.int64)
        options["last_n"] = int(last_n)
    else:
        test_count = _stochastic_round(test_fraction * degree, rng)
        options["test_fraction"] = float(test_fraction)
    # every user keeps at least one training interaction; held-out users take no test
    test_count = np.clip(test_count, 0, np.maximum(degree - 1, 0))
    test_count[heldout_users] = 0
    in_test = rank < test_count[row_of]
    if not in_test.any():
        raise RecompareError(
            f"the {kind} split leaves nothing to evaluate: every training user would keep "
            "all its interactions (a user needs at least 2, one to train on and one to test)")
    return in_test


def _global_time_parts(dataset: Dataset, matrix: sp.csr_matrix, cutoff: float | str,
                       foldin_fraction: float, keys: np.ndarray, rng: np.random.Generator,
                       options: dict) -> _Parts:
    """One cutoff time for everyone: test for returning users, fold-in/held-out for new."""
    stamps = aligned_timestamps(dataset, matrix, "temporal-global")
    cutoff_time, share = _cutoff_seconds(cutoff, stamps)
    n_users = matrix.shape[0]
    row_of = np.repeat(np.arange(n_users), np.diff(matrix.indptr))
    after = stamps >= cutoff_time
    if after.all() or not after.any():
        missing, side = ("train on", "before") if after.all() else ("evaluate", "at or after")
        raise RecompareError(f"the temporal-global split leaves nothing to {missing}: no "
                             f"interaction is {side} the cutoff {_iso(cutoff_time)}")
    known = np.bincount(row_of[~after], minlength=n_users) > 0
    new_users = np.flatnonzero(~known & (np.bincount(row_of, minlength=n_users) > 0))
    # earliest first, ties broken by the random key: new users fold in their first steps
    rank = _rank_within_rows(matrix, stamps.astype(np.float64), tiebreak=keys)
    foldin, heldout = _foldin_and_heldout(matrix, new_users, foldin_fraction, rank, rng)
    options.update(cutoff=_iso(cutoff_time), cutoff_time=int(cutoff_time),
                   foldin_fraction=float(foldin_fraction))
    if share is not None:
        options["cutoff_fraction"] = share
    return _Parts(test=after & known[row_of], foldin=foldin, heldout=heldout,
                  heldout_users=new_users)


def _cutoff_seconds(cutoff: float | str, stamps: np.ndarray) -> tuple[int, float | None]:
    """Epoch seconds of a cutoff given as a share of interactions (also returned) or as a
    UTC date (share None)."""
    if isinstance(cutoff, str):
        try:
            share = float(cutoff)
        except ValueError:
            share = None
        if share is None:
            try:
                moment = pd.Timestamp(cutoff)
            except (ValueError, TypeError):
                raise RecompareError(f"--cutoff {cutoff!r} is neither a share in (0, 1) nor a "
                                     "date such as 2015-01-01") from None
            moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment
            return int((moment - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)), None
        cutoff = share
    if not 0.0 < cutoff < 1.0:
        raise RecompareError(f"--cutoff as a share of interactions must be in (0, 1), got "
                             f"{cutoff}")
    ordered = np.sort(stamps)
    position = min(int(np.floor(cutoff * len(ordered))), len(ordered) - 1)
    return int(ordered[position]), float(cutoff)


def _iso(seconds: int) -> str:
    return pd.Timestamp(int(seconds), unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


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


def aligned_timestamps(dataset: Dataset, matrix: sp.csr_matrix,
                       kind: str = "temporal") -> np.ndarray:
    """Timestamps as an array parallel to ``matrix.data`` (same sparsity pattern)."""
    if dataset.timestamps is None:
        raise RecompareError(
            f"the {kind} split needs timestamps, and this data set has none; "
            "use --split random, or prepare it with a time column (--time-col)")
    ts = sp.csr_matrix(dataset.timestamps)
    ts.sort_indices()
    if (ts.shape == matrix.shape and np.array_equal(ts.indptr, matrix.indptr)
            and np.array_equal(ts.indices, matrix.indices)):
        return np.asarray(ts.data, dtype=np.int64)
    coo = matrix.tocoo()
    return np.asarray(ts[coo.row, coo.col], dtype=np.int64).ravel()
