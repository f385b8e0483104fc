"""Approximate top-k from an inverted-file index (the optional faiss extra).

Real catalogues are served from an approximate nearest-neighbour index rather than by
scoring every item; this module builds one from item embeddings and measures its recall
against exact top-k (:mod:`recompare.models.topk`). Without faiss every entry point raises
a one-line error naming the extra to install.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import RecompareError
from .topk import check_k, seen_pairs, topk_dot

#: what to install for approximate serving; named in the error when faiss is missing
ANN_EXTRA = "recompare[ann]"


def ann_missing_message() -> str:
    """The one line that says what to install for approximate top-k."""
    return f"approximate top-k needs faiss: pip install '{ANN_EXTRA}' (or faiss-cpu)"


def _faiss():
    """The faiss module, or a one-line error naming the extra to install."""
    try:
        import faiss
    except ImportError:
        raise RecompareError(ann_missing_message()) from None
    return faiss


def ann_available() -> bool:
    """Whether faiss can be imported (approximate top-k is an optional extra)."""
    try:
        _faiss()
    except RecompareError:
        return False
    return True


@contextmanager
def faiss_threads(threads: int | None) -> Iterator[None]:
    """faiss's OpenMP thread count set to ``threads`` for the body, then restored."""
    faiss = _faiss()
    previous = faiss.omp_get_max_threads()
    if threads:
        faiss.omp_set_num_threads(int(threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


@dataclass
class AnnIndex:
    """An inverted-file (IVF-Flat, inner product) index over item embeddings.

    Attributes
    ----------
    index : faiss.IndexIVFFlat
    n_items, n_lists : int
    n_probe : int
        Lists scanned per query, chosen on validation queries by :func:`build_ann_index`.
    validation_recall : float
        Recall@k against exact top-k on those validation queries at ``n_probe``.
    """

    index: Any
    n_items: int
    n_lists: int
    n_probe: int
    validation_recall: float

    @property
    def nbytes(self) -> int:
        """Bytes of the stored vectors, ids and centroids (faiss's own overhead aside)."""
        dim = self.index.d
        return int(self.n_items * (dim * 4 + 8) + self.n_lists * dim * 4)


def build_ann_index(items: np.ndarray, validation_queries: np.ndarray, k: int = 10,
                    target_recall: float = 0.95, seed: int = 0,
                    threads: int | None = None) -> AnnIndex:
    """Train an IVF index on ``items`` and pick the fewest lists to probe that reach
    ``target_recall`` (recall@k against exact top-k) on ``validation_queries``.

    About ``2 sqrt(n_items)`` lists (at least 39 training points per list, faiss's
    minimum); k-means trains on at most 64 points per list, sampled with ``seed``.
    Queries used to time or score the index must be different ones (select on
    validation, report on test).
    """
    faiss = _faiss()
    items = np.ascontiguousarray(items, dtype=np.float32)
    n_items, dim = items.shape
    check_k(k, n_items)
    n_lists = int(max(1, min(round(2 * np.sqrt(n_items)), n_items // 39)))
    rng = np.random.default_rng(seed)
    train_rows = np.sort(rng.choice(n_items, size=min(n_items, 64 * n_lists), replace=False))
    with faiss_threads(threads):
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, n_lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = int(seed)
        index.cp.niter = 10  # enough for routing; halves the build of 10^6 items
        index.train(items[train_rows])
        index.add(items)
        exact, _ = topk_dot(validation_queries, items, k)
        n_probe, recall = 1, 0.0
        while True:
            index.nprobe = n_probe
            _, found = index.search(np.ascontiguousarray(validation_queries, np.float32), k)
            recall = recall_against(found, exact)
            if recall >= target_recall or n_probe >= n_lists:
                break
            n_probe = min(n_lists, n_probe * 2)
    return AnnIndex(index=index, n_items=n_items, n_lists=n_lists, n_probe=n_probe,
                    validation_recall=recall)


def ann_search(ann: AnnIndex, queries: np.ndarray, k: int,
               exclude: sp.spmatrix | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top-k of ``queries`` from ``ann``, seen items (``exclude``) removed.

    Seen items are removed by asking the index for k + (most seen in a row)
    candidates; rows left with fewer than k are padded with id -1 and score -inf.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    check_k(k, ann.n_items)
    seen = seen_pairs(exclude, (len(queries), ann.n_items))
    extra = int(np.diff(seen[0]).max()) if seen is not None and len(queries) else 0
    wanted = min(ann.n_items, int(k) + extra)
    ann.index.nprobe = ann.n_probe
    scores, ids = ann.index.search(queries, wanted)
    if seen is None:
        return ids[:, :k].astype(np.int64), scores[:, :k]
    out_ids = np.full((len(queries), k), -1, dtype=np.int64)
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    indptr, indices = seen
    for row in range(len(queries)):
        keep = ~np.isin(ids[row], indices[indptr[row]: indptr[row + 1]]) & (ids[row] >= 0)
        picked = np.flatnonzero(keep)[:k]
        out_ids[row, : len(picked)] = ids[row, picked]
        out_scores[row, : len(picked)] = scores[row, picked]
    return out_ids, out_scores


def recall_against(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each row of ``exact`` ids that ``found`` contains (recall@k)."""
    if not len(exact):
        return 1.0
    hits = sum(len(np.intersect1d(f[f >= 0], e)) for f, e in zip(found, exact))
    return float(hits / exact.size)
