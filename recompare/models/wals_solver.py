"""The WALS solvers: training state, conjugate-gradient and exact half-sweeps, threads.

:class:`Problem` holds the factors and the observed pattern in blocks of user rows and
alternates the two half-sweeps of the objective in :mod:`recompare.models.wals`.  This
module imports torch at the top; the estimator imports it only inside ``fit`` and the
other methods that solve, so ``import recompare.models.wals`` stays free of torch.

The library leaves the process as it found it: torch's thread count is set through
:func:`recompare._threads.torch_threads` (restored on exit), and nothing here tunes the
allocator (the benchmarks may; see :mod:`recompare.bench.wals`).
"""
from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch

from .._threads import torch_threads
from .wals_exact import csr_tensor, exact_rows, torch_dtype

if TYPE_CHECKING:
    from .wals import WALS

# ====================================================================== state
class Block:
    """A block of consecutive user rows: its slice of the CSR buffers, zero-copy."""

    def __init__(self, train: sp.csr_matrix, start: int, stop: int, torch_values):
        self.start, self.stop = start, stop
        self.lo, self.hi = int(train.indptr[start]), int(train.indptr[stop])
        # crow needs its own (small) copy: offsets must start at 0
        self.indptr = (train.indptr[start:stop + 1] - train.indptr[start]).astype(
            train.indices.dtype)
        self.indices = train.indices[self.lo:self.hi]
        self.crow = torch.from_numpy(self.indptr)
        self.col = torch.from_numpy(self.indices)
        self.shape = (stop - start, train.shape[1])
        self.pattern = csr_tensor(self.crow, self.col, torch_values[self.lo:self.hi], self.shape)
        self.counts = torch.from_numpy(np.diff(self.indptr).astype(np.int64))

    def with_values(self, values):
        return csr_tensor(self.crow, self.col, values, self.shape)


