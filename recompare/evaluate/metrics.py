"""Accuracy of top-k lists against held-out interactions, for several k at once.

Every metric is computed from one top-``max(ks)`` list per query, with array and
sparse operations only (no Python loop over users), so 100k+ users take seconds.
Definitions (see ``docs/methodology.md``), for a query with relevant set ``R``
(its held-out items, ``|R| > 0``) and top-k list ``i_1..i_k``, ``hit_r = [i_r in R]``:

* ``recall@k``      = sum_r hit_r / |R|
* ``recall_norm@k`` = sum_r hit_r / min(k, |R|)        (Liang et al.; Rendle et al.)
* ``precision@k``   = sum_r hit_r / k
* ``ndcg@k``        = DCG / IDCG, DCG = sum_r hit_r / log2(r + 1),
  IDCG = sum_{r <= min(k, |R|)} 1 / log2(r + 1)
* ``map@k``         = sum_r hit_r * precision@r / min(k, |R|)
* ``hit_rate@k``    = [sum_r hit_r > 0]
* ``coverage@k``    = distinct items in all evaluated top-k lists / n_items

Per-query values are averaged over queries with ``|R| > 0``; the others are skipped and
counted.  A slot whose score is ``-inf`` (an excluded item padding a list when fewer
than k items were allowed) is not a recommendation: never a hit, never covered.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from ..errors import RecompareError
from .results import Accuracy

#: metric names, in display order; the JSON key of a metric at k is ``f"{name}@{k}"``
METRICS = ("recall", "recall_norm", "precision", "ndcg", "map", "hit_rate", "coverage")


def check_ks(ks: Sequence[int], n_items: int | None = None) -> tuple[int, ...]:
    """Validated, de-duplicated, ascending cut-offs; raises :class:`RecompareError`."""
    out = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise RecompareError(f"k must be a positive integer, got {k!r}")
        if n_items is not None and k > n_items:
            raise RecompareError(f"k={k} is larger than the catalogue ({n_items} items)")
        out.append(int(k))
    if not out:
        raise RecompareError("give at least one cut-off k")
    return tuple(sorted(set(out)))


def relevance(matrix: sp.spmatrix) -> sp.csr_matrix:
    """Binary relevance: stored entries with a positive value, as canonical CSR."""
    rel = sp.csr_matrix(matrix, copy=True)
    rel.data = (rel.data > 0).astype(np.float32)
    rel.eliminate_zeros()
    rel.sum_duplicates()
    rel.sort_indices()
    return rel


def hit_matrix(ids: np.ndarray, relevant: sp.spmatrix, valid: np.ndarray | None = None
               ) -> np.ndarray:
    """Whether each recommended item is relevant to its query.

    Parameters
    ----------
    ids : ndarray of shape (n_queries, K), int
    relevant : sparse matrix of shape (n_queries, n_items); positive entries are relevant
    valid : bool ndarray of shape (n_queries, K), optional
        False for slots that are not recommendations (``-inf`` scores).

    Returns
    -------
    ndarray of shape (n_queries, K), bool
    """
    rel = relevance(relevant)
    n, n_items = rel.shape
    if ids.shape[0] != n:
        raise RecompareError(f"{ids.shape[0]} top-k rows for {n} queries")
    # one sorted key per relevant (query, item) pair; membership by binary search
    keys = np.repeat(np.arange(n, dtype=np.int64), np.diff(rel.indptr)) * n_items
    keys += rel.indices.astype(np.int64)
    wanted = np.arange(n, dtype=np.int64)[:, None] * n_items + np.asarray(ids, dtype=np.int64)
    if len(keys) == 0:
        return np.zeros(ids.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    hits = keys[pos] == wanted
    if valid is not None:
        hits &= valid
    return hits


def per_query(ids: np.ndarray, relevant: sp.spmatrix, ks: Sequence[int],
              valid: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-query metric values for the queries that have relevant items.

    Returns
    -------
    values : dict ``"name@k"`` -> ndarray of shape (n_evaluated,), float64
        All metrics of :data:`METRICS` except ``coverage`` (a catalogue-level figure).
    evaluated : ndarray of int
        Row indices of the queries with at least one relevant item.
    """
    ks = check_ks(ks)
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.shape[1] < ks[-1]:
        raise RecompareError(f"top-k lists of shape {ids.shape} are shorter than k={ks[-1]}")
    rel = relevance(relevant)
    n_rel_all = np.diff(rel.indptr)
    evaluated = np.flatnonzero(n_rel_all > 0)
    big_k = ks[-1]
    hits = hit_matrix(ids[:, :big_k], rel, None if valid is None else valid[:, :big_k])
    hits = hits[evaluated].astype(np.float64)
    n_rel = n_rel_all[evaluated].astype(np.float64)
    ranks = np.arange(1, big_k + 1, dtype=np.float64)
    discount = 1.0 / np.log2(ranks + 1.0)
    cum_hits = np.cumsum(hits, axis=1)
    cum_dcg = np.cumsum(hits * discount, axis=1)
    ideal = np.cumsum(discount)
    cum_ap = np.cumsum(hits * (cum_hits / ranks), axis=1)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        n_hits = cum_hits[:, k - 1]
        cap = np.minimum(n_rel, k)
        out[f"recall@{k}"] = n_hits / n_rel
        out[f"recall_norm@{k}"] = n_hits / cap
        out[f"precision@{k}"] = n_hits / k
        out[f"ndcg@{k}"] = cum_dcg[:, k - 1] / ideal[cap.astype(np.int64) - 1]
        out[f"map@{k}"] = cum_ap[:, k - 1] / cap
        out[f"hit_rate@{k}"] = (n_hits > 0).astype(np.float64)
    return out, evaluated


