"""Top-k by dot product, in chunks of queries, never a dense queries x items matrix.

Ties are broken deterministically: higher score first, then lower item index.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def topk_dot(
    queries: np.ndarray,
    items: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None = None,
    chunk_size: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items by ``queries @ items.T`` per row.

    Parameters
    ----------
    queries : ndarray of shape (n_queries, dim)
    items : ndarray of shape (n_items, dim)
    k : int
    exclude : csr_matrix of shape (n_queries, n_items), optional
        Non-zero entries are never recommended (seen items).

    Returns
    -------
    item_ids : ndarray of shape (n_queries, k), int64
    scores : ndarray of shape (n_queries, k), float32 (-inf where fewer than k are allowed)
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    items = np.ascontiguousarray(items, dtype=np.float32)
    n, n_items = len(queries), len(items)
    out_ids = np.empty((n, k), dtype=np.int64)
    out_scores = np.empty((n, k), dtype=np.float32)
    items_t = np.ascontiguousarray(items.T)
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        scores = queries[start:stop] @ items_t
        if exclude is not None:
            block = exclude[start:stop].tocoo()
            scores[block.row, block.col] = -np.inf
        ids, vals = _topk_rows(scores, k)
        out_ids[start:stop] = ids
        out_scores[start:stop] = vals
    return out_ids, out_scores


def _topk_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    n_items = scores.shape[1]
    if k < n_items:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(n_items), scores.shape).copy()
    vals = np.take_along_axis(scores, part, axis=1)
    # boundary ties: the partition may keep a higher index tied with the k-th score
    kth = vals.min(axis=1)
    n_at_or_above = (scores >= kth[:, None]).sum(axis=1)
    for row in np.flatnonzero(n_at_or_above > k):
        above = np.flatnonzero(scores[row] > kth[row])
        tied = np.flatnonzero(scores[row] == kth[row])[: k - len(above)]
        part[row] = np.concatenate([above, tied])
        vals[row] = scores[row, part[row]]
    order = _row_lexsort(vals, part)
    return np.take_along_axis(part, order, 1), np.take_along_axis(vals, order, 1)


def _row_lexsort(vals: np.ndarray, ids: np.ndarray) -> np.ndarray:
    # sort by item index, then stably by descending score
    by_id = np.argsort(ids, axis=1, kind="stable")
    v = np.take_along_axis(vals, by_id, 1)
    by_score = np.argsort(-v, axis=1, kind="stable")
    return np.take_along_axis(by_id, by_score, 1)