class Problem:
    """The training state: factors, blocks, weights, and the two half-sweeps.

    Parallelism is coarse-grained, as in ``implicit``: torch runs one thread
    per call and a pool of Python threads (torch and scipy release the GIL)
    takes blocks of rows from a queue.  Hundreds of small multi-threaded torch
    calls per sweep would each end in a barrier, which costs several times the
    work itself when the cores are shared with other processes.

    ``s`` holds ``x_u . y_i`` for every observed pair (one float per entry, in
    CSR order, one tensor per block).  The user half-sweep keeps it up to date
    from its own CG products; the item half-sweep ends with one sampled product
    that refreshes it exactly, which also gives the objective.  So a CG sweep
    costs ``2 cg_steps + 1`` sampled products and ``2 cg_steps + 2`` sparse
    products, and the objective is free.
    """

    def __init__(self, model: WALS, train: sp.csr_matrix, w_obs, t_obs,
                 user_factors: np.ndarray | None = None, item_factors: np.ndarray | None = None,
                 pool: ThreadPoolExecutor | None = None, threads: int = 1):
        self.model = model
        self.dtype = torch_dtype(model.dtype)
        self.np_dtype = np.float32 if model.dtype == "float32" else np.float64
        self.w0 = float(model.unobserved_weight)
        self.k = int(model.dim)
        self.pool = pool
        n_users, n_items = train.shape
        self.n_users, self.n_items = n_users, n_items
        user_counts = np.diff(train.indptr)
        item_counts = np.bincount(train.indices, minlength=n_items)
        # Items are relabelled by descending popularity, so that the factors of
        # the items holding most entries sit together and stay in cache during
        # the gathers and scatters (about 25% faster sparse products on
        # power-law data).  Costs one relabelled copy of the column indices.
        self.item_order = np.argsort(-item_counts, kind="stable")
        self.item_rank = np.empty(n_items, dtype=train.indices.dtype)
        self.item_rank[self.item_order] = np.arange(n_items)
        indices = self.item_rank[train.indices]
        self.train = sp.csr_matrix((train.data, indices, train.indptr), shape=train.shape,
                                   copy=False)
        self.original = train
        # values in the working dtype; for float32 data this is the scipy buffer itself
        self.values = torch.from_numpy(np.ascontiguousarray(train.data, dtype=self.np_dtype))
        # per-entry weights: python floats when constant, else tensors in CSR order
        self.w = _as_weight(w_obs, self.np_dtype)
        self.t = _as_weight(t_obs, self.np_dtype)
        self.wt = _as_weight(_mul(w_obs, t_obs), self.np_dtype)
        self.cprime = _as_weight(_sub(w_obs, self.w0), self.np_dtype)
        self.user_reg = torch.from_numpy(
            model._row_regularization(user_counts, n_items).astype(self.np_dtype))
        item_reg = model._row_regularization(item_counts, n_users)[self.item_order]
        self.item_reg = torch.from_numpy(item_reg.astype(self.np_dtype))
        self.blocks = _make_blocks(self.train, int(model.block_nnz), self.values)
        self.groups = _thread_groups(self.blocks, threads)
        if user_factors is None:
            x, y = _initial_factors(model, n_users, n_items, self.np_dtype)
        else:  # copies: the state is updated in place
            x = np.array(user_factors, dtype=self.np_dtype, order="C")
            y = np.asarray(item_factors, dtype=self.np_dtype)
        self.X = torch.from_numpy(x)
        self.Y = torch.from_numpy(np.ascontiguousarray(y[self.item_order]))
        # rows without interactions have the zero vector as their optimum
        self.X[torch.from_numpy(user_counts == 0)] = 0
        self.Y[torch.from_numpy(item_counts[self.item_order] == 0)] = 0
        # x_u . y_i on the observed pattern, CSR order (see the class docstring)
        self.s = torch.empty(self.train.nnz, dtype=self.dtype)
        self._s_ready = False
        self._observed = 0.0
        self._transposed = None

    # -------------------------------------------------------------- helpers
    def user_factors(self) -> np.ndarray:
        # the state's own array (in the working dtype); the state is dropped after fit
        return self.X.numpy()

    def item_factors(self) -> np.ndarray:
        # back from popularity order to the data set's item order
        return self.Y.numpy()[self.item_rank]

    def snapshot(self):
        return self.X.clone(), self.Y.clone()

    def restore(self, snap) -> None:
        self.X.copy_(snap[0])
        self.Y.copy_(snap[1])

    def _map(self, fn, items) -> list:
        if self.pool is None:
            return [fn(item) for item in items]
        return list(self.pool.map(fn, items))

    @staticmethod
    def _slice(weight, block: Block):
        """The block's part of a per-entry array (constants pass through)."""
        return weight if isinstance(weight, float) else weight[block.lo:block.hi]

    @staticmethod
    def _sddmm(block: Block, left, right):
        """``left_u . right_i`` on the block's observed pattern, shape (block nnz,)."""
        return torch.sparse.sampled_addmm(block.pattern, left, right.T, beta=0.0).values()

    # --------------------------------------------------------------- sweeps
    def sweep(self) -> None:
        """One alternating sweep (users, then items), then ``s`` and the objective."""
        if self.model.solver == "cg":
            if not self._s_ready:
                self.refresh()
            self._cg_users()
            self._cg_items()
        else:
            self._exact_users()
            self._exact_items()
        self.refresh()

    def refresh(self) -> None:
        """Recompute ``s`` exactly and the observed part of the objective."""
        def work(j: int) -> float:
            block = self.blocks[j]
            # copied out: the result also holds int64 copies of the block's indices
            s = self.s[block.lo:block.hi]
            s.copy_(self._sddmm(block, self.X[block.start:block.stop], self.Y))
            w, t = self._slice(self.w, block), self._slice(self.t, block)
            # observed pairs: w (t - s)^2, minus the w0 s^2 the Gram term counts for
            # them; terms in the working precision, sums in float64
            residual = (t - s).square_()
            if isinstance(w, float):
                fit = w * float(torch.sum(residual, dtype=torch.float64))
            else:
                fit = float(torch.sum(residual.mul_(w), dtype=torch.float64))
            return fit - self.w0 * float(torch.sum(s.square(), dtype=torch.float64))

        self._observed = math.fsum(self._map(work, range(len(self.blocks))))
        self._s_ready = True

    def objective(self) -> float:
        """Exact ``L`` through the Gram trick (after :meth:`refresh`)."""
        def parts(j: int) -> tuple[float, object]:
            block = self.blocks[j]
            x = self.X[block.start:block.stop]
            reg = float(torch.sum(self.user_reg[block.start:block.stop].to(torch.float64)
                                  * (x * x).sum(1).to(torch.float64)))
            return reg, (x.T @ x).to(torch.float64)

        if not self._s_ready:
            self.refresh()
        results = self._map(parts, range(len(self.blocks)))
        user_reg = math.fsum(r for r, _ in results)
        xtx = sum(g for _, g in results)
        y = self.Y
        yty = (y.T @ y).to(torch.float64)
        item_reg = float(torch.sum(self.item_reg.to(torch.float64)
                                   * (y * y).sum(1).to(torch.float64)))
        return self._observed + self.w0 * float(torch.sum(xtx * yty)) + user_reg + item_reg

    def _cg_users(self) -> None:
        """CG for all users, one block of rows per task (rows are independent)."""
        Y = self.Y
        steps = int(self.model.cg_steps)
        # the dense part of A p is p @ dense + lambda_u p; a constant lambda folds in
        constant_lam = self.model.reg_scaling == "none"
        dense = (Y.T @ Y) * self.w0
        if constant_lam:
            dense += self.model.penalty()[0] * torch.eye(self.k, dtype=self.dtype)
        scalar_c = isinstance(self.cprime, float)

        def work(j: int) -> None:
            block = self.blocks[j]
            X = self.X[block.start:block.stop]
            lam = self.user_reg[block.start:block.stop, None]
            c, wt = self._slice(self.cprime, block), self._slice(self.wt, block)
            s = self._slice(self.s, block)
            if isinstance(wt, float) and scalar_c:
                vals = s * (-c) + wt
            else:
                vals = torch.addcmul(torch.as_tensor(wt, dtype=s.dtype), c, s, value=-1)
            r = (block.with_values(vals) @ Y).addmm_(X, dense, alpha=-1)
            if not constant_lam:
                r.addcmul_(lam, X, value=-1)
            p = r.clone()
            rs = _rowdot(r, r)
            for _ in range(steps):
                q = self._sddmm(block, p, Y)
                # A p = c' S(q) Y + p @ dense (+ lambda_u p); one in-place pass
                # scales the sparse product by a constant c' and adds the dense part
                if scalar_c:
                    ap = (block.with_values(q) @ Y).addmm_(p, dense, beta=c)
                else:
                    ap = (block.with_values(q * c) @ Y).addmm_(p, dense)
                if not constant_lam:
                    ap.addcmul_(lam, p)
                step = _safe_div(rs, _rowdot(p, ap))
                X.addcmul_(step[:, None], p)
                # keep s = x_u . y_i exact: x_u moved by step_u p_u
                s.addcmul_(torch.repeat_interleave(step, block.counts), q)
                r.addcmul_(step[:, None], ap, value=-1)
                rs_new = _rowdot(r, r)
                torch.addcmul(r, p, _safe_div(rs_new, rs)[:, None], out=p)
                rs = rs_new

        self._map(work, range(len(self.blocks)))

    def _cg_items(self) -> None:
        """CG for all items at once, on the user-major matrix (transposed products)."""
        X, Y = self.X, self.Y
        grams = self._map(lambda b: X[b.start:b.stop].T @ X[b.start:b.stop], self.blocks)
        w0_gram = sum(grams) * self.w0
        lam = self.item_reg[:, None]

        def first(j: int):
            block = self.blocks[j]
            c, wt = self._slice(self.cprime, block), self._slice(self.wt, block)
            s = self._slice(self.s, block)
            if isinstance(wt, float) and isinstance(c, float):
                return s * (-c) + wt
            return torch.addcmul(torch.as_tensor(wt, dtype=s.dtype), c, s, value=-1)

        r = self._reduce_cols(first)
        r.addmm_(Y, w0_gram, alpha=-1).addcmul_(lam, Y, value=-1)
        p = r.clone()
        rs = _rowdot(r, r)
        scalar_c = isinstance(self.cprime, float)
        for _ in range(int(self.model.cg_steps)):
            def values(j: int, p=p):
                block = self.blocks[j]
                q = self._sddmm(block, X[block.start:block.stop], p)
                return q if scalar_c else q.mul_(self._slice(self.cprime, block))

            ap = self._reduce_cols(values)
            ap.addmm_(p, w0_gram, beta=self.cprime if scalar_c else 1.0).addcmul_(lam, p)
            step = _safe_div(rs, _rowdot(p, ap))
            Y.addcmul_(step[:, None], p)
            r.addcmul_(step[:, None], ap, value=-1)
            rs_new = _rowdot(r, r)
            torch.addcmul(r, p, _safe_div(rs_new, rs)[:, None], out=p)
            rs = rs_new

    def _reduce_cols(self, values_of):
        """``sum_blocks block^T(values) @ X_block``, tensor of shape (n_items, k).

        The transposed sparse product runs in scipy's compressed-column kernel
        (it releases the GIL), so no transposed copy of the matrix is ever
        made.  Blocks are split into one fixed group per thread, each with its
        own accumulator, summed in a fixed order: the same settings give the
        same numbers whichever thread finishes first.
        """
        Xn = self.X.numpy()

        def work(group: list[int]) -> np.ndarray:
            acc = np.zeros((self.n_items, self.k), dtype=self.np_dtype)
            for j in group:
                _csc_matvecs(self.blocks[j], values_of(j).numpy(), Xn, acc)
            return acc

        arrays = self._map(work, self.groups)
        total = arrays[0]
        for extra in arrays[1:]:
            total += extra
        return torch.from_numpy(total)

    # ------------------------------------------------------- exact solves
    def _exact_users(self) -> None:
        gram = self.Y.T @ self.Y
        x = exact_rows(self.train, self.Y, gram, self.w, self.t, self.w0,
                        self.user_reg.numpy(), pool=self.pool)
        self.X.copy_(x)

    def _exact_items(self) -> None:
        if self._transposed is None:
            # the item-major pattern (a copy) is needed to gather each item's users
            order = sp.csr_matrix((np.arange(self.train.nnz, dtype=np.int64),
                                   self.train.indices, self.train.indptr), shape=self.train.shape)
            order = order.T.tocsr()
            perm = order.data
            mat = sp.csr_matrix((self.train.data[perm], order.indices, order.indptr),
                                shape=order.shape)
            w = self.w if isinstance(self.w, float) else self.w.numpy()[perm]
            t = self.t if isinstance(self.t, float) else self.t.numpy()[perm]
            self._transposed = (mat, w, t)
        mat, w, t = self._transposed
        gram = self.X.T @ self.X
        y = exact_rows(mat, self.X, gram, w, t, self.w0, self.item_reg.numpy(),
                        pool=self.pool)
        self.Y.copy_(y)


