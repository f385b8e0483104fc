"""Weighted alternating least squares (WALS) with a tunable unobserved weight.

The objective, with user factors ``x_u`` and item factors ``y_i`` (``k`` each)::

    L = sum_{(u,i) observed}   w_ui (t_ui - x_u . y_i)^2
      + w0 sum_{(u,i) unobserved} (x_u . y_i)^2
      + sum_u lambda_u |x_u|^2 + sum_i lambda_i |y_i|^2

* ``w0`` (``unobserved_weight``) weighs every pair that was *not* observed;
  observed pairs carry their own weight ``w_ui`` in full.  This is exactly the
  implicit-feedback ALS of Hu, Koren and Volinsky (and of the ``implicit``
  package): their confidence ``c_ui`` on observed pairs is our ``w_ui``, and
  their weight 1 on the rest is our ``w0``.  Dividing the whole objective by a
  constant does not move its minimiser, so implicit's ``(alpha, lambda)`` map
  onto ``w_ui = 1, w0 = 1 / alpha, lambda = lambda_implicit / alpha``.
* ``w_ui = f(r_ui) v_i``: ``f`` is ``constant`` (1), ``linear``
  (``1 + alpha r``) or ``log`` (``1 + alpha log(1 + r / epsilon)``); ``v_i`` are
  optional per-item weights (inverse frequency, or any positive array).
* ``t_ui`` is 1 (implicit feedback, the default) or the interaction value.
* ``lambda_u = lambda`` (``reg_scaling="none"``) or
  ``lambda (n_u + w0 n_items) ** nu`` (``"frequency"``, Rendle et al. 2022),
  with ``n_u`` the user's number of observed items; items alike.

The unobserved pairs are never visited.  For a user the normal equations are
``A_u x_u = b_u`` with::

    A_u = w0 Y^T Y + sum_{i in I_u} (w_ui - w0) y_i y_i^T + lambda_u I
    b_u = sum_{i in I_u} w_ui t_ui y_i

(the Gram matrix ``Y^T Y`` covers every pair once, the observed terms correct
it).  Both solvers work on all rows at once:

* ``cg``: conjugate gradient, warm-started from the current factors, with a
  per-row step size.  The product ``A p`` for every row is one sampled
  dense-dense product (the scalars ``p_u . y_i`` on the observed pattern,
  torch's ``sampled_addmm``), one sparse x dense product with those scalars
  as values, and a dense ``p (w0 Y^T Y)``.  Users are solved in blocks of rows
  (small temporaries); items are solved on the same user-major matrix, with
  the transposed sparse product done by scipy's compressed-column kernel in
  parallel threads, so the transposed matrix is never stored.
* ``cholesky``: exact, one ``k x k`` system per row, assembled by batched
  matrix products over length-bucketed rows and factorised in batches.

torch is imported lazily: only the softmax DNN imports it at module level.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._atomic import atomic_dir
from .._jsonutil import json_default
from .._sysmem import release_free_memory
from ..errors import RecompareError
from .base import MODEL_FILE, Callback, FactorModel, read_model_json

SOLVERS = ("cg", "cholesky")
WEIGHTINGS = ("constant", "linear", "log")
REG_SCALINGS = ("none", "frequency")
TARGETS = ("binary", "values")
ITEM_WEIGHTINGS = ("none", "inverse_frequency", "inverse_sqrt_frequency")
DTYPES = ("float32", "float64")
ARRAYS_FILE = "arrays.npz"
#: numeric user features are cut into this many quantile bins for cold start
NUMERIC_BINS = 5


class WALS(FactorModel):
    """Weighted ALS matrix factorization (see the module docstring for the maths).

    Parameters
    ----------
    factors : int
        Embedding dimension ``k``.
    unobserved_weight : float
        ``w0`` >= 0, the weight of every unobserved pair, relative to observed
        weights near 1.  0 fits observed entries only (prone to folding).
    regularization : float
        ``lambda`` >= 0.
    reg_scaling : {"none", "frequency"}
        Constant ``lambda``, or ``lambda (n_u + w0 n) ** reg_exponent`` per row.
    reg_exponent : float
        ``nu`` of the frequency scaling.
    weighting : {"constant", "linear", "log"}
        Observed weight ``f(r)``: 1, ``1 + alpha r`` or ``1 + alpha log(1 + r / epsilon)``.
    alpha, epsilon : float
        Parameters of ``weighting``.
    item_weights : {"none", "inverse_frequency", "inverse_sqrt_frequency"} or sequence of float
        Per-item multiplier ``v_i`` of the observed weight.  The named schemes
        are normalised so that the average observed weight stays 1 (``w0``
        keeps its meaning); an explicit sequence (one positive value per item)
        is used as given.
    targets : {"binary", "values"}
        ``t_ui = 1`` or the interaction value.
    iterations : int
        Alternating sweeps (users then items).
    solver : {"cg", "cholesky"}
    cg_steps : int
        Conjugate-gradient steps per half sweep.
    init_scale : float
        Initial factors are normal with standard deviation ``init_scale / sqrt(k)``.
    random_state : int
    threads : int
        CPU threads (0 = torch's default, all cores).
    dtype : {"float32", "float64"}
    patience : int or None
        With a validation matrix passed to :meth:`fit`, stop after this many
        sweeps without a better validation recall and keep the best factors.
    validation_k : int
        The ``k`` of the validation recall.
    block_nnz : int
        Observed entries per block of rows; bounds the temporaries.
    """

    kind = "wals"
    protocols = frozenset({"weak", "strong", "cold"})

    def __init__(
        self,
        factors: int = 64,
        unobserved_weight: float = 0.1,
        regularization: float = 0.01,
        reg_scaling: str = "frequency",
        reg_exponent: float = 1.0,
        weighting: str = "constant",
        alpha: float = 1.0,
        epsilon: float = 1.0,
        item_weights: str | Sequence[float] = "none",
        targets: str = "binary",
        iterations: int = 15,
        solver: str = "cg",
        cg_steps: int = 3,
        init_scale: float = 0.1,
        random_state: int = 0,
        threads: int = 0,
        dtype: str = "float32",
        patience: int | None = None,
        validation_k: int = 20,
        block_nnz: int = 1 << 17,
    ) -> None:
        self.factors = factors
        self.unobserved_weight = unobserved_weight
        self.regularization = regularization
        self.reg_scaling = reg_scaling
        self.reg_exponent = reg_exponent
        self.weighting = weighting
        self.alpha = alpha
        self.epsilon = epsilon
        self.item_weights = item_weights
        self.targets = targets
        self.iterations = iterations
        self.solver = solver
        self.cg_steps = cg_steps
        self.init_scale = init_scale
        self.random_state = random_state
        self.threads = threads
        self.dtype = dtype
        self.patience = patience
        self.validation_k = validation_k
        self.block_nnz = block_nnz

    # ---------------------------------------------------------- validation
    def _validate(self) -> None:
        def positive_int(name: str, value: Any) -> None:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise RecompareError(f"{name} must be a positive integer, got {value!r}")

        def non_negative(name: str, value: Any) -> None:
            if not isinstance(value, (int, float, np.number)) or isinstance(value, bool) \
                    or not math.isfinite(value) or value < 0:
                raise RecompareError(f"{name} must be a finite number >= 0, got {value!r}")

        def choice(name: str, value: Any, options: Sequence[str]) -> None:
            if value not in options:
                raise RecompareError(f"{name} must be one of {', '.join(options)}; got {value!r}")

        positive_int("factors", self.factors)
        positive_int("iterations", self.iterations)
        positive_int("cg_steps", self.cg_steps)
        positive_int("validation_k", self.validation_k)
        positive_int("block_nnz", self.block_nnz)
        if self.patience is not None:
            positive_int("patience", self.patience)
        non_negative("unobserved_weight", self.unobserved_weight)
        non_negative("regularization", self.regularization)
        non_negative("reg_exponent", self.reg_exponent)
        non_negative("alpha", self.alpha)
        non_negative("init_scale", self.init_scale)
        if not isinstance(self.threads, (int, np.integer)) or self.threads < 0:
            raise RecompareError(f"threads must be an integer >= 0, got {self.threads!r}")
        if not isinstance(self.epsilon, (int, float)) or not self.epsilon > 0:
            raise RecompareError(f"epsilon must be > 0, got {self.epsilon!r}")
        choice("solver", self.solver, SOLVERS)
        choice("weighting", self.weighting, WEIGHTINGS)
        choice("reg_scaling", self.reg_scaling, REG_SCALINGS)
        choice("targets", self.targets, TARGETS)
        choice("dtype", self.dtype, DTYPES)
        if isinstance(self.item_weights, str):
            choice("item_weights", self.item_weights, ITEM_WEIGHTINGS)

    # ------------------------------------------------------------- weights
    def _item_weight_vector(self, train: sp.csr_matrix) -> np.ndarray | None:
        """``v_i`` of shape (n_items,), or None when all are 1."""
        spec = self.item_weights
        n_items = train.shape[1]
        if isinstance(spec, str):
            if spec == "none":
                return None
            counts = np.bincount(train.indices, minlength=n_items).astype(np.float64)
            power = 1.0 if spec == "inverse_frequency" else 0.5
            v = np.zeros(n_items)
            seen = counts > 0
            v[seen] = counts[seen] ** -power
            # normalise so that the mean weight over observed entries is 1
            v *= train.nnz / max(float((v * counts).sum()), 1e-300)
            return v
        v = np.asarray(spec, dtype=np.float64)
        if v.shape != (n_items,):
            raise RecompareError(
                f"item_weights has shape {v.shape}, expected one weight per item ({n_items})")
        if not np.isfinite(v).all() or (v <= 0).any():
            raise RecompareError("item_weights must be finite and > 0")
        return v

    def _observed_weights(self, matrix: sp.csr_matrix) -> np.ndarray | float:
        """``w_ui`` in the matrix's storage order, or a scalar when constant."""
        if self.weighting == "constant":
            w: np.ndarray | float = 1.0
        elif self.weighting == "linear":
            w = 1.0 + self.alpha * matrix.data.astype(np.float64)
        else:
            w = 1.0 + self.alpha * np.log1p(matrix.data.astype(np.float64) / self.epsilon)
        if self.item_weight_ is not None:
            w = w * self.item_weight_[matrix.indices]
        if isinstance(w, np.ndarray) and (~np.isfinite(w) | (w < 0)).any():
            raise RecompareError(
                f"observed weights must be >= 0: weighting '{self.weighting}' with alpha="
                f"{self.alpha} gives negative or undefined weights (negative interaction values?)")
        return w

    def _targets(self, matrix: sp.csr_matrix) -> np.ndarray | float:
        return 1.0 if self.targets == "binary" else matrix.data.astype(np.float64)

    def _row_regularization(self, counts: np.ndarray, n_other: int) -> np.ndarray:
        lam = float(self.regularization)
        if self.reg_scaling == "none":
            return np.full(len(counts), lam)
        base = counts.astype(np.float64) + float(self.unobserved_weight) * n_other
        return lam * base ** float(self.reg_exponent)

    # ----------------------------------------------------------------- fit
    def check(self, dataset) -> None:
        """Validate hyperparameters and training data without fitting (clear errors)."""
        self._validate()
        train = dataset.train
        if train is None or train.nnz == 0:
            raise RecompareError("the training matrix is empty: nothing to fit")
        if not np.isfinite(train.data).all():
            raise RecompareError("training values contain NaN or infinity")
        self.item_weight_ = self._item_weight_vector(train)
        self._observed_weights(train)

    def fit(
        self,
        dataset,
        callback: Callback | None = None,
        validation: sp.spmatrix | None = None,
    ) -> WALS:
        """Fit on ``dataset.train``; re-initialises from ``random_state`` every time.

        Parameters
        ----------
        dataset : Dataset
        callback : callable, optional
            Called with ``{"stage": "start", "total"}`` once the set-up is done,
            then ``{"stage": "iteration", "iteration", "total", "objective",
            "seconds", ["recall@k"]}`` after every sweep.
        validation : sparse matrix of shape (n_users, n_items), optional
            Held-out interactions of training users; enables the validation
            recall per sweep and early stopping (``patience``).

        Returns
        -------
        self
        """

        self.check(dataset)
        train = sp.csr_matrix(dataset.train)
        if not train.has_canonical_format:  # never edit the data set's own buffers
            train = train.copy()
            train.sum_duplicates()
        if validation is not None:
            validation = sp.csr_matrix(validation)
            if validation.shape != train.shape:
                raise RecompareError(
                    f"validation matrix shape {validation.shape} differs from the training "
                    f"matrix {train.shape}")
        w_obs = self._observed_weights(train)
        t_obs = self._targets(train)

        with _threading(self) as (pool, threads):
            state = _Problem(self, train, w_obs, t_obs, pool=pool, threads=threads)
            history = self._alternate(state, callback, validation)

        self._remember(dataset)
        self.fit_info_ = history
        self._fit_cold_start(dataset, train)
        return self

    def _alternate(self, state: _Problem, callback: Callback | None,
                   validation: sp.csr_matrix | None) -> dict:
        start = time.perf_counter()
        info: dict = {"objective": [], "seconds_per_iteration": [], "solver": self.solver}
        best = (-1.0, 0, None)
        val_users = None
        if validation is not None:
            val_users = _validation_users(validation, self.random_state)
            info["validation"] = []
        if callback is not None:
            callback({"stage": "start", "total": self.iterations})
        for it in range(1, self.iterations + 1):
            t0 = time.perf_counter()
            state.sweep()
            objective = state.objective()
            seconds = time.perf_counter() - t0
            info["objective"].append(objective)
            info["seconds_per_iteration"].append(seconds)
            event = {"stage": "iteration", "iteration": it, "total": self.iterations,
                     "objective": objective, "seconds": seconds}
            stop = False
            if val_users is not None and len(val_users):
                recall = _recall_at_k(state.user_factors(), state.item_factors(), state.original,
                                      validation, val_users, self.validation_k)
                info["validation"].append(recall)
                event[f"recall@{self.validation_k}"] = recall
                if recall > best[0]:
                    best = (recall, it, state.snapshot())
                elif self.patience is not None and it - best[1] >= self.patience:
                    stop = True
            if callback is not None:
                callback(event)
            if stop:
                break
        if best[2] is not None and self.patience is not None:
            state.restore(best[2])
            info["best_iteration"] = best[1]
        self.user_factors_ = state.user_factors()
        self.item_factors_ = state.item_factors()
        info["iterations"] = len(info["objective"])
        info["seconds"] = time.perf_counter() - start
        return info

    # --------------------------------------------------------- embeddings
    def export_arrays(self) -> dict[str, np.ndarray]:
        """Named arrays for ``recompare export``: the factors under both naming schemes."""
        self._check_fitted()
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_,
                "query_embeddings": self.user_factors_, "item_embeddings": self.item_factors_}

    def embed_new_users(
        self, history: sp.spmatrix | None, features: pd.DataFrame | None = None
    ) -> np.ndarray:
        """Embeddings for users unseen in training, item factors fixed.

        Rows with interactions get one exact solve of the training objective's
        user problem (``A_u x = b_u`` above).  Rows without any (cold start)
        get the mean embedding of the training users that share the most
        feature values with them (numeric features in quantile bins), or the
        mean of all training users when nothing matches or no features are given.

        Parameters
        ----------
        history : sparse matrix of shape (n_new, n_items) or None
        features : DataFrame with n_new rows, or None

        Returns
        -------
        ndarray of shape (n_new, k)
        """
        import torch

        self._check_fitted()
        n_new = _n_new(history, features)
        dtype = _torch_dtype(self.dtype)
        out = np.empty((n_new, self.user_factors_.shape[1]), dtype=np.float32)
        has_history = np.zeros(n_new, dtype=bool)
        if history is not None:
            history = sp.csr_matrix(history)
            if history.shape[1] != self.n_items_:
                raise RecompareError(
                    f"history has {history.shape[1]} item columns, the model {self.n_items_}")
            if history.nnz and not np.isfinite(history.data).all():
                raise RecompareError("history values contain NaN or infinity")
            history.sum_duplicates()
            history.sort_indices()
            has_history = np.diff(history.indptr) > 0
        if has_history.any():
            rows = history[has_history]
            w = self._observed_weights(rows)
            t = self._targets(rows)
            items = torch.from_numpy(self.item_factors_).to(dtype)
            gram = items.T @ items
            lam = self._row_regularization(np.diff(rows.indptr), self.n_items_)
            with _threading(self) as (pool, _):
                x = _exact_rows(rows, items, gram, w, t, float(self.unobserved_weight), lam,
                                pool=pool)
            out[has_history] = x.to(torch.float32).numpy()
        cold = ~has_history
        if cold.any():
            out[cold] = self._cold_embeddings(features, np.flatnonzero(cold))
        return out

    # -------------------------------------------------------- cold start
    def _fit_cold_start(self, dataset, train: sp.csr_matrix) -> None:
        active = np.diff(train.indptr) > 0
        factors = self.user_factors_
        k = factors.shape[1]
        # means through a sparse indicator product: no copy of the factors
        indicator = sp.csr_matrix(active[None, :].astype(np.float32))
        self.global_mean_ = np.asarray(indicator @ factors).ravel() / max(1, int(active.sum()))
        self.global_mean_ = self.global_mean_.astype(np.float32)
        self.cold_columns_: list[dict] = []
        self.cold_codes_ = np.zeros((0, 0), dtype=np.int64)
        self.cold_means_ = np.zeros((0, k), dtype=np.float32)
        self.cold_counts_ = np.zeros(0, dtype=np.int64)
        frame = dataset.user_features
        if frame is None or frame.shape[1] == 0 or not active.any():
            return
        frame = frame.reset_index(drop=True).iloc[np.flatnonzero(active)]
        factors = self.user_factors_
        columns, codes = [], []
        for name in frame.columns:
            series = frame[name]
            numeric = pd.api.types.is_numeric_dtype(series) and not isinstance(
                series.dtype, pd.CategoricalDtype)
            if numeric:
                values = series.to_numpy(dtype=np.float64)
                finite = values[np.isfinite(values)]
                if len(finite) == 0:
                    continue
                edges = np.unique(np.quantile(finite, np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1]))
                spec = {"name": str(name), "kind": "numeric", "edges": edges.tolist()}
            else:
                vocab = sorted(set(series.astype(str).tolist()))
                spec = {"name": str(name), "kind": "categorical", "values": vocab}
            columns.append(spec)
            codes.append(_feature_codes(series, spec))
        if not columns:
            return
        matrix = np.stack(codes, axis=1)
        tuples, inverse, counts = np.unique(matrix, axis=0, return_inverse=True,
                                            return_counts=True)
        members = sp.csr_matrix(
            (np.ones(len(inverse), dtype=np.float64), (inverse.ravel(), np.flatnonzero(active))),
            shape=(len(tuples), len(active)))
        sums = np.asarray(members @ factors.astype(np.float64, copy=False)
                          if factors.dtype == np.float64 else members @ factors)
        self.cold_columns_ = columns
        self.cold_codes_ = tuples.astype(np.int64)
        self.cold_means_ = (sums / counts[:, None]).astype(np.float32)
        self.cold_counts_ = counts.astype(np.int64)

    def _cold_embeddings(self, features: pd.DataFrame | None, rows: np.ndarray) -> np.ndarray:
        out = np.broadcast_to(self.global_mean_, (len(rows), len(self.global_mean_))).copy()
        if features is None or not self.cold_columns_:
            return out
        features = features.reset_index(drop=True).iloc[rows]
        use = [j for j, spec in enumerate(self.cold_columns_) if spec["name"] in features.columns]
        if not use:
            return out
        codes = np.stack([_feature_codes(features[self.cold_columns_[j]["name"]],
                                         self.cold_columns_[j]) for j in use], axis=1)
        table = self.cold_codes_[:, use]
        weights = self.cold_counts_.astype(np.float64)
        chunk = max(1, (1 << 24) // max(1, table.size))
        for start in range(0, len(rows), chunk):
            block = codes[start:start + chunk]
            # matches[q, t]: feature values new user q shares with training tuple t
            matches = (block[:, None, :] == table[None, :, :]).sum(axis=2)
            best = matches.max(axis=1)
            chosen = (matches == best[:, None]) & (best[:, None] > 0)
            weight = chosen * weights[None, :]
            total = weight.sum(axis=1)
            found = total > 0
            if found.any():
                mean = (weight[found] @ self.cold_means_.astype(np.float64)) / total[found, None]
                out[start:start + chunk][found] = mean.astype(np.float32)
        return out

    # ------------------------------------------------------------------ I/O
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write ``model.json`` and ``arrays.npz`` (named arrays, no pickle) atomically."""
        self._check_fitted()
        arrays = {
            "user_factors": self.user_factors_,
            "item_factors": self.item_factors_,
            "global_mean": self.global_mean_,
            "cold_codes": self.cold_codes_,
            "cold_means": self.cold_means_,
            "cold_counts": self.cold_counts_,
        }
        if self.item_weight_ is not None:
            arrays["item_weight"] = self.item_weight_
        params = self.get_params()
        if not isinstance(params["item_weights"], str):
            params["item_weights"] = [float(v) for v in params["item_weights"]]
        meta = self._model_json(arrays=ARRAYS_FILE, cold_start={"columns": self.cold_columns_})
        meta["params"] = params
        with atomic_dir(path, overwrite=overwrite) as tmp:
            np.savez(tmp / ARRAYS_FILE, **arrays)
            (tmp / MODEL_FILE).write_text(json.dumps(meta, indent=2, default=json_default) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> WALS:
        """Read a directory written by :meth:`save` (``allow_pickle=False``)."""
        meta = read_model_json(path)
        if meta.get("kind") != cls.kind:
            raise RecompareError(f"{path} holds a '{meta.get('kind')}' model, not '{cls.kind}'")
        try:
            model = cls(**meta["params"])
            with np.load(Path(path) / meta.get("arrays", ARRAYS_FILE),
                         allow_pickle=False) as arrays:
                model.user_factors_ = arrays["user_factors"]
                model.item_factors_ = arrays["item_factors"]
                model.global_mean_ = arrays["global_mean"]
                model.cold_codes_ = arrays["cold_codes"]
                model.cold_means_ = arrays["cold_means"]
                model.cold_counts_ = arrays["cold_counts"]
                model.item_weight_ = arrays.get("item_weight")
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise RecompareError(f"cannot read WALS model {path}: {exc}") from None
        model.cold_columns_ = meta.get("cold_start", {}).get("columns", [])
        model.fingerprint_ = meta["fingerprint"]
        model.n_users_ = int(meta["n_users"])
        model.n_items_ = int(meta["n_items"])
        model.fit_info_ = meta.get("fit_info", {})
        model.seen_ = None
        if model.user_factors_.shape != (model.n_users_, model.factors) or \
                model.item_factors_.shape != (model.n_items_, model.factors):
            raise RecompareError(f"WALS model {path} has factor arrays of the wrong shape")
        return model

    # ---------------------------------------------------------- objective
    def objective(self, dataset) -> float:
        """The training objective ``L`` of the fitted factors on ``dataset.train``."""

        self._check_fitted()
        train = sp.csr_matrix(dataset.train)
        train.sort_indices()
        with _threading(self) as (pool, threads):
            state = _Problem(self, train, self._observed_weights(train), self._targets(train),
                             user_factors=self.user_factors_, item_factors=self.item_factors_,
                             pool=pool, threads=threads)
            return state.objective()


# ====================================================================== solver
class _Block:
    """A block of consecutive user rows: its slice of the CSR buffers, zero-copy."""

    def __init__(self, train: sp.csr_matrix, start: int, stop: int, torch_values):
        import torch

        self.start, self.stop = start, stop
        self.lo, self.hi = int(train.indptr[start]), int(train.indptr[stop])
        # crow needs its own (small) copy: offsets must start at 0
        self.indptr = (train.indptr[start:stop + 1] - train.indptr[start]).astype(
            train.indices.dtype)
        self.indices = train.indices[self.lo:self.hi]
        self.crow = torch.from_numpy(self.indptr)
        self.col = torch.from_numpy(self.indices)
        self.shape = (stop - start, train.shape[1])
        self.pattern = _csr_tensor(self.crow, self.col, torch_values[self.lo:self.hi], self.shape)
        self.counts = torch.from_numpy(np.diff(self.indptr).astype(np.int64))

    def with_values(self, values):
        return _csr_tensor(self.crow, self.col, values, self.shape)


class _Problem:
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
        import torch

        self.model = model
        self.dtype = _torch_dtype(model.dtype)
        self.np_dtype = np.float32 if model.dtype == "float32" else np.float64
        self.w0 = float(model.unobserved_weight)
        self.k = int(model.factors)
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
        # consecutive blocks of about equal entries, one group (and one
        # accumulator of the item side's products) per thread
        n_groups = max(1, threads)
        ends = np.cumsum([b.hi - b.lo for b in self.blocks])
        owner = np.minimum(n_groups - 1, (ends - 1) * n_groups // max(1, int(ends[-1])))
        self.groups = [list(np.flatnonzero(owner == g)) for g in range(n_groups)
                       if (owner == g).any()]
        if user_factors is None:
            rng = np.random.default_rng(model.random_state)
            scale = float(model.init_scale) / math.sqrt(self.k)
            # drawn in float32 whatever the working dtype: same seed, same start
            x = rng.standard_normal((n_users, self.k), dtype=np.float32)
            x *= scale
            y = rng.standard_normal((n_items, self.k), dtype=np.float32)
            y *= scale
            x, y = x.astype(self.np_dtype, copy=False), y.astype(self.np_dtype, copy=False)
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
    def _slice(weight, block: _Block):
        """The block's part of a per-entry array (constants pass through)."""
        return weight if isinstance(weight, float) else weight[block.lo:block.hi]

    @staticmethod
    def _sddmm(block: _Block, left, right):
        """``left_u . right_i`` on the block's observed pattern, shape (block nnz,)."""
        import torch

        return torch.sparse.sampled_addmm(block.pattern, left, right.T, beta=0.0).values()

    # --------------------------------------------------------------- sweeps
    def sweep(self) -> None:
        if self.model.solver == "cg":
            if not self._s_ready:
                self.refresh()
            self._cg_users()
            release_free_memory()
            self._cg_items()
        else:
            self._exact_users()
            release_free_memory()
            self._exact_items()
        release_free_memory()
        self.refresh()

    def refresh(self) -> None:
        """Recompute ``s`` exactly and the observed part of the objective."""
        import torch

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
        import torch

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
        import torch

        Y = self.Y
        steps = int(self.model.cg_steps)
        # the dense part of A p is p @ dense + lambda_u p; a constant lambda folds in
        constant_lam = self.model.reg_scaling == "none"
        dense = (Y.T @ Y) * self.w0
        if constant_lam:
            dense += float(self.model.regularization) * torch.eye(self.k, dtype=self.dtype)
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
        import torch

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
        import torch

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
        x = _exact_rows(self.train, self.Y, gram, self.w, self.t, self.w0,
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
        y = _exact_rows(mat, self.X, gram, w, t, self.w0, self.item_reg.numpy(),
                        pool=self.pool)
        self.Y.copy_(y)


def _rowdot(a, b):
    """Per-row dot products, shape (n_rows,)."""
    import torch

    return torch.linalg.vecdot(a, b, dim=1)


def _safe_div(num, den):
    """``num / den`` where ``den`` is positive, else 0 (converged or empty rows)."""
    import torch

    tiny = torch.finfo(den.dtype).tiny
    return torch.where(den > tiny, num / den.clamp_min(tiny), torch.zeros_like(num))


def _exact_rows(matrix: sp.csr_matrix, fixed, gram, w, t, w0: float, lam: np.ndarray,
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
    import torch

    dtype = fixed.dtype
    n_rows, k = matrix.shape[0], fixed.shape[1]
    out = torch.zeros((n_rows, k), dtype=dtype)
    w_np = w if isinstance(w, float) else _to_numpy(w)
    t_np = t if isinstance(t, float) else _to_numpy(t)
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
        grams = _weighted_grams(indptr, indices, c_blk, fixed)
        wt_vals = np.full(hi - lo, wt_blk) if isinstance(wt_blk, float) else wt_blk
        pattern = _csr_tensor(
            torch.from_numpy(indptr.astype(np.int64)), torch.from_numpy(indices.astype(np.int64)),
            torch.from_numpy(np.ascontiguousarray(wt_vals)).to(dtype),
            (stop - start, matrix.shape[1]))
        rhs = pattern @ fixed
        active = torch.from_numpy(active_np)
        lam_blk = torch.from_numpy(np.asarray(lam[start:stop][active_np], dtype=np.float64))
        a = grams[active]
        a += w0_gram
        a += lam_blk.to(dtype)[:, None, None] * eye
        rhs_a = rhs[active]
        chol, info = torch.linalg.cholesky_ex(a)
        x = torch.cholesky_solve(rhs_a[:, :, None], chol)[:, :, 0]
        # a factorisation can "succeed" on a singular matrix through round-off:
        # a pivot ratio below sqrt(k eps) means a condition number beyond 1/(k eps)
        pivots = torch.diagonal(chol, dim1=1, dim2=2).abs()
        ill = pivots.min(1).values <= pivots.max(1).values * math.sqrt(k * torch.finfo(dtype).eps)
        # without regularization the system may be singular (fewer entries than
        # factors): those rows always take the minimum-norm solution
        unregularized = lam_blk <= 0
        bad = (info != 0) | ill | ~torch.isfinite(x).all(1) | unregularized
        if bad.any():
            # singular or round-off indefinite systems (w0 = 0, lambda = 0, few
            # entries): the minimum-norm least-squares solution
            x[bad] = (torch.linalg.pinv(a[bad], hermitian=True) @ rhs_a[bad][:, :, None])[:, :, 0]
        out[start:stop][active] = x

    starts = range(0, n_rows, block_rows)
    if pool is None:
        for start in starts:
            solve(start)
    else:
        list(pool.map(solve, starts))
    return out


def _weighted_grams(indptr: np.ndarray, indices: np.ndarray, weights, factors,
                    segment: int = 1024, budget: int = 1 << 22):
    """``sum_{c in row} weight_c f_c f_c^T`` per row, tensor of shape (n_rows, k, k).

    Rows are cut into segments of at most ``segment`` entries, segments are
    bucketed by length (powers of two, so padding at most doubles the work) and
    each bucket is one batched matrix product of at most ``budget`` gathered values.
    """
    import torch

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


def _make_blocks(train: sp.csr_matrix, block_nnz: int, values) -> list[_Block]:
    """Consecutive row ranges of about ``block_nnz`` entries each."""
    n_rows = train.shape[0]
    n_blocks = max(1, -(-train.nnz // block_nnz))
    cuts = np.searchsorted(train.indptr, np.linspace(0, train.nnz, n_blocks + 1)[1:-1])
    cuts = np.unique(np.concatenate([[0], np.clip(cuts, 0, n_rows), [n_rows]]))
    return [_Block(train, int(a), int(b), values) for a, b in pairwise(cuts)
            if b > a]


try:  # scipy's compressed-column kernel, accumulating in place (GIL released)
    from scipy.sparse._sparsetools import csc_matvecs as _sparsetools_csc_matvecs
except ImportError:  # pragma: no cover - private API moved: use the public path
    _sparsetools_csc_matvecs = None


def _csc_matvecs(block: _Block, vals: np.ndarray, Xn: np.ndarray, acc: np.ndarray) -> None:
    """``acc += block^T(vals) @ X[block rows]``, accumulating in place."""
    if block.hi == block.lo:
        return
    x = Xn[block.start:block.stop]
    n_items, k = acc.shape
    if _sparsetools_csc_matvecs is not None:
        _sparsetools_csc_matvecs(n_items, block.stop - block.start, k, block.indptr,
                                 block.indices, vals, x.ravel(), acc.ravel())
    else:  # pragma: no cover
        part = sp.csr_matrix((vals, block.indices, block.indptr), shape=block.shape)
        acc += part.T @ x


# ================================================================== utilities
@contextlib.contextmanager
def _threading(model: WALS) -> Iterator[tuple[ThreadPoolExecutor | None, int]]:
    """Coarse-grained parallelism for the CG solver (see :class:`_Problem`).

    torch runs single-threaded inside, a pool of ``threads`` Python threads
    shares the blocks of rows.
    """
    import torch

    previous = torch.get_num_threads()
    threads = int(model.threads) or previous
    pool = None
    try:
        torch.set_num_threads(1)
        if threads > 1:
            # glibc gives each new thread its own malloc arena, which keeps the
            # temporaries freed there (measured: +60 MB on a 2M-entry matrix);
            # one shared arena while the pool lives keeps the peak at its minimum
            _malloc_arenas(1)
            pool = ThreadPoolExecutor(threads)
        yield pool, threads
    finally:
        if pool is not None:
            pool.shutdown()
            _malloc_arenas(8 * (os.cpu_count() or 1))  # glibc's default limit
        torch.set_num_threads(previous)


def _malloc_arenas(limit: int) -> None:
    """Best-effort ``mallopt(M_ARENA_MAX, limit)``; a no-op outside glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, int(limit))  # -8 = M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _csr_tensor(crow, col, values, shape):
    """A torch CSR tensor on existing buffers (no copy, no invariant check)."""
    import torch

    with warnings.catch_warnings():
        # torch flags sparse CSR as beta on every construction
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size=shape, check_invariants=False)


def _torch_dtype(name: str):
    import torch

    return torch.float32 if name == "float32" else torch.float64


def _mul(a, b):
    return a * b


def _sub(a, b):
    return a - b


def _as_weight(value, np_dtype):
    """A python float for constant weights, else a torch tensor in the working dtype."""
    import torch

    if isinstance(value, (float, int, np.floating)):
        return float(value)
    return torch.from_numpy(np.ascontiguousarray(value, dtype=np_dtype))


def _to_numpy(value) -> np.ndarray:
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


def _validation_users(validation: sp.csr_matrix, seed: int, limit: int = 5000) -> np.ndarray:
    users = np.flatnonzero(np.diff(validation.indptr) > 0)
    if len(users) > limit:
        rng = np.random.default_rng(seed)
        users = np.sort(rng.choice(users, limit, replace=False))
    return users


def _recall_at_k(user_factors: np.ndarray, item_factors: np.ndarray, train: sp.csr_matrix,
                 validation: sp.csr_matrix, users: np.ndarray, k: int) -> float:
    """Mean of hits / min(k, |relevant|) over ``users`` (training items excluded)."""
    from .topk import topk_dot

    k = min(k, item_factors.shape[0])
    ids, _ = topk_dot(user_factors[users], item_factors, k, exclude=train[users])
    relevant = validation[users]
    hits = np.asarray(relevant[np.arange(len(users))[:, None], ids].sum(axis=1)).ravel()
    sizes = np.minimum(k, np.diff(relevant.indptr))
    return float(np.mean(hits / np.maximum(sizes, 1)))


def _feature_codes(series: pd.Series, spec: dict) -> np.ndarray:
    """Integer codes of one feature column under a fitted spec; -1 never matches."""
    if spec["kind"] == "numeric":
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
        codes = np.searchsorted(np.asarray(spec["edges"], dtype=np.float64), values,
                                side="right").astype(np.int64)
        codes[~np.isfinite(values)] = -1
        return codes
    lookup = {v: j for j, v in enumerate(spec["values"])}
    return np.fromiter((lookup.get(v, -1) for v in series.astype(str)), dtype=np.int64,
                       count=len(series))


def _n_new(history, features) -> int:
    if history is None and features is None:
        raise RecompareError("embed_new_users needs a history matrix or a features frame")
    if history is not None and features is not None and history.shape[0] != len(features):
        raise RecompareError(
            f"history has {history.shape[0]} rows but features {len(features)} rows")
    return history.shape[0] if history is not None else len(features)


