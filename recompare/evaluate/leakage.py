"""Folding: how often a model recommends across groups that the data keeps apart.

Xin et al. (RecSys 2017) call *folding* the overlap, in embedding space, of groups of
users and items that have nothing to do with each other.  It shows up as cross-group
recommendations.  Here, with ``g(q)`` a query's group and ``g(i)`` an item's group
(-1 unknown), for queries and items of known group (definitions in
``docs/methodology.md``):

* ``leakage@k``: the share of a query's top-k items with ``g(i) != g(q)``, averaged
  over queries (rank-based, hence comparable across model families).
* ``ground_truth_cross_share``: the same share over the query's held-out items: real
  cross-group taste, which a perfect model would also "leak".
* ``excess_leakage@k`` = ``leakage@k - ground_truth_cross_share``.
* ``spurious@k``: the share of top-k items that are cross-group *and* were never
  interacted with (in training) by any user of the query's group.
* confusion matrices: query group x recommended item group, row-normalised, beside the
  same matrix for the held-out interactions.
* ``folding_auc`` (score-based, optional): for a query, the probability that a random
  cross-group item scores above a random in-group item (ties count half), averaged
  over a sample of queries.  0 = the groups are perfectly separated, 0.5 = the model
  cannot tell them apart.  Being a per-query rank statistic, it does not depend on the
  scale of the scores, so it is comparable across families; but it weighs the whole
  catalogue, not just the top, so it can disagree with leakage@k.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from .metrics import check_ks, relevance


def _known_slots(ids: np.ndarray, query_groups: np.ndarray, item_groups: np.ndarray,
                 valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    rec_groups = item_groups[ids]
    known = (rec_groups >= 0) & (query_groups >= 0)[:, None]
    if valid is not None:
        known &= valid
    return rec_groups, known


def leakage_at_k(ids: np.ndarray, query_groups: np.ndarray, item_groups: np.ndarray,
                 ks: Sequence[int], valid: np.ndarray | None = None) -> dict:
    """Mean share of cross-group items in the top-k lists.

    Parameters
    ----------
    ids : ndarray of shape (n_queries, K), int
    query_groups : ndarray of shape (n_queries,), int (-1 unknown)
    item_groups : ndarray of shape (n_items,), int (-1 unknown)
    ks : sequence of int, each <= K
    valid : bool ndarray of shape (n_queries, K), optional

    Returns
    -------
    dict ``"leakage@k"`` -> float, plus ``"leakage_queries@k"`` -> int (queries with a
    known group and at least one top-k item of known group; the others are skipped).
    """
    ids = np.asarray(ids, dtype=np.int64)
    query_groups = np.asarray(query_groups, dtype=np.int64)
    item_groups = np.asarray(item_groups, dtype=np.int64)
    rec_groups, known = _known_slots(ids, query_groups, item_groups, valid)
    cross = known & (rec_groups != query_groups[:, None])
    n_known = np.cumsum(known, axis=1)
    n_cross = np.cumsum(cross, axis=1)
    out: dict = {}
    for k in check_ks(ks):
        denominator = n_known[:, k - 1]
        use = denominator > 0
        share = n_cross[use, k - 1] / denominator[use]
        out[f"leakage@{k}"] = float(share.mean()) if use.any() else 0.0
        out[f"leakage_queries@{k}"] = int(use.sum())
    return out


def ground_truth_cross_share(relevant: sp.spmatrix, query_groups: np.ndarray,
                             item_groups: np.ndarray) -> float:
    """Mean over queries of the share of their held-out items in another group.

    Parameters
    ----------
    relevant : sparse matrix of shape (n_queries, n_items)
    query_groups : ndarray of shape (n_queries,)
    item_groups : ndarray of shape (n_items,)
    """
    rel = relevance(relevant)
    rows = np.repeat(np.arange(rel.shape[0]), np.diff(rel.indptr))
    qg = np.asarray(query_groups, dtype=np.int64)[rows]
    ig = np.asarray(item_groups, dtype=np.int64)[rel.indices]
    known = (qg >= 0) & (ig >= 0)
    n_known = np.bincount(rows[known], minlength=rel.shape[0])
    n_cross = np.bincount(rows[known & (qg != ig)], minlength=rel.shape[0])
    use = n_known > 0
    return float((n_cross[use] / n_known[use]).mean()) if use.any() else 0.0


def _row_normalise(counts: np.ndarray) -> np.ndarray:
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts, dtype=np.float64),
                     where=totals > 0)


def confusion(ids: np.ndarray, k: int, query_groups: np.ndarray, item_groups: np.ndarray,
              n_groups: int, valid: np.ndarray | None = None) -> np.ndarray:
    """Query group x recommended item group over the top-k lists, row-normalised.

    Returns
    -------
    ndarray of shape (n_groups, n_groups), float64; row g sums to 1, or to 0 when no
    query of group g was evaluated.
    """
    ids = np.asarray(ids, dtype=np.int64)[:, :k]
    qg = np.asarray(query_groups, dtype=np.int64)
    rec_groups, known = _known_slots(ids, qg, np.asarray(item_groups, dtype=np.int64),
                                     None if valid is None else valid[:, :k])
    rows = np.broadcast_to(qg[:, None], ids.shape)[known]
    counts = np.bincount(rows * n_groups + rec_groups[known],
                         minlength=n_groups * n_groups).reshape(n_groups, n_groups)
    return _row_normalise(counts.astype(np.float64))


def ground_truth_confusion(relevant: sp.spmatrix, query_groups: np.ndarray,
                           item_groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Query group x item group of the held-out interactions, row-normalised."""
    rel = relevance(relevant)
    rows = np.repeat(np.arange(rel.shape[0]), np.diff(rel.indptr))
    qg = np.asarray(query_groups, dtype=np.int64)[rows]
    ig = np.asarray(item_groups, dtype=np.int64)[rel.indices]
    known = (qg >= 0) & (ig >= 0)
    counts = np.bincount(qg[known] * n_groups + ig[known],
                         minlength=n_groups * n_groups).reshape(n_groups, n_groups)
    return _row_normalise(counts.astype(np.float64))