def coverage(ids: np.ndarray, k: int, n_items: int, valid: np.ndarray | None = None) -> float:
    """Share of the catalogue that appears in at least one top-k list."""
    top = np.asarray(ids)[:, :k]
    if valid is not None:
        top = top[valid[:, :k]]
    if n_items == 0:
        return 0.0
    seen = np.zeros(n_items, dtype=bool)
    seen[top.ravel()] = True
    return float(seen.sum() / n_items)


def accuracy(ids: np.ndarray, relevant: sp.spmatrix, ks: Sequence[int],
             valid: np.ndarray | None = None) -> Accuracy:
    """All accuracy metrics, averaged over queries with relevant items.

    Parameters
    ----------
    ids : ndarray of shape (n_queries, K), int
        Top-K item indices per query, K >= max(ks).
    relevant : sparse matrix of shape (n_queries, n_items)
        Held-out interactions; positive entries are relevant.
    ks : sequence of int
    valid : bool ndarray of shape (n_queries, K), optional
        False for padding slots (``-inf`` scores).

    Returns
    -------
    Accuracy
        ``n_queries`` (int, queries evaluated), ``n_skipped`` (int, queries without
        relevant items), ``metrics`` (``"name@k"`` -> float, every name in
        :data:`METRICS`) and ``stderr`` (``"name@k"`` -> standard error of the mean over
        queries; coverage has none).  Values are NaN-free: with no evaluated query every
        mean is 0.0.
    """
    ks = check_ks(ks)
    n_items = relevant.shape[1]
    values, evaluated = per_query(ids, relevant, ks, valid)
    n = len(evaluated)
    metrics: dict[str, float] = {}
    stderr: dict[str, float] = {}
    for k in ks:
        for name in METRICS:
            key = f"{name}@{k}"
            if name == "coverage":
                metrics[key] = coverage(np.asarray(ids)[evaluated], k, n_items,
                                        None if valid is None else valid[evaluated])
                continue
            vals = values[key]
            metrics[key] = float(vals.mean()) if n else 0.0
            stderr[key] = float(vals.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    return Accuracy(n_queries=int(n), n_skipped=int(len(ids) - n), metrics=metrics,
                    stderr=stderr)


def embedding_recall(queries: np.ndarray, items: np.ndarray, relevant: sp.spmatrix, k: int,
                     exclude: sp.spmatrix | None = None) -> float:
    """Mean ``recall_norm@k`` of dot-product top-k lists: the validation recall of a
    model during training (early stopping, model selection).

    Parameters
    ----------
    queries : ndarray of shape (n_queries, dim)
        Query embeddings (user factors, or a query tower's output).
    items : ndarray of shape (n_items, dim)
        Item embeddings.
    relevant : sparse matrix of shape (n_queries, n_items)
        Validation interactions; positive entries are relevant.
    k : int
        Cut-off; capped at ``n_items``.
    exclude : sparse matrix of shape (n_queries, n_items), optional
        Items that may not be recommended (the training rows of the queries).

    Returns
    -------
    float
        Mean over queries with relevant items of hits@k / min(k, |relevant|); 0.0
        when no query has any.
    """
    from ..models.topk import topk_dot  # the metrics themselves need no torch

    k = min(int(k), int(np.asarray(items).shape[0]))
    ids, _ = topk_dot(queries, items, k, exclude=exclude)
    values, evaluated = per_query(ids, relevant, (k,))
    return float(values[f"recall_norm@{k}"].mean()) if len(evaluated) else 0.0


def split_key(key: str) -> tuple[str, int]:
    """``"recall@20"`` -> ``("recall", 20)``."""
    name, _, k = key.rpartition("@")
    return name, int(k)
