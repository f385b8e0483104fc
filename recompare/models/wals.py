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
* ``lambda_u = lambda`` (``reg_scaling="none"``),
  ``lambda (n_u + w0 n_items) ** nu`` (``"frequency"``, Rendle et al. 2022) or
  ``lambda n_u ** nu`` (``"observed"``: with ``nu = 1`` Spark MLlib's scaling, see
  :mod:`recompare.models.wals_spark`), with ``n_u`` the user's number of
  observed items; items alike.

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

Layout: this module is the estimator (hyperparameters, weights, fit loop, fold-in, I/O)
and imports neither torch nor the solvers at import time; :mod:`.wals_solver` holds the
training state and both half-sweeps, :mod:`.wals_exact` the exact row solves, and
:mod:`.wals_cold` the cold-start feature model.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._atomic import atomic_dir
from .._io import ArraySpec, own_file, refuse
from .._jsonutil import json_default
from ..errors import RecompareError
from .base import (
    ARRAYS_FILE,
    MODEL_FILE,
    Callback,
    FactorModel,
    n_new_users,
    read_model_arrays,
    read_saved_model,
)
from .wals_cold import ColdStart, check_columns, cold_embeddings, fit_cold_start
from .wals_params import item_weight_vector, validate

if TYPE_CHECKING:
    from .wals_solver import Problem

#: (lambda, nu) per ``reg_scaling`` when ``regularization`` / ``reg_exponent`` are None.
#: frequency: chosen on validation carves of four data sets (docs/wals.md, issue 9);
#: none and observed keep the earlier lambda, observed Spark's nu = 1.
REG_DEFAULTS = {"frequency": (0.3, 0.5), "none": (0.01, 1.0), "observed": (0.01, 1.0)}
#: model.json keys of WALS beyond the common ones ("arrays": written by older versions)
_SAVED_KEYS = {"cold_start": dict, "arrays": str}
#: arrays.npz of WALS, shapes in named dimensions (see :func:`read_model_arrays`)
_ARRAY_SPECS = {
    "user_factors": ArraySpec("f", ("n_users", "dim")),
    "item_factors": ArraySpec("f", ("n_items", "dim")),
    "global_mean": ArraySpec("f", ("dim",)),
    "cold_codes": ArraySpec("iu", ("n_tuples", "n_columns")),
    "cold_means": ArraySpec("f", ("n_tuples", "dim")),
    "cold_counts": ArraySpec("iu", ("n_tuples",)),
    "item_weight": ArraySpec("f", ("n_items",), required=False),
}


