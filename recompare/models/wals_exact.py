"""Exact WALS row solves: one ``k x k`` system per row, by batched Cholesky.

Used by the ``cholesky`` solver for both half-sweeps and by
:meth:`recompare.models.wals.WALS.embed_new_users` for fold-in.  Imports torch at the top.
"""
from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
import torch


def exact_rows(matrix: sp.csr_matrix, fixed, gram, w, t, w0: float, lam: np.ndarray,
               pool: ThreadPoolExecutor | None = None, block_rows: int = 512):
    """Exact solutions of ``A_r x_r = b_r`` for every row of ``matrix``.

    Parameters
    ----------
    matrix : csr_matrix of shape (n_rows, n_cols)
    fixed : tensor of shape (n_cols, k), the other side's factors
    gram : tensor of shape (k, k), ``fixed^T fixed``
    w, t : float or array/tensor of shape (nnz,), observed weights and targets
    w0 : float
    lam : ndarray of shape (n_rows,)
    pool : ThreadPoolExecutor, optional
        Blocks of rows are solved in parallel by its threads.

    Returns
    -------
    tensor of shape (n_rows, k); rows without entries are zero.
    """
    dtype = fixed.dtype
    n_rows, k = matrix.shape[0], fixed.shape[1]
    out = torch.zeros((n_rows, k), dtype=dtype)
    w_np = w if isinstance(w, float) else to_numpy(w)
    t_np = t if isinstance(t, float) else to_numpy(t)
    wt = w_np * t_np
    cprime = w_np - w0
    eye = torch.eye(k, dtype=dtype)
    counts = np.diff(matrix.indptr)
    w0_gram = w0 * gram

    def solve(start: int) -> None:
        stop = min(n_rows, start + block_rows)
        lo, hi = int(matrix.indptr[start]), int(matrix.indptr[stop])
        if hi == lo:
            return
        indptr = matrix.indptr[start:stop + 1] - lo
        indices = matrix.indices[lo:hi]
        c_blk = cprime if isinstance(cprime, float) else cprime[lo:hi]
        wt_blk = wt if isinstance(wt, float) else wt[lo:hi]
        active_np = counts[start:stop] > 0
        grams = weighted_grams(indptr, indices, c_blk, fixed)
        wt_vals = np.full(hi - lo, wt_blk) if isinstance(wt_blk, float) else wt_blk
        pattern = csr_tensor(
            torch.from_numpy(indptr.astype(np.int64)), torch.from_numpy(indices.astype(np.int64)),
            torch.from_numpy(np.ascontiguousarray(wt_vals)).to(dtype),
            (stop - start, matrix.shape[1]))
        rhs = pattern @ fixed
        active = torch.from_numpy(active_np)
        lam_blk = torch.from_numpy(np.asarray(lam[start:stop][active_np], dtype=np.float64))
        a = grams[active]
        a += w0_gram
        a += lam_blk.to(dtype)[:, None, None] * eye
        x = _solve_systems(a, rhs[active], unregularized=lam_blk <= 0)
        out[start:stop][active] = x

    starts = range(0, n_rows, block_rows)
    if pool is None:
        for start in starts:
            solve(start)
    else:
        list(pool.map(solve, starts))
    return out


def _solve_systems(a, rhs, unregularized):
    """Solutions of the SPD systems ``a[r] x_r = rhs[r]``, tensor of shape (n, k).

    Cholesky where it is reliable, else (singular or round-off indefinite systems: w0 = 0,
    lambda = 0, few entries) the minimum-norm least-squares solution.
    """
    k = a.shape[1]
    chol, info = torch.linalg.cholesky_ex(a)
    x = torch.cholesky_solve(rhs[:, :, None], chol)[:, :, 0]
    # a factorisation can "succeed" on a singular matrix through round-off:
    # a pivot ratio below sqrt(k eps) means a condition number beyond 1/(k eps)
    pivots = torch.diagonal(chol, dim1=1, dim2=2).abs()
    ill = pivots.min(1).values <= pivots.max(1).values * math.sqrt(k * torch.finfo(a.dtype).eps)
    # without regularization the system may be singular (fewer entries than
    # factors): those rows always take the minimum-norm solution
    bad = (info != 0) | ill | ~torch.isfinite(x).all(1) | unregularized
    if bad.any():
        x[bad] = (torch.linalg.pinv(a[bad], hermitian=True) @ rhs[bad][:, :, None])[:, :, 0]
    return x


def weighted_grams(indptr: np.ndarray, indices: np.ndarray, weights, factors,
                   segment: int = 1024, budget: int = 1 << 22):
    """``sum_{c in row} weight_c f_c f_c^T`` per row, tensor of shape (n_rows, k, k).

    Rows are cut into segments of at most ``segment`` entries, segments are
    bucketed by length (powers of two, so padding at most doubles the work) and
    each bucket is one batched matrix product of at most ``budget`` gathered values.
    """
    n_rows = len(indptr) - 1
    k = factors.shape[1]
    out = torch.zeros((n_rows, k, k), dtype=factors.dtype)
    lengths = np.diff(indptr).astype(np.int64)
    n_seg = (lengths + segment - 1) // segment
    seg_row = np.repeat(np.arange(n_rows), n_seg)
    if len(seg_row) == 0:
        return out
    first = np.repeat(np.cumsum(n_seg) - n_seg, n_seg)
    seg_start = indptr[seg_row].astype(np.int64) + (np.arange(len(seg_row)) - first) * segment
    seg_len = np.minimum(segment, indptr[seg_row + 1].astype(np.int64) - seg_start)
    bucket = np.ceil(np.log2(np.maximum(seg_len, 1))).astype(np.int64)
    weight_arr = None if isinstance(weights, float) else np.asarray(weights)
    indices64 = indices.astype(np.int64)
    for level in np.unique(bucket):
        width = 1 << int(level)
        members = np.flatnonzero(bucket == level)
        per_batch = max(1, budget // (width * k))
        pos = np.arange(width)
        for b0 in range(0, len(members), per_batch):
            sel = members[b0:b0 + per_batch]
            idx = seg_start[sel, None] + pos[None, :]
            mask = pos[None, :] < seg_len[sel, None]
            idx = np.where(mask, idx, 0)
            gathered = factors[torch.from_numpy(indices64[idx])]
            if weight_arr is None:
                wts = mask * weights
            else:
                wts = np.where(mask, weight_arr[idx], 0.0)
            wts_t = torch.from_numpy(np.asarray(wts, dtype=np.float64)).to(factors.dtype)
            grams = torch.bmm((gathered * wts_t[:, :, None]).transpose(1, 2), gathered)
            out.index_add_(0, torch.from_numpy(seg_row[sel]), grams)
    return out


def csr_tensor(crow, col, values, shape):
    """A torch CSR tensor on existing buffers (no copy, no invariant check)."""
    with warnings.catch_warnings():
        # torch flags sparse CSR as beta on every construction
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size=shape, check_invariants=False)


def torch_dtype(name: str):
    return torch.float32 if name == "float32" else torch.float64


def to_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.to(torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)