def _rowdot(a, b):
    """Per-row dot products, shape (n_rows,)."""
    return torch.linalg.vecdot(a, b, dim=1)


def _safe_div(num, den):
    """``num / den`` where ``den`` is positive, else 0 (converged or empty rows)."""
    tiny = torch.finfo(den.dtype).tiny
    return torch.where(den > tiny, num / den.clamp_min(tiny), torch.zeros_like(num))


def _thread_groups(blocks: list[Block], threads: int) -> list[list[int]]:
    """Consecutive blocks of about equal entries, one group (and one accumulator of the
    item side's products) per thread."""
    n_groups = max(1, threads)
    ends = np.cumsum([b.hi - b.lo for b in blocks])
    owner = np.minimum(n_groups - 1, (ends - 1) * n_groups // max(1, int(ends[-1])))
    return [list(np.flatnonzero(owner == g)) for g in range(n_groups) if (owner == g).any()]


def _initial_factors(model: WALS, n_users: int, n_items: int, np_dtype
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Normal factors with standard deviation ``init_scale / sqrt(k)``, from ``random_state``."""
    k = int(model.dim)
    rng = np.random.default_rng(model.random_state)
    scale = float(model.init_scale) / math.sqrt(k)
    # drawn in float32 whatever the working dtype: same seed, same start
    x = rng.standard_normal((n_users, k), dtype=np.float32)
    x *= scale
    y = rng.standard_normal((n_items, k), dtype=np.float32)
    y *= scale
    return x.astype(np_dtype, copy=False), y.astype(np_dtype, copy=False)


def _make_blocks(train: sp.csr_matrix, block_nnz: int, values) -> list[Block]:
    """Consecutive row ranges of about ``block_nnz`` entries each."""
    n_rows = train.shape[0]
    n_blocks = max(1, -(-train.nnz // block_nnz))
    cuts = np.searchsorted(train.indptr, np.linspace(0, train.nnz, n_blocks + 1)[1:-1])
    cuts = np.unique(np.concatenate([[0], np.clip(cuts, 0, n_rows), [n_rows]]))
    return [Block(train, int(a), int(b), values) for a, b in pairwise(cuts)
            if b > a]


#: scipy's compressed-column kernel, which accumulates in place and releases the GIL.  It
#: is private API: when a scipy release moves it, this is None and the public transposed
#: product is used instead (same numbers up to round-off; tested in tests/test_wals.py).
try:
    from scipy.sparse._sparsetools import csc_matvecs as CSC_KERNEL
except ImportError:  # pragma: no cover - depends on the scipy release
    CSC_KERNEL = None


def _csc_matvecs(block: Block, vals: np.ndarray, Xn: np.ndarray, acc: np.ndarray) -> None:
    """``acc += block^T(vals) @ X[block rows]``, accumulating in place."""
    if block.hi == block.lo:
        return
    x = Xn[block.start:block.stop]
    n_items, k = acc.shape
    kernel = CSC_KERNEL
    if kernel is not None:
        kernel(n_items, block.stop - block.start, k, block.indptr, block.indices, vals,
               x.ravel(), acc.ravel())
    else:
        part = sp.csr_matrix((vals, block.indices, block.indptr), shape=block.shape)
        acc += part.T @ x


# ================================================================== threads
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def parallel(threads: int) -> Iterator[tuple[ThreadPoolExecutor | None, int]]:
    """Coarse-grained parallelism for the solvers (see :class:`Problem`).

    A pool of ``threads`` Python threads (0: torch's current thread count) shares the
    blocks of rows while torch runs one thread per call; torch's own setting is put back
    on exit.  More threads than CPUs slow every sweep down, so that case warns (once)
    rather than being changed behind the caller's back.

    Yields
    ------
    (pool, threads) : the pool (None for one thread) and the number of threads used
    """
    threads = int(threads) or torch.get_num_threads()
    cpus = _available_cpus()
    if threads > cpus:
        _warn_once(f"WALS threads={threads} exceeds the {cpus} CPUs available to this "
                   "process; expect slower sweeps (pass threads=0 for torch's default)")
    with torch_threads(1):
        pool = ThreadPoolExecutor(threads) if threads > 1 else None
        try:
            yield pool, threads
        finally:
            if pool is not None:
                pool.shutdown()


def _mul(a, b):
    return a * b


def _sub(a, b):
    return a - b


def _as_weight(value, np_dtype):
    """A python float for constant weights, else a torch tensor in the working dtype."""
    if isinstance(value, (float, int, np.floating)):
        return float(value)
    return torch.from_numpy(np.ascontiguousarray(value, dtype=np_dtype))