class WALS(FactorModel):
    """Weighted ALS matrix factorization (see the module docstring for the maths).

    Parameters
    ----------
    dim : int
        Embedding dimension ``k``.
    unobserved_weight : float
        ``w0`` >= 0, the weight of every unobserved pair, relative to observed
        weights near 1.  0 fits observed entries only (prone to folding).
    regularization : float or None
        ``lambda`` >= 0; None: the scaling's default (:data:`REG_DEFAULTS`: 0.3 with
        ``frequency``, 0.01 with ``none`` and ``observed``).
    reg_scaling : {"none", "frequency", "observed"}
        Constant ``lambda``, ``lambda (n_u + w0 n) ** reg_exponent`` or
        ``lambda n_u ** reg_exponent`` per row (``n_u``: the row's observed entries).
    reg_exponent : float or None
        ``nu`` of the frequency and observed scalings; None: the scaling's default (0.5
        with ``frequency``, 1 with ``observed``: Spark's scaling).
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
        CPU threads (0 = torch's current thread count).  torch's own setting is restored
        after every call; more threads than CPUs warns once.
    dtype : {"float32", "float64"}
    patience : int or None
        With a validation matrix passed to :meth:`fit`, stop after this many
        sweeps without a better validation recall and keep the best factors;
        None (the default) never stops early.
    validation_k : int
        The ``k`` of the validation recall (``recall_norm@k`` of
        :func:`recompare.evaluate.metrics.accuracy`).
    block_nnz : int
        Observed entries per block of rows; bounds the temporaries.
    """

    kind = "wals"
    protocols = frozenset({"weak", "strong", "cold"})

    def __init__(
        self,
        dim: int = 128,
        unobserved_weight: float = 0.1,
        regularization: float | None = None,
        reg_scaling: str = "frequency",
        reg_exponent: float | None = None,
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
        self.dim = dim
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

    # ------------------------------------------------------------- weights
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

    def penalty(self) -> tuple[float, float]:
        """``(lambda, nu)`` in effect: the parameters, or where they are None the
        defaults of ``reg_scaling`` (:data:`REG_DEFAULTS`)."""
        lam, nu = REG_DEFAULTS.get(self.reg_scaling, (0.0, 1.0))
        if self.regularization is not None:
            lam = self.regularization
        if self.reg_exponent is not None:
            nu = self.reg_exponent
        return float(lam), float(nu)

    def resolved_params(self) -> dict:
        """:meth:`get_params` with the penalty's None parameters replaced by the values in
        effect (the same model, written out: how ``tune`` records the defaults)."""
        lam, nu = self.penalty()
        return {**self.get_params(), "regularization": lam, "reg_exponent": nu}

    def _row_regularization(self, counts: np.ndarray, n_other: int) -> np.ndarray:
        lam, nu = self.penalty()
        if self.reg_scaling == "none":
            return np.full(len(counts), lam)
        base = counts.astype(np.float64)
        if self.reg_scaling == "frequency":
            base = base + float(self.unobserved_weight) * n_other
        return lam * base ** nu

    # ----------------------------------------------------------------- fit
    def check(self, dataset) -> None:
        """Validate hyperparameters and training data without fitting (clear errors)."""
        validate(self)
        train = dataset.train
        if train is None or train.nnz == 0:
            raise RecompareError("the training matrix is empty: nothing to fit")
        if not np.isfinite(train.data).all():
            raise RecompareError("training values contain NaN or infinity")
        self.item_weight_ = item_weight_vector(self.item_weights, train)
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
            split = dataset.split
            carved = split is not None and split.options.get("kind") == "validation"
            if split is not None and not carved and any(validation is part for part in
                                         (split.test, split.foldin, split.heldout)):
                raise RecompareError(
                    "the validation matrix is the data set's own test part: selecting on "
                    "test is not allowed; carve one with recompare.data.validation_split")
            validation = sp.csr_matrix(validation)
            if validation.shape != train.shape:
                raise RecompareError(
                    f"validation matrix shape {validation.shape} differs from the training "
                    f"matrix {train.shape}")
        w_obs = self._observed_weights(train)
        t_obs = self._targets(train)

        from .wals_solver import Problem, parallel

        with parallel(self.threads) as (pool, threads):
            state = Problem(self, train, w_obs, t_obs, pool=pool, threads=threads)
            history = self._alternate(state, callback, validation)

        self._remember(dataset)
        self.fit_info_ = history
        # what the returned factors were chosen on (early stopping on a validation matrix)
        self.fit_info_["selected_on"] = ("validation" if "best_iteration" in history
                                         else "none")
        self._set_cold_start(fit_cold_start(dataset.user_features, self.user_factors_,
                                            np.diff(train.indptr) > 0))
        return self

    def _alternate(self, state: Problem, callback: Callback | None,
                   validation: sp.csr_matrix | None) -> dict:
        """The sweeps, with validation recall and early stopping; returns ``fit_info_``."""
        start = time.perf_counter()
        info: dict = {"objective": [], "seconds_per_iteration": [], "solver": self.solver}
        best = (-1.0, 0, None)  # recall, sweep, factors
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
                recall = validation_recall(state.user_factors(), state.item_factors(),
                                           state.original, validation, val_users,
                                           self.validation_k)
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
        mean of all training users when nothing matches or no features are given
        (see :mod:`.wals_cold`).

        Parameters
        ----------
        history : sparse matrix of shape (n_new, n_items) or None
        features : DataFrame with n_new rows, or None

        Returns
        -------
        ndarray of shape (n_new, k)
        """
        self._check_fitted()
        n_new = n_new_users(history, features)
        out = np.empty((n_new, self.user_factors_.shape[1]), dtype=np.float32)
        has_history = np.zeros(n_new, dtype=bool)
        if history is not None:
            history = self._checked_history(history)
            has_history = np.diff(history.indptr) > 0
        if has_history.any():
            out[has_history] = self._fold_in(history[has_history])
        cold = ~has_history
        if cold.any():
            out[cold] = cold_embeddings(self._cold_start(), features, np.flatnonzero(cold))
        return out

    def _checked_history(self, history: sp.spmatrix) -> sp.csr_matrix:
        history = sp.csr_matrix(history, copy=True)
        if history.shape[1] != self.n_items_:
            raise RecompareError(
                f"history has {history.shape[1]} item columns, the model {self.n_items_}")
        if history.nnz and not np.isfinite(history.data).all():
            raise RecompareError("history values contain NaN or infinity")
        history.sum_duplicates()
        history.sort_indices()
        return history

    def _fold_in(self, rows: sp.csr_matrix) -> np.ndarray:
        """One exact user solve per row (every row has interactions), float32 (n_rows, k)."""
        import torch

        from .wals_exact import exact_rows, torch_dtype
        from .wals_solver import parallel

        items = torch.from_numpy(self.item_factors_).to(torch_dtype(self.dtype))
        lam = self._row_regularization(np.diff(rows.indptr), self.n_items_)
        with parallel(self.threads) as (pool, _):
            x = exact_rows(rows, items, items.T @ items, self._observed_weights(rows),
                           self._targets(rows), float(self.unobserved_weight), lam, pool=pool)
        return x.to(torch.float32).numpy()

    # -------------------------------------------------------- cold start
    def _set_cold_start(self, table: ColdStart) -> None:
        self.global_mean_ = table.global_mean
        self.cold_columns_ = table.columns
        self.cold_codes_ = table.codes
        self.cold_means_ = table.means
        self.cold_counts_ = table.counts

    def _cold_start(self) -> ColdStart:
        return ColdStart(self.global_mean_, self.cold_columns_, self.cold_codes_,
                         self.cold_means_, self.cold_counts_)

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
        meta = self._model_json(cold_start={"columns": self.cold_columns_})
        meta["params"] = params
        with atomic_dir(path, overwrite=overwrite) as tmp:
            np.savez(tmp / ARRAYS_FILE, **arrays)
            (tmp / MODEL_FILE).write_text(json.dumps(meta, indent=2, default=json_default) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> WALS:
        """Read a directory written by :meth:`save` through the guarded readers.

        The file names are fixed by the format; a ``"arrays"`` key that older versions
        wrote in ``model.json`` is accepted only when it names ``arrays.npz``.
        """
        model, meta = read_saved_model(cls, path, keys=_SAVED_KEYS, renamed={"factors": "dim"})
        file = own_file(path, MODEL_FILE)
        if meta.get("arrays", ARRAYS_FILE) != ARRAYS_FILE:
            raise refuse(file, "model description", f"'arrays' must be '{ARRAYS_FILE}' (file "
                         "names are fixed by the format, never read from model.json)")
        model.cold_columns_ = check_columns(meta.get("cold_start", {"columns": []}), file)
        dims = {"n_users": model.n_users_, "n_items": model.n_items_, "dim": model.dim,
                "n_columns": len(model.cold_columns_)}
        arrays = read_model_arrays(path, _ARRAY_SPECS, dims)
        model.user_factors_ = arrays["user_factors"]
        model.item_factors_ = arrays["item_factors"]
        model.global_mean_ = arrays["global_mean"]
        model.cold_codes_ = arrays["cold_codes"]
        model.cold_means_ = arrays["cold_means"]
        model.cold_counts_ = arrays["cold_counts"]
        model.item_weight_ = arrays.get("item_weight")
        return model

    # ---------------------------------------------------------- objective
    def objective(self, dataset) -> float:
        """The training objective ``L`` of the fitted factors on ``dataset.train``."""

        self._check_fitted()
        train = sp.csr_matrix(dataset.train)
        train.sort_indices()
        from .wals_solver import Problem, parallel

        with parallel(self.threads) as (pool, threads):
            state = Problem(self, train, self._observed_weights(train), self._targets(train),
                             user_factors=self.user_factors_, item_factors=self.item_factors_,
                             pool=pool, threads=threads)
            return state.objective()


def _validation_users(validation: sp.csr_matrix, seed: int, limit: int = 5000) -> np.ndarray:
    """Users with validation entries, at most ``limit`` of them (a seeded sample)."""
    users = np.flatnonzero(np.diff(validation.indptr) > 0)
    if len(users) > limit:
        rng = np.random.default_rng(seed)
        users = np.sort(rng.choice(users, limit, replace=False))
    return users


def validation_recall(user_factors: np.ndarray, item_factors: np.ndarray,
                      train: sp.csr_matrix, validation: sp.csr_matrix, users: np.ndarray,
                      k: int) -> float:
    """The validation recall of :meth:`WALS.fit`: ``recall_norm@k`` over ``users``.

    Hits over ``min(k, |relevant|)``, training items excluded, as computed by
    :func:`recompare.evaluate.metrics.accuracy` (the one implementation of the metrics).
    """
    from ..evaluate.metrics import accuracy
    from .topk import topk_dot

    k = min(k, item_factors.shape[0])
    ids, scores = topk_dot(user_factors[users], item_factors, k, exclude=train[users])
    result = accuracy(ids, validation[users], [k], valid=np.isfinite(scores))
    return result["metrics"][f"recall_norm@{k}"]