def majority_groups(history: sp.spmatrix, item_groups: np.ndarray) -> np.ndarray:
    """The group of each row of ``history``: the item group it touches most.

    Parameters
    ----------
    history : sparse matrix of shape (n_rows, n_items)
        Every stored entry counts once, whatever its value.
    item_groups : ndarray of shape (n_items,), int
        Group code per item, -1 for unknown (never counted).

    Returns
    -------
    ndarray of shape (n_rows,), int64
        Majority group code; ties go to the lowest code; -1 for a row without an
        item of known group.
    """
    groups = np.asarray(item_groups, dtype=np.int64)
    n_groups = int(groups.max(initial=-1)) + 1
    out = np.full(history.shape[0], -1, dtype=np.int64)
    if n_groups == 0:
        return out
    known = groups >= 0
    onehot = sp.csr_matrix(
        (np.ones(int(known.sum()), np.float32), (np.flatnonzero(known), groups[known])),
        shape=(len(groups), n_groups),
    )
    binary = sp.csr_matrix(history, copy=True)
    binary.data = np.ones_like(binary.data)
    counts = np.asarray((binary @ onehot).todense())
    has = counts.sum(axis=1) > 0
    out[has] = counts[has].argmax(axis=1)
    return out


def group_item_counts(train: sp.spmatrix, user_groups: np.ndarray, n_groups: int
                      ) -> np.ndarray:
    """How many training users of each group interacted with each item.

    Returns
    -------
    ndarray of shape (n_groups, n_items), float64
    """
    binary = relevance(train)
    groups = np.asarray(user_groups, dtype=np.int64)
    known = np.flatnonzero(groups >= 0)
    onehot = sp.csr_matrix((np.ones(len(known), np.float32), (groups[known], known)),
                           shape=(n_groups, binary.shape[0]))
    return np.asarray((onehot @ binary).todense(), dtype=np.float64)


