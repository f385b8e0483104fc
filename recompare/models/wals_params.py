"""WALS hyperparameters: the allowed values, their checks, and the per-item weights.

Plain functions over an estimator's stored parameters (numpy only), kept apart from
:mod:`recompare.models.wals` so that the estimator module reads as the fit loop.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from ..errors import RecompareError

if TYPE_CHECKING:
    from .wals import WALS

SOLVERS = ("cg", "cholesky")
WEIGHTINGS = ("constant", "linear", "log")
REG_SCALINGS = ("none", "frequency", "observed")
TARGETS = ("binary", "values")
ITEM_WEIGHTINGS = ("none", "inverse_frequency", "inverse_sqrt_frequency")
DTYPES = ("float32", "float64")


def validate(model: WALS) -> None:
    """Check every hyperparameter of ``model``; raises :class:`RecompareError`."""

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

    positive_int("dim", model.dim)
    positive_int("iterations", model.iterations)
    positive_int("cg_steps", model.cg_steps)
    positive_int("validation_k", model.validation_k)
    positive_int("block_nnz", model.block_nnz)
    if model.patience is not None:
        positive_int("patience", model.patience)
    non_negative("unobserved_weight", model.unobserved_weight)
    for name in ("regularization", "reg_exponent"):  # None: the scaling's default
        if getattr(model, name) is not None:
            non_negative(name, getattr(model, name))
    non_negative("alpha", model.alpha)
    non_negative("init_scale", model.init_scale)
    if not isinstance(model.threads, (int, np.integer)) or model.threads < 0:
        raise RecompareError(f"threads must be an integer >= 0, got {model.threads!r}")
    if not isinstance(model.epsilon, (int, float)) or not model.epsilon > 0:
        raise RecompareError(f"epsilon must be > 0, got {model.epsilon!r}")
    choice("solver", model.solver, SOLVERS)
    choice("weighting", model.weighting, WEIGHTINGS)
    choice("reg_scaling", model.reg_scaling, REG_SCALINGS)
    choice("targets", model.targets, TARGETS)
    choice("dtype", model.dtype, DTYPES)
    if isinstance(model.item_weights, str):
        choice("item_weights", model.item_weights, ITEM_WEIGHTINGS)


def item_weight_vector(spec: str | Sequence[float], train: sp.csr_matrix) -> np.ndarray | None:
    """The per-item weights ``v_i`` for ``item_weights=spec``: shape (n_items,), or None
    when all are 1."""
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
