"""Mirrored copies of any data set: :func:`mirror` turns it into k relabelled copies, one
group per copy, with a share of each copy's interactions rewired to other copies.

A known answer for folding experiments on real data: the copies share nothing but what
was rewired, so a model that mixes them folds.  Vectorised numpy.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import RecompareError
from .dataset import Dataset, IdMap, as_csr
from .splits import aligned_timestamps


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise RecompareError(message)


def mirror(
    dataset: Dataset,
    copies: int = 2,
    cross_rate: float = 0.0,
    seed: int = 0,
    rewire: str = "same",
    group_hint: bool = True,
) -> Dataset:
    """``copies`` relabelled copies of a data set, one group per copy.

    Copy ``k`` holds every user and item of ``dataset`` with ids prefixed
    ``c<k>:``; its users interact only with its items, except for a
    ``cross_rate`` share of each copy's interactions (chosen at random) whose
    item is replaced by an item of another copy, chosen uniformly:

    * ``rewire="same"``: the same item in the other copy (its "translation");
    * ``rewire="random"``: an item of the other copy drawn by popularity.

    ``cross_rate=0`` gives perfectly disjoint copies.  The split of
    ``dataset`` is dropped (split the mirror instead); its groups, if any, are
    kept as ``item_info["source_group"]`` and ``user_features["source_group"]``.

    With ``group_hint`` (the default) every user gets a categorical feature
    ``group_hint`` naming its copy (``c0``, ``c1``, ...): a perfect hint, as
    the planted data's ``group_hint`` is a noisy one, so query-feature models
    can learn the copy from it.  ``group_hint=False`` leaves it out (a
    ``group_hint`` of the source is dropped either way).

    Parameters
    ----------
    dataset : Dataset
    copies : int >= 1
    cross_rate : float in [0, 1]
    seed : int
    rewire : {"same", "random"}
    group_hint : bool
        Add the user feature ``group_hint`` (the user's copy).

    Returns
    -------
    Dataset
        Shape ``(copies * n_users, copies * n_items)``; ``user_groups`` and
        ``item_groups`` give the copy; ``user_features`` are the original
        features plus, with ``group_hint``, ``group_hint`` naming the user's copy.
    """
    _check(int(copies) == copies and copies >= 1, f"--copies must be at least 1, got {copies}")
    copies = int(copies)
    _check(0.0 <= cross_rate <= 1.0, f"--cross-rate must be in [0, 1], got {cross_rate}")
    _check(copies > 1 or cross_rate == 0.0, "--cross-rate needs at least 2 copies")
    _check(rewire in ("same", "random"), f"unknown rewire mode {rewire!r}; use same or random")
    _check(dataset.interactions.nnz > 0, "cannot mirror an empty data set")
    rng = np.random.default_rng(seed)
    entries = _tiled_entries(dataset, copies)
    n_rewired = 0
    if cross_rate > 0:
        entries, n_rewired = _rewired(rng, dataset, entries, copies, cross_rate, rewire)
    interactions, timestamps = _mirror_matrices(entries, copies * dataset.n_users,
                                                copies * dataset.n_items)

    prefixes = [f"c{k}:" for k in range(copies)]
    names = tuple(f"c{k}" for k in range(copies))
    user_groups = np.repeat(np.arange(copies), dataset.n_users)
    features = _with_source_group(dataset.user_features, dataset.user_groups, dataset,
                                  dataset.n_users)
    features = features.drop(columns=["group_hint"], errors="ignore")
    features = pd.concat([features] * copies, ignore_index=True)
    if group_hint:
        features.insert(0, "group_hint", np.asarray(names, dtype=object)[user_groups])
    if not features.shape[1]:
        features = None  # no features at all, as in a data set without a user table
    info = _with_source_group(dataset.item_info, dataset.item_groups, dataset, dataset.n_items)
    info = pd.concat([info] * copies, ignore_index=True) if info.shape[1] else None
    meta = {
        "source": f"mirror:{dataset.meta.get('source', 'dataset')}",
        "options": {"copies": copies, "cross_rate": float(cross_rate), "rewire": rewire,
                    "seed": int(seed), "rewired_interactions": int(n_rewired),
                    "group_hint": bool(group_hint),
                    "source_fingerprint": dataset.fingerprint},
    }
    user_ids = np.concatenate([np.char.add(p, dataset.users.ids.astype(str)) for p in prefixes])
    item_ids = np.concatenate([np.char.add(p, dataset.items.ids.astype(str)) for p in prefixes])
    return Dataset(
        interactions=interactions, users=IdMap(user_ids), items=IdMap(item_ids),
        user_groups=user_groups, item_groups=np.repeat(np.arange(copies), dataset.n_items),
        group_names=names, user_features=features, item_info=info, timestamps=timestamps,
        meta=meta,
    )


#: entries of the mirrored matrix: rows, columns, values and timestamps (or None)
_Entries = tuple[np.ndarray, np.ndarray, np.ndarray, "np.ndarray | None"]


def _tiled_entries(dataset: Dataset, copies: int) -> _Entries:
    """Every stored interaction once per copy, copy ``k`` shifted to its own block."""
    n_users, n_items = dataset.n_users, dataset.n_items
    base = dataset.interactions.tocoo()
    rows = np.concatenate([base.row + k * n_users for k in range(copies)]).astype(np.int64)
    cols = np.concatenate([base.col + k * n_items for k in range(copies)]).astype(np.int64)
    vals = np.tile(base.data, copies).astype(np.float32)
    stamps = None
    if dataset.timestamps is not None:
        stamps = np.tile(aligned_timestamps(dataset, dataset.interactions), copies)
    return rows, cols, vals, stamps


def _rewired(rng: np.random.Generator, dataset: Dataset, entries: _Entries, copies: int,
             cross_rate: float, rewire: str) -> tuple[_Entries, int]:
    """Move a ``cross_rate`` share of each copy's entries to another copy's items.

    Returns the new entries (one per user and item) and how many were rewired.
    """
    rows, cols, vals, stamps = entries
    n_items, nnz = dataset.n_items, dataset.interactions.nnz
    per_copy = round(cross_rate * nnz)
    chosen = np.concatenate([k * nnz + rng.choice(nnz, size=per_copy, replace=False)
                             for k in range(copies)])
    source_copy = chosen // nnz
    target_copy = (source_copy + rng.integers(1, copies, size=len(chosen))) % copies
    original_item = cols[chosen] - source_copy * n_items
    if rewire == "same":
        new_item = original_item
    else:
        popularity = np.asarray(dataset.interactions.getnnz(axis=0), dtype=np.float64)
        new_item = rng.choice(n_items, size=len(chosen), p=popularity / popularity.sum())
    cols[chosen] = target_copy * n_items + new_item
    # a rewired pair may repeat one the user already has: keep one entry (the max value)
    keys = rows * (copies * n_items) + cols
    order = np.lexsort((-vals, keys))
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[order][1:] != keys[order][:-1]
    keep = order[first]
    stamps = stamps[keep] if stamps is not None else None
    return (rows[keep], cols[keep], vals[keep], stamps), len(chosen)


def _mirror_matrices(entries: _Entries, n_users: int, n_items: int
                     ) -> tuple[sp.csr_matrix, sp.csr_matrix | None]:
    """Interactions and timestamps (or None) of the mirrored entries, as CSR."""
    rows, cols, vals, stamps = entries
    shape = (n_users, n_items)
    interactions = as_csr(sp.coo_matrix((vals, (rows, cols)), shape=shape))
    timestamps = None
    if stamps is not None:
        timestamps = sp.csr_matrix((stamps.astype(np.int64), (rows, cols)), shape=shape)
        timestamps.sort_indices()
    return interactions, timestamps


def _with_source_group(frame: pd.DataFrame | None, groups: np.ndarray | None,
                       dataset: Dataset, n_rows: int) -> pd.DataFrame:
    """A copy of ``frame`` (or an empty one) plus ``source_group`` where the data set has
    groups for these rows; code -1 becomes ``""``."""
    out = (frame.reset_index(drop=True).copy() if frame is not None
           else pd.DataFrame(index=range(n_rows)))
    if groups is not None and dataset.group_names:
        source_names = np.asarray(list(dataset.group_names) + [""], dtype=object)
        out["source_group"] = source_names[np.asarray(groups)]
    return out