def spurious(ids: np.ndarray, ks: Sequence[int], query_groups: np.ndarray,
             item_groups: np.ndarray, counts_by_group: np.ndarray,
             valid: np.ndarray | None = None, top: int = 10) -> tuple[dict, list[dict]]:
    """Cross-group recommendations that no user of the query's group ever touched.

    Parameters
    ----------
    ids : ndarray of shape (n_queries, K)
    ks : sequence of int
    query_groups : ndarray of shape (n_queries,)
    item_groups : ndarray of shape (n_items,)
    counts_by_group : ndarray of shape (n_groups, n_items)
        From :func:`group_item_counts` on the training matrix.
    valid : bool ndarray of shape (n_queries, K), optional
    top : int
        How many of the most spurious (query group, item) pairs to list, taken from
        the top ``max(ks)`` lists.

    Returns
    -------
    shares : dict ``"spurious@k"`` -> mean share of such items in the top-k lists
    worst : list of dict
        ``query_group``, ``item`` (dense index), ``item_group``, ``n_queries`` (how many
        queries of that group got it), ``best_rank`` and ``mean_rank`` (1-based),
        ordered by best rank, then by how many queries got it.
    """
    ids = np.asarray(ids, dtype=np.int64)
    qg = np.asarray(query_groups, dtype=np.int64)
    ig = np.asarray(item_groups, dtype=np.int64)
    rec_groups, known = _known_slots(ids, qg, ig, valid)
    if counts_by_group.shape[0] == 0:
        untouched = np.zeros(ids.shape, dtype=bool)
    else:
        safe_qg = np.clip(qg, 0, counts_by_group.shape[0] - 1)
        untouched = counts_by_group[safe_qg[:, None], ids] == 0
    bad = known & (rec_groups != qg[:, None]) & untouched
    n_known = np.cumsum(known, axis=1)
    n_bad = np.cumsum(bad, axis=1)
    shares = {}
    for k in check_ks(ks):
        use = n_known[:, k - 1] > 0
        shares[f"spurious@{k}"] = (float((n_bad[use, k - 1] / n_known[use, k - 1]).mean())
                                   if use.any() else 0.0)
    rows, ranks = np.nonzero(bad)
    if len(rows) == 0 or top <= 0:
        return shares, []
    n_items = len(ig)
    pair = qg[rows] * n_items + ids[rows, ranks]
    uniq, inverse = np.unique(pair, return_inverse=True)
    n_queries = np.bincount(inverse)
    best = np.full(len(uniq), np.iinfo(np.int64).max)
    np.minimum.at(best, inverse, ranks)
    mean = np.bincount(inverse, weights=ranks) / n_queries
    order = np.lexsort((uniq, -n_queries, best))[:top]
    worst = [
        {
            "query_group": int(uniq[j] // n_items),
            "item": int(uniq[j] % n_items),
            "item_group": int(ig[uniq[j] % n_items]),
            "n_queries": int(n_queries[j]),
            "best_rank": int(best[j]) + 1,
            "mean_rank": float(mean[j]) + 1.0,
        }
        for j in order
    ]
    return shares, worst


def folding_auc(query_embeddings: np.ndarray, item_embeddings: np.ndarray,
                query_groups: np.ndarray, item_groups: np.ndarray,
                exclude: sp.spmatrix | None = None, chunk_size: int = 256) -> float | None:
    """Mean probability that a cross-group item outscores an in-group item.

    Parameters
    ----------
    query_embeddings : ndarray of shape (n_queries, dim)
        Usually a sample of queries: each costs a sort of its in-group scores.
    item_embeddings : ndarray of shape (n_items, dim)
    query_groups : ndarray of shape (n_queries,)
    item_groups : ndarray of shape (n_items,)
    exclude : sparse matrix of shape (n_queries, n_items), optional
        Items left out of the comparison (seen in training).

    Returns
    -------
    float in [0, 1], or None when no query has both in-group and cross-group items.
    """
    q = np.asarray(query_embeddings, dtype=np.float64)
    items = np.asarray(item_embeddings, dtype=np.float64)
    qg = np.asarray(query_groups, dtype=np.int64)
    ig = np.asarray(item_groups, dtype=np.int64)
    excl = None if exclude is None else sp.csr_matrix(exclude)
    values = []
    for start in range(0, len(q), chunk_size):
        stop = min(len(q), start + chunk_size)
        scores = q[start:stop] @ items.T
        for row in range(stop - start):
            group = qg[start + row]
            if group < 0:
                continue
            allowed = ig >= 0
            if excl is not None:
                allowed[excl.indices[excl.indptr[start + row]: excl.indptr[start + row + 1]]] = False
            inside = np.sort(scores[row, allowed & (ig == group)])
            cross = scores[row, allowed & (ig != group)]
            if len(inside) == 0 or len(cross) == 0:
                continue
            # Mann-Whitney U: in-group items strictly below each cross item, ties half
            below = np.searchsorted(inside, cross, side="left")
            at_or_below = np.searchsorted(inside, cross, side="right")
            wins = below.sum() + 0.5 * (at_or_below - below).sum()
            values.append(wins / (len(cross) * len(inside)))
    return float(np.mean(values)) if values else None
